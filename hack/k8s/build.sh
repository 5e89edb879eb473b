#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd (the release k8s.io/kubernetes
# itself requires) from the Go modules pinned in hack/k8s/go.mod, fetched through the Go module proxy,
# into a cache outside the repo. A second run with the same pin is a no-op. Prints the bin directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '($1=="k8s.io/kubernetes" || $2=="k8s.io/kubernetes") && $0 ~ / v1\./ {for (i=1;i<=NF;i++) if ($i ~ /^v1\./) {print $i; exit}}' "$here/go.mod")"
[ -n "$version" ] || { echo "no k8s.io/kubernetes pin in $here/go.mod" >&2; exit 1; }
pin="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
cache="${TRANSKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/transkube}"
out="$cache/k8s/$version-$pin/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler etcd)
declare -A pkgs=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [etcd]=go.etcd.io/etcd/server/v3
)

have_all() { for t in "${tools[@]}"; do [ -x "$out/$t" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi

mkdir -p "$out.tmp"
minor="${version#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
cd "$here"
start=$(date +%s)
for t in "${tools[@]}"; do
  echo "building $t $version ..." >&2
  CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" -o "$out.tmp/$t" "${pkgs[$t]}" >&2
done
rm -rf "$out" && mv "$out.tmp" "$out"
echo "built ${tools[*]} in $(( $(date +%s) - start ))s" >&2
echo "$out"
