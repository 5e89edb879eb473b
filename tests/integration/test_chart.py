"""The Helm chart installed into the local cluster runs the operator and the shim from its own commands;
a job submitted through the installed shim succeeds."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transkube_dev.cluster import ClusterState
from transkube_dev.kube import Kube, Obj

from .conftest import InstalledOperator, chart_tenant_input, create_if_absent, storage_secret, tj_path, wait_for


def shim(op: InstalledOperator, method: str, path: str, body: Obj | None = None) -> tuple[int, Obj]:
    req = urllib.request.Request(f"http://127.0.0.1:{op.shim_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-API-Key": op.shim_api_key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (loopback)
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except urllib.error.URLError:
        return 0, {}  # not listening yet (the pod just started)


def test_installed_shim_serves_a_real_job(operator: InstalledOperator, kube: Kube, cluster: ClusterState,
                                          s3: Any, tmp_path: Path, kubectl: Callable[..., Any]) -> None:
    assert cluster.s3 is not None
    pods = kube.get(f"/api/v1/namespaces/{operator.namespace}/pods",
                    labelSelector="app.kubernetes.io/component=shim")["items"]
    assert pods and pods[0]["spec"]["containers"][0]["command"] == ["transkube-shim", "serve"]
    wait_for("installed shim ready", lambda: shim(operator, "GET", "/readyz")[0] == 200, timeout=60)

    ns = operator.shim_tenant
    key = chart_tenant_input(kube, cluster, s3, ns, tmp_path / "clip.mp4", "chart")
    spec = {"input": {"uri": f"s3://{cluster.s3.bucket}/{key}"},
            "outputs": [{"name": "small", "uri": f"s3://{cluster.s3.bucket}/{key}.out.mp4", "container": "mp4",
                         "video": {"codec": "h264", "height": 120}, "audio": {"codec": "none"}}]}
    status, created = shim(operator, "POST", "/api/v1/jobs", spec)
    assert status == 201, created
    name = created["name"]

    def finished() -> Obj | None:
        code, job = shim(operator, "GET", f"/api/v1/jobs/{name}")
        phase = (job.get("status") or {}).get("phase")
        return job if code == 200 and phase in ("Succeeded", "Failed") else None

    job = wait_for("job through the installed shim", finished, timeout=180)
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert kubectl("get", "tj", name, "-n", ns, "-o", "jsonpath={.status.phase}").stdout == "Succeeded"


def test_helm_test_submits_a_job_that_succeeds(operator: InstalledOperator, kube: Kube, cluster: ClusterState,
                                               helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """`helm test` runs templates/tests/submit-job.yaml: the pod makes a clip, uploads it and submits a job in the
    release namespace, which needs the worker's default storage Secret (also the test's upload credentials)."""
    assert cluster.s3 is not None
    create_if_absent(kube, f"/api/v1/namespaces/{operator.namespace}/secrets", storage_secret(cluster))
    result = helm("test", "transkube", "-n", operator.namespace, "--timeout", "5m", "--logs", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TEST SUITE:     transkube-test-submit-job" in result.stdout, result.stdout
    # The pod's log (--logs) ends with the job it submitted; the job is real and Succeeded.
    names = re.findall(r"^(helm-test-[0-9a-f]+) Succeeded$", result.stdout, re.MULTILINE)
    assert names, result.stdout
    job = kube.get(tj_path(operator.namespace, names[-1]))
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert [o["name"] for o in job["status"]["outputs"]] == ["small"]
    pod = kube.get(f"/api/v1/namespaces/{operator.namespace}/pods/transkube-test-submit-job")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["serviceAccountName"] == "transkube-test"
