"""The real local cluster (etcd, kube-apiserver, controller manager, scheduler, node agent) and MinIO,
started once per test session and torn down after it.

Set TRANSKUBE_CLUSTER_DIR to a directory where `python -m transkube_dev up --dir DIR` already runs a
cluster to reuse it (fast inner loop); otherwise a fresh one is started in a temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from transkube_dev import tools
from transkube_dev.cluster import ClusterState, LocalCluster
from transkube_dev.kube import ApiError, Kube, Obj


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    reuse = os.environ.get("TRANSKUBE_CLUSTER_DIR")
    if reuse:
        yield ClusterState.load(Path(reuse))
        return
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    state = local.up()
    try:
        yield state
    finally:
        local.down()


@pytest.fixture(scope="session")
def kube(cluster: ClusterState) -> Kube:
    return Kube.from_kubeconfig(cluster.kubeconfig)


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterState) -> Callable[..., subprocess.CompletedProcess[str]]:
    binary, _ = tools.ensure_kubectl_helm()

    def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), f"--kubeconfig={cluster.kubeconfig}", *args], check=check,
                              capture_output=True, text=True, input=input, timeout=120)

    return run


@pytest.fixture(scope="session")
def s3(cluster: ClusterState) -> Any:
    assert cluster.s3 is not None
    return boto3.client("s3", endpoint_url=cluster.s3.endpoint, aws_access_key_id=cluster.s3.access_key,
                        aws_secret_access_key=cluster.s3.secret_key, region_name=cluster.s3.region)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Polls check() until it returns something truthy; the cluster is real, so things take a moment."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (ApiError, KeyError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else ""))


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists), deleted after."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for("default ServiceAccount", lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"))
    yield name
    try:
        kube.delete(f"/api/v1/namespaces/{name}")
    except ApiError as e:
        if e.status != 404:
            raise


def job_condition(job: Obj, kind: str) -> Obj | None:
    for cond in job.get("status", {}).get("conditions", []) or []:
        if cond["type"] == kind and cond["status"] == "True":
            return dict(cond)
    return None


def create_if_absent(kube: Kube, collection: str, body: Obj) -> None:
    """Creates body in collection; an existing object of that name is fine (a reused cluster, a rerun)."""
    try:
        kube.create(collection, body)
    except ApiError as e:
        if e.status != 409:
            raise


def storage_secret(cluster: ClusterState, name: str = "transkube-storage") -> Obj:
    """A Secret with the local S3 server's credentials, keyed the way workers and the shim read them."""
    assert cluster.s3 is not None
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": cluster.s3.access_key, "AWS_SECRET_ACCESS_KEY": cluster.s3.secret_key}}


# ---- the product, installed into the local cluster ------------------------------------------------

GROUP, VERSION, PLURAL = "media.transkube.dev", "v1alpha1", "transcodejobs"
OPERATOR_NS = "transkube-system"


def chart_tenant_input(kube: Kube, cluster: ClusterState, s3: Any, tenant: str, clip: Path, folder: str,
                       size: str = "320x240", seconds: int = 2) -> str:
    """The chart shim's tenant namespace (Pod Security "restricted", with the default storage Secret), and an
    h264 test clip uploaded under the tenant's own prefix, where the shim lets it read; returns the object key."""
    assert cluster.s3 is not None
    create_if_absent(kube, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": tenant, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    create_if_absent(kube, f"/api/v1/namespaces/{tenant}/secrets", storage_secret(cluster))
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                    str(clip)], check=True, timeout=60)
    key = f"{tenant}/{folder}/{uuid.uuid4().hex}/{clip.name}"
    s3.upload_file(str(clip), cluster.s3.bucket, key)
    return key


@pytest.fixture(scope="session")
def helm(cluster: ClusterState) -> Callable[..., subprocess.CompletedProcess[str]]:
    _, binary = tools.ensure_kubectl_helm()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(binary), f"--kubeconfig={cluster.kubeconfig}", *args], check=check,
                              capture_output=True, text=True, timeout=300)

    return run


TEST_POOLS = {"cpu": {"capacity": 16, "accelerator": "cpu"}, "gpu": {"capacity": 1, "accelerator": "nvidia"},
              "serial": {"capacity": 1, "accelerator": "cpu"},
              "chaos": {"capacity": 4, "accelerator": "cpu"}}  # test_leader.py: jobs while the leader is killed
QUOTA_NAMESPACE = "tk-quota"
TEST_QUOTAS = {QUOTA_NAMESPACE: {"maxConcurrent": 1, "maxQueued": 1, "maxPerDay": 3}}
# Storage confinement (test_storage_scope.py): two namespaces, each confined to its own prefix of the test
# bucket plus a shared read-only one; every other namespace stays unconfined (the chart's default).
SCOPE_NAMESPACES = ("tk-scope-a", "tk-scope-b")
SHARED_PREFIX = "s3://transkube/tk-scope-shared/"
TEST_SCOPES = {ns: {"prefixes": [f"s3://transkube/{ns}/"], "readOnlyPrefixes": [SHARED_PREFIX]}
               for ns in SCOPE_NAMESPACES}


@dataclass(frozen=True)
class InstalledOperator:
    namespace: str
    liveness_port: int
    metrics_port: int
    shim_port: int
    shim_api_key: str
    shim_tenant: str


@pytest.fixture(scope="session")
def operator(cluster: ClusterState, helm: Callable[..., Any], kube: Kube) -> InstalledOperator:
    """Installs the Helm chart (CRDs, RBAC, operator Deployment); the node agent runs the operator pod."""
    from transkube_dev import procs
    from transkube_shim.auth import new_key, secret_entry

    assert cluster.s3 is not None
    _, api_key = new_key()
    installed = InstalledOperator(OPERATOR_NS, procs.free_port(), procs.free_port(), procs.free_port(), api_key,
                                  "chart-tenant")
    # The shim's storage credentials and API keys live in its namespace; both exist before its pod starts.
    create_if_absent(kube, "/api/v1/namespaces",
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NS}})
    key_id, entry = secret_entry(api_key, installed.shim_tenant, "premium")
    secrets = f"/api/v1/namespaces/{OPERATOR_NS}/secrets"
    create_if_absent(kube, secrets, storage_secret(cluster, "transkube-shim-storage"))
    create_if_absent(kube, secrets, {"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": "transkube-shim-api-keys"}, "stringData": {key_id: entry}})
    # A reused cluster has the Secret from an earlier session: this session's key must be in it.
    kube.merge_patch(f"{secrets}/transkube-shim-api-keys", {"stringData": {key_id: entry}})
    chart = Path(__file__).resolve().parents[2] / "charts" / "transkube"
    # Helm installs crds/ only on a first install; apply them so a reused cluster gets today's CRDs too.
    from transkube_dev import tools as dev_tools

    kubectl_bin, _ = dev_tools.ensure_kubectl_helm()
    subprocess.run([str(kubectl_bin), f"--kubeconfig={cluster.kubeconfig}", "apply", "--server-side",
                    "--force-conflicts", "-f", str(chart / "crds")], check=True, capture_output=True, timeout=60)
    helm("upgrade", "--install", "transkube", str(chart), "--namespace", OPERATOR_NS, "--create-namespace",
         "--set", f"storage.endpoint={cluster.s3.endpoint}",
         # One operator replica: the dev node agent runs pods on the host's network, where replicas would share
         # ports. test_leader.py scales to two to test leader election.
         "--set", "operator.replicas=1",
         "--set", f"operator.livenessPort={installed.liveness_port}",
         "--set", f"operator.metricsPort={installed.metrics_port}",
         "--set", f"shim.port={installed.shim_port}", "--set", "shim.storageSecret=transkube-shim-storage",
         # The dev node agent runs pods as host processes: a second shim replica would collide on shim.port.
         "--set", "shim.replicas=1",
         "--set-json", "worker.progressIntervalSeconds=0.5", "--set", "worker.terminationGracePeriodSeconds=10",
         # Scheduling for tests: room for the suites' parallel jobs in cpu, a one-slot "serial" pool for
         # ordering tests, a quota namespace, no aging (order must be exact), short retry and webhook delays.
         "--set-json", f"scheduling.pools={json.dumps(TEST_POOLS)}",
         "--set-json", f"scheduling.quotas={json.dumps(TEST_QUOTAS)}",
         "--set-json", f"storageScope.namespaces={json.dumps(TEST_SCOPES)}",
         "--set", "scheduling.agingSeconds=0",
         "--set-json", "retries.backoffSeconds=[2]",
         "--set-json", "webhooks.retrySchedule=[0,1,2,3,600]",
         "--set-json", 'webhooks.allowedCidrs=["127.0.0.0/8"]', "--set", "webhooks.allowHttp=true",
         "--set", "faultInjection=true",
         "--wait", "--timeout", "120s")
    wait_for("operator pod running", lambda: any(
        p["status"].get("phase") == "Running" for p in kube.get(
            f"/api/v1/namespaces/{OPERATOR_NS}/pods", labelSelector="app.kubernetes.io/component=operator")["items"]))
    return installed


@pytest.fixture
def tj_namespace(namespace: str, kube: Kube, cluster: ClusterState, operator: InstalledOperator) -> str:
    """A namespace that enforces Pod Security "restricted" and holds the default storage Secret."""
    assert cluster.s3 is not None
    kube.merge_patch(f"/api/v1/namespaces/{namespace}",
                     {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    kube.create(f"/api/v1/namespaces/{namespace}/secrets", storage_secret(cluster))
    return namespace


def tj_path(namespace: str, name: str = "") -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    return f"{base}/{name}" if name else base


def phase_of(kube: Kube, namespace: str, name: str) -> str | None:
    return (kube.get(tj_path(namespace, name)).get("status") or {}).get("phase")
