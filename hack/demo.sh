#!/usr/bin/env bash
# `make demo`: start the local cluster and S3 (or reuse the running one), install the chart (CRDs,
# RBAC, operator), make and upload a sample video, apply a TranscodeJob, follow its progress, and print
# where the outputs are with an ffprobe summary. `make down` tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CLUSTER_DIR:-.local/cluster}"
dev() { PYTHONPATH=hack .venv/bin/python -m transkube_dev "$@"; }

if [ -f "$dir/state.json" ]; then
  echo "== reusing the cluster in $dir"
else
  echo "== starting the local cluster in $dir (the first run builds Kubernetes from source: several minutes)"
  dev up --dir "$dir" >/dev/null
fi
PYTHONPATH=hack .venv/bin/python -m transkube_dev.demo "$dir"
echo
echo "Use the cluster:  eval \"\$(make -s env)\"; kubectl get tj -A   (kubectl: $(dev tools 2>/dev/null | sed -n 's/^kubectl=//p'))"
echo "Stop everything:  make down"
