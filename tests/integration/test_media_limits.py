"""limits.maxInputBytes on the local cluster: the chart's value reaches the workers through the operator, and an
input over it fails the job with InputTooLarge (permanent: one pod, no retry) before it is downloaded.

The test changes the installed release (helm upgrade --reuse-values) and always puts the value back, waiting for
the operator pod each time, so the other tests of the session see the release as the `operator` fixture left it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transkube_dev.kube import Kube, Obj

from .conftest import InstalledOperator, wait_for
from .media_fixtures import ffmpeg, out_prefix, run_job, transcodejob, upload

LIMIT = 100_000
SELECTOR = "app.kubernetes.io/component=operator"
CHART = Path(__file__).resolve().parents[2] / "charts" / "transkube"


def operator_pods(kube: Kube, namespace: str) -> list[Obj]:
    return list(kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=SELECTOR)["items"])


def env_of(pod: Obj, name: str) -> str | None:
    container = pod["spec"]["containers"][0]
    return next((e.get("value") for e in container.get("env") or [] if e["name"] == name), None)


def set_max_input_bytes(helm: Callable[..., Any], kube: Kube, namespace: str, value: int) -> None:
    """helm upgrade the installed release with only limits.maxInputBytes changed, then wait until the one
    operator pod (the Deployment rolls it) runs with that value and leads (holds the leader Lease)."""
    helm("upgrade", "transkube", str(CHART), "--namespace", namespace, "--reuse-values",
         "--set", f"limits.maxInputBytes={value}", "--wait", "--timeout", "120s")

    def ready() -> bool:
        pods = operator_pods(kube, namespace)
        lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/transkube-operator")
        leader = str((lease.get("spec") or {}).get("holderIdentity") or "")
        return len(pods) == 1 and all(
            "deletionTimestamp" not in p["metadata"] and p["status"].get("phase") == "Running"
            and env_of(p, "TRANSKUBE_MAX_INPUT_BYTES") == str(value)
            and leader.startswith(p["metadata"]["name"] + "_") for p in pods)

    wait_for(f"the operator pod running with maxInputBytes={value}", ready, timeout=120)


def test_an_input_over_max_input_bytes_fails_without_retry(kube: Kube, helm: Callable[..., Any],
                                                           operator: InstalledOperator, tj_namespace: str, s3: Any,
                                                           tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "2", "-c:v", "libx264", "-preset",
           "ultrafast", "-b:v", "2M", str(big))
    size = big.stat().st_size
    assert size > LIMIT, size
    uri = upload(s3, big)
    set_max_input_bytes(helm, kube, operator.namespace, LIMIT)
    try:
        body = transcodejob("too-large", uri, [
            {"name": "o", "uri": out_prefix() + "o.mp4", "container": "mp4", "video": {"codec": "h264"}}])
        body["spec"]["retryLimit"] = 2  # a transient failure would be retried; this one must not be
        obj = run_job(kube, tj_namespace, body)
        status = obj["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "InputTooLarge"), status
        assert str(size) in status["message"] and str(LIMIT) in status["message"], status
        assert status["attempts"] == 1, status
        pods = kube.get(f"/api/v1/namespaces/{tj_namespace}/pods",
                        labelSelector="transkube.dev/transcodejob=too-large")["items"]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    finally:
        set_max_input_bytes(helm, kube, operator.namespace, 0)
