"""The docs' commands, run: README.md's and docs/*.md's ```sh blocks (hack/transkube_dev/doccmds.py says which,
and which not and why) and `make demo`, on a fresh local cluster of their own.

A cluster of their own: the blocks install and upgrade the chart with the docs' values, create the shim's
Secrets and the `media` namespace as a first user would, which would clobber the session cluster's test
install (conftest.py's `operator` fixture) that other tests share. Here nothing needs restoring.

How the blocks run (doccmds.READER_SETTINGS has the variables):
- per file, README.md first, each file's blocks in order as one `bash -euo pipefail` script, from a scratch
  directory that links the repository's top-level entries (so `./charts/transkube`, `examples/...` and `make`
  work, and what the commands write, clip.mp4, ./out, stays out of the checkout); docs/*.md run after README in
  the same directory, so README's clip.mp4 is there;
- the environment a reader would have after `eval "$(make -s env)"` for this cluster, plus REGISTRY, SHIM,
  SHIM_HOST and, for docs/*.md, KEY: an API key of tenant `media` the test adds to the key Secret README made;
- a copy of the kubeconfig per file (`kubectl config set-context` in one doc does not leak into the next);
- `helm` is wrapped to append the chart's three ports (operator liveness and metrics, shim) as free ports:
  the dev node agent runs pods on the host's network, where the chart's fixed defaults could be taken;
- the namespace `monitoring` exists (Prometheus' namespace, which operations.md's commands expect).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from transkube_dev import doccmds, procs, tools
from transkube_dev.cluster import ClusterState, LocalCluster
from transkube_dev.kube import ApiError, Kube
from transkube_shim.auth import new_key, secret_entry

ROOT = Path(__file__).resolve().parents[2]
NOT_LINKED = {".git", ".local", ".pytest_cache", ".mypy_cache", ".ruff_cache", "out", "clip.mp4"}
SCRIPT_TIMEOUT = 900
CONSOLE_SCRIPTS = Path(sys.executable).parent  # transkube, transkube-shim, kubectl-transcode


@pytest.fixture(scope="module")
def docs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    local = LocalCluster(tmp_path_factory.mktemp("docs-cluster"))
    state = local.up()
    try:
        yield state
    finally:
        local.down()


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that points at another cluster or store."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "TRANSKUBE_", "KUBECONFIG", "CLUSTER_DIR", "SHIM", "KEY"))}


def test_make_demo(docs_cluster: ClusterState) -> None:
    """README's first command, on a running cluster (demo.sh reuses it): chart, sample, live progress, ffprobe."""
    started = time.monotonic()
    env = clean_env() | {"CLUSTER_DIR": docs_cluster.dir, "TRANSKUBE_DEMO_SECONDS": "4"}  # a short sample
    result = subprocess.run(["make", "demo"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=SCRIPT_TIMEOUT, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "reusing the cluster" in out and "Succeeded" in out, out[-4000:]
    for name in ("web-720p", "webm-480p"):
        assert f"output {name}: s3://transkube/outputs/sample/" in out, out[-4000:]
    assert out.count("ffprobe: ") == 2, out[-4000:]
    print(f"make demo: {time.monotonic() - started:.1f} s")


def scratch_dir(base: Path) -> Path:
    work = base / "work"
    work.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in NOT_LINKED:
            (work / entry.name).symlink_to(entry)
    return work


def helm_wrapper(bin_dir: Path, real_helm: Path, ports: dict[str, int]) -> None:
    values = bin_dir / "local-ports.yaml"
    values.write_text(f"operator: {{replicas: 1, livenessPort: {ports['liveness']}, metricsPort: {ports['metrics']}}}\n"
                      f"shim: {{port: {ports['shim']}}}\n")
    wrapper = bin_dir / "helm"
    wrapper.write_text("#!/usr/bin/env bash\n"
                       "# Free ports and one operator replica: pods share the host's network on the dev node agent.\n"
                       'case " $* " in\n'
                       f'  *" upgrade "*|*" install "*) exec {real_helm} "$@" -f {values} ;;\n'
                       "esac\n"
                       f'exec {real_helm} "$@"\n')
    wrapper.chmod(0o755)


def add_media_key(kube: Kube) -> str:
    """An API key of tenant `media`, added to the key Secret README's commands created."""
    _, key = new_key()
    key_id, entry = secret_entry(key, "media", "standard")
    path = "/api/v1/namespaces/transkube-system/secrets/transkube-shim-api-keys"
    patch = {"data": {key_id: base64.b64encode(entry.encode()).decode()}}
    try:
        kube.merge_patch(path, patch)
    except ApiError as exc:
        if exc.status != 404:
            raise
        kube.create("/api/v1/namespaces/transkube-system/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "transkube-shim-api-keys"}, **patch})
    return key


def shim_accepts(url: str, key: str) -> bool:
    try:
        return requests.get(f"{url}/api/v1/jobs", headers={"X-API-Key": key}, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def run_doc(path: str, script: str, cwd: Path, env: dict[str, str], log: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=SCRIPT_TIMEOUT, check=False)
    return result.returncode, log.read_text(), time.monotonic() - started


def test_docs_commands_run(docs_cluster: ClusterState, tmp_path: Path) -> None:
    state = docs_cluster
    assert state.s3 is not None
    kube = Kube.from_kubeconfig(state.kubeconfig)
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "monitoring"}})
    except ApiError as exc:
        if exc.status != 409:
            raise
    kubectl, helm = tools.ensure_kubectl_helm()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ports = {"liveness": procs.free_port(), "metrics": procs.free_port(), "shim": procs.free_port()}
    helm_wrapper(bin_dir, Path(helm), ports)
    work = scratch_dir(tmp_path)
    shim_url = f"http://127.0.0.1:{ports['shim']}"
    env = clean_env() | state.env() | {
        "PATH": os.pathsep.join([str(bin_dir), str(CONSOLE_SCRIPTS), str(Path(kubectl).parent),
                                 os.environ.get("PATH", "")]),
        "REGISTRY": "ghcr.io/acme", "SHIM": shim_url, "SHIM_HOST": "transcode.example.com"}
    env.pop("TRANSKUBE_CLUSTER_DIR", None)

    blocks = doccmds.all_blocks(ROOT)
    files = list(dict.fromkeys(b.path for b in doccmds.runnable(blocks)))
    assert files[0] == "README.md"
    failures: list[str] = []
    timings: dict[str, float] = {}
    for path in files:
        file_env = dict(env)
        kubeconfig = tmp_path / f"kubeconfig-{path.replace('/', '_')}"
        shutil.copy(state.kubeconfig, kubeconfig)
        file_env["KUBECONFIG"] = str(kubeconfig)
        if path != "README.md":
            key = add_media_key(kube)
            deadline = time.monotonic() + 60  # the shim re-reads its key Secret when it sees an unknown key
            while not shim_accepts(shim_url, key) and time.monotonic() < deadline:
                time.sleep(1)
            file_env["KEY"] = key
        code, output, seconds = run_doc(path, doccmds.script([b for b in doccmds.runnable(blocks) if b.path == path]),
                                        work, file_env, tmp_path / f"{path.replace('/', '_')}.log")
        timings[path] = round(seconds, 1)
        if code != 0:
            failures.append(f"== {path}: exit {code}\n{output[-6000:]}")
    print(f"docs commands, seconds per file: {timings}")
    assert not failures, "\n\n".join(failures)
