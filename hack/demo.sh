#!/usr/bin/env bash
# `make demo`: start the local cluster and S3 (or reuse the running one), run a smoke Job through the
# real Job controller, and show nodes, jobs and pods. `make down` tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CLUSTER_DIR:-.local/cluster}"
dev() { PYTHONPATH=hack .venv/bin/python -m transkube_dev "$@"; }

if [ -f "$dir/state.json" ]; then
  echo "== reusing the cluster in $dir"
else
  echo "== starting the local cluster in $dir (first run builds Kubernetes from source: several minutes)"
  dev up --dir "$dir" >/dev/null
fi
eval "$(dev env --dir "$dir")"
kubectl="$(dev tools | sed -n 's/^kubectl=//p')"

echo "== submitting a smoke Job"
"$kubectl" delete job smoke --ignore-not-found --wait=true >/dev/null
"$kubectl" create job smoke --image=debian:bookworm-slim -- sh -c 'echo "hello from $(hostname), ffmpeg $(ffmpeg -version | head -1 | cut -d" " -f3)"'
"$kubectl" wait --for=condition=Complete job/smoke --timeout=120s
"$kubectl" logs job/smoke
echo
"$kubectl" get nodes,jobs,pods -o wide
echo
echo "S3: $AWS_ENDPOINT_URL_S3 bucket $TRANSKUBE_S3_BUCKET"
echo "Use it:   eval \"\$(make -s env)\"   then kubectl --kubeconfig \$KUBECONFIG ..."
echo "Stop it:  make down"
