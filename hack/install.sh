#!/usr/bin/env bash
# Installs everything the demo and the tests need, idempotently: Debian packages, the Python venv
# with the project and its dev extras, and the cached Go-built/extracted binaries (hack/transkube_dev/tools.py).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_need=()
command -v ffmpeg >/dev/null || apt_need+=(ffmpeg)
command -v unshare >/dev/null || apt_need+=(util-linux)
command -v mount >/dev/null || apt_need+=(mount)
command -v make >/dev/null || apt_need+=(make)
# The docs' commands (tests/integration/test_docs.py) use curl and jq, as a reader would.
command -v curl >/dev/null || apt_need+=(curl)
command -v jq >/dev/null || apt_need+=(jq)
if [ ${#apt_need[@]} -gt 0 ]; then
  echo "[install] apt-get install ${apt_need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "[install] Go >= 1.25 is required to build the local control plane" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Editable installs map top-level packages found at install time: reinstall when that set changes too.
stamp=".venv/.installed-$( (cat pyproject.toml; ls -d operator/*/ worker_image/*/ api_shim/*/) | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[install] pip install -e .[dev]" >&2
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

PYTHONPATH=hack .venv/bin/python -m transkube_dev tools >/dev/null
# kubeconform for the manifest checks (tests/unit/test_kubeconform.py); the cluster itself does not need it.
PYTHONPATH=hack .venv/bin/python -c 'from transkube_dev import tools; tools.ensure_kubeconform()'
