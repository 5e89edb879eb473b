"""The admission queue on the local cluster: priorities and FIFO under a one-slot pool, pools that keep GPU and
CPU work apart, namespace quotas that refuse with a condition, and retention of finished TranscodeJobs.

The chart is installed (conftest) with the pools cpu (16), gpu (1) and serial (1, cpu), no aging, and quotas for
the namespace tk-quota: maxConcurrent 1, maxQueued 1, maxPerDay 3.
"""

from __future__ import annotations

import itertools
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import ANNOTATION_FAULT_ATTEMPTS, ANNOTATION_FAULT_INJECTION, LABEL_FAILURE_CATEGORY
from transkube_dev.kube import ApiError, Kube, Obj

from .conftest import (
    QUOTA_NAMESPACE,
    ClusterState,
    InstalledOperator,
    storage_secret,
    tj_path,
    wait_for,
)
from .test_transcodejob import condition, events_of, jobs_of, media, tj, upload, wait_phase

__all__ = ["media"]  # the session fixture, shared with test_transcodejob


def blocker(s3: Any, clip: Path, name: str = "blocker", **spec: Any) -> Obj:
    """A job that holds its pool slot until cancelled: the worker stalls mid-transcode (fault injection), and
    the stall timeout is far away."""
    obj = tj(name, upload(s3, clip), stallTimeoutSeconds=3600, **spec)
    obj["metadata"]["annotations"] = {ANNOTATION_FAULT_INJECTION: "stall", ANNOTATION_FAULT_ATTEMPTS: "1"}
    return obj


def status_of(kube: Kube, ns: str, name: str) -> Obj:
    return dict(kube.get(tj_path(ns, name)).get("status") or {})


def queue_of(kube: Kube, ns: str, name: str) -> Obj:
    return dict(status_of(kube, ns, name).get("queue") or {})


def test_twenty_jobs_run_by_priority_then_fifo_in_a_one_slot_pool(kube: Kube, tj_namespace: str, s3: Any,
                                                                   media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), blocker(s3, media["long"], pool="serial"))
    wait_for("blocker admitted", lambda: queue_of(kube, ns, "blocker").get("admittedTime"), timeout=60)
    short = upload(s3, media["short"])
    priorities = [0, 10, -5, 10, 0, 50, -50, 0, 10, -5, 0, 20, 0, -5, 10, 0, 20, -50, 0, 5]
    names = [f"j{i:02d}" for i in range(len(priorities))]
    for name, priority in zip(names, priorities, strict=True):
        kube.create(tj_path(ns), tj(name, short, pool="serial", priority=priority,
                                    outputs=[{"name": "o", "uri": f"s3://transkube/sched/{ns}/{name}.mp4",
                                              "container": "mp4", "video": {"codec": "h264", "crf": 35,
                                                                            "preset": "ultrafast", "width": 160,
                                                                            "height": 90},
                                              "audio": {"codec": "aac"}}]))
        # FIFO is by enqueue time: let the operator enqueue each before the next arrives.
        wait_for(f"{name} enqueued", lambda n=name: queue_of(kube, ns, n).get("enqueuedTime"), timeout=30)  # type: ignore[misc]
    # Priority first, then arrival order.
    expected = [n for n, _ in sorted(zip(names, priorities, strict=True), key=lambda x: -x[1])]

    def positions() -> dict[str, int | None]:
        return {n: queue_of(kube, ns, n).get("position") for n in names}

    wait_for("every job has its place", lambda: list(positions().values()) != [None] * 20
             and sorted(p for p in positions().values() if p) == list(range(1, 21)), timeout=60)
    assert sorted(names, key=lambda n: positions()[n] or 0) == expected
    first = status_of(kube, ns, expected[0])
    assert first["phase"] == "Queued" and first["reason"] == "PoolCapacity"
    assert condition(kube.get(tj_path(ns, expected[0])), "Reconciling")["status"] == "True"  # type: ignore[index]
    # Held Jobs exist, suspended, labelled with their pool (what Kueue would key on).
    (held,) = jobs_of(kube, ns, expected[0])
    assert held["spec"]["suspend"] is True and held["metadata"]["labels"]["transkube.dev/pool"] == "serial"

    kube.merge_patch(tj_path(ns, "blocker"), {"spec": {"cancel": True}})
    for name in names:
        obj = wait_phase(kube, ns, name, ("Succeeded", "Failed"), timeout=600)
        assert obj["status"]["phase"] == "Succeeded", obj["status"]
    admitted = {n: status_of(kube, ns, n)["queue"]["admittedTime"] for n in names}
    assert sorted(names, key=lambda n: admitted[n]) == expected
    # One slot: nothing was admitted before its predecessor finished.
    for before, after in itertools.pairwise(expected):
        assert admitted[after][:19] >= status_of(kube, ns, before)["completionTime"][:19]
    assert "Admitted" in events_of(kube, ns, expected[0])


def test_pools_keep_gpu_and_cpu_jobs_apart(kube: Kube, tj_namespace: str, s3: Any,
                                           media: dict[str, Path]) -> None:
    ns = tj_namespace
    short = upload(s3, media["short"])
    # The one GPU slot is held; a second GPU job queues in the gpu pool while CPU jobs run meanwhile. (This
    # machine has no GPU, so GPU attempts fail as TransientError; gpu-a keeps its slot through long backoffs.)
    kube.create(tj_path(ns), tj("gpu-a", short, accelerator={"type": "nvidia"}, retryLimit=10,
                                retryBackoffSeconds=[600]))
    wait_for("gpu-a admitted", lambda: queue_of(kube, ns, "gpu-a").get("admittedTime"), timeout=60)
    kube.create(tj_path(ns), tj("gpu-b", short, accelerator={"type": "nvidia"}))
    wait_for("gpu-b queued", lambda: queue_of(kube, ns, "gpu-b").get("reason") == "PoolCapacity", timeout=60)
    assert queue_of(kube, ns, "gpu-b")["pool"] == "gpu"
    for name in ("cpu-a", "cpu-b"):
        kube.create(tj_path(ns), tj(name, short))
    for name in ("cpu-a", "cpu-b"):
        obj = wait_phase(kube, ns, name, ("Succeeded", "Failed"), timeout=240)
        assert obj["status"]["phase"] == "Succeeded" and obj["status"]["queue"]["pool"] == "cpu"
    assert status_of(kube, ns, "gpu-b")["phase"] == "Queued"  # CPU capacity never lent to GPU work
    kube.merge_patch(tj_path(ns, "gpu-a"), {"spec": {"cancel": True}})
    wait_for("gpu-b admitted once the slot is free", lambda: queue_of(kube, ns, "gpu-b").get("admittedTime"),
             timeout=60)
    history = wait_for("gpu-b attempted", lambda: status_of(kube, ns, "gpu-b").get("attemptHistory"), timeout=120)
    assert history[0]["node"] == "transkube-gpu-0"
    kube.merge_patch(tj_path(ns, "gpu-b"), {"spec": {"cancel": True}})

    # A pool that does not exist, or one of the other accelerator, is a configuration error on the job.
    kube.create(tj_path(ns), tj("nowhere", short, pool="nope"))
    kube.create(tj_path(ns), tj("mismatch", short, pool="serial", accelerator={"type": "nvidia"}))
    nowhere = wait_phase(kube, ns, "nowhere", ("Failed",), timeout=60)["status"]
    assert nowhere["reason"] == "PoolNotFound" and "nope" in nowhere["message"]
    assert nowhere["failureCategory"] == "Config"
    mismatch = wait_phase(kube, ns, "mismatch", ("Failed",), timeout=60)["status"]
    assert mismatch["reason"] == "PoolMismatch" and jobs_of(kube, ns, "mismatch") == []


@pytest.fixture
def quota_namespace(kube: Kube, cluster: ClusterState, operator: InstalledOperator) -> Any:
    """The namespace the chart gives quotas (a fixed name), fresh: earlier runs' jobs would count today."""
    path = f"/api/v1/namespaces/{QUOTA_NAMESPACE}"

    def gone() -> bool:
        try:
            kube.get(path)
        except ApiError as e:
            return e.status == 404
        return False

    if not gone():
        kube.delete(path)
        wait_for("old quota namespace gone", gone, timeout=180)
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": QUOTA_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    wait_for("default ServiceAccount", lambda: kube.get(f"{path}/serviceaccounts")["items"], timeout=60)
    kube.create(f"{path}/secrets", storage_secret(cluster))
    yield QUOTA_NAMESPACE
    kube.delete(path)


def test_namespace_quota_queues_then_refuses_with_a_condition(kube: Kube, quota_namespace: str, s3: Any,
                                                              media: dict[str, Path],
                                                              operator: InstalledOperator) -> None:
    ns = quota_namespace
    short = upload(s3, media["short"])
    kube.create(tj_path(ns), blocker(s3, media["long"], name="a"))
    wait_for("a admitted", lambda: queue_of(kube, ns, "a").get("admittedTime"), timeout=60)
    kube.create(tj_path(ns), tj("b", short))
    # maxConcurrent 1: b waits although the cpu pool has room.
    wait_for("b waits for its namespace", lambda: queue_of(kube, ns, "b").get("reason") == "NamespaceConcurrency",
             timeout=60)
    kube.create(tj_path(ns), tj("c", short))
    # maxQueued 1: c is refused, not left waiting.
    c = wait_phase(kube, ns, "c", ("Failed",), timeout=60)
    assert c["status"]["reason"] == "QuotaExceeded" and "maxQueued" in c["status"]["message"]
    assert c["status"]["failureCategory"] == "Quota"
    ready = condition(c, "Ready")
    assert ready and ready["status"] == "False" and ready["reason"] == "QuotaExceeded"
    wait_for("label", lambda: kube.get(tj_path(ns, "c"))["metadata"].get("labels", {}).get(
        LABEL_FAILURE_CATEGORY) == "Quota", timeout=30)
    assert "QuotaExceeded" in events_of(kube, ns, "c") or "Failed" in events_of(kube, ns, "c")
    assert jobs_of(kube, ns, "c") == []  # nothing left half-done

    kube.merge_patch(tj_path(ns, "a"), {"spec": {"cancel": True}})
    assert wait_phase(kube, ns, "b", ("Succeeded", "Failed"), timeout=240)["status"]["phase"] == "Succeeded"
    # maxPerDay 3: a, b and d count (the refused c does not); e is the fourth today.
    kube.create(tj_path(ns), tj("d", short))
    assert wait_phase(kube, ns, "d", ("Succeeded", "Failed"), timeout=240)["status"]["phase"] == "Succeeded"
    kube.create(tj_path(ns), tj("e", short))
    e = wait_phase(kube, ns, "e", ("Failed",), timeout=60)["status"]
    assert e["reason"] == "QuotaExceeded" and "maxPerDay" in e["message"]

    # The dead-letter view: selectable by label and by field, counted in metrics.
    by_label = kube.get(tj_path(ns), labelSelector=f"{LABEL_FAILURE_CATEGORY}=Quota")["items"]
    by_field = kube.get(tj_path(ns), fieldSelector="status.phase=Failed,status.failureCategory=Quota")["items"]
    assert {o["metadata"]["name"] for o in by_label} == {o["metadata"]["name"] for o in by_field} == {"c", "e"}

    def refused_metric() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith('transkube_failed_transcodejobs{category="Quota"}'):
                return float(line.split()[-1])
        return 0.0

    wait_for("dead letters counted", lambda: refused_metric() >= 2, timeout=30)


def test_finished_jobs_are_deleted_after_their_ttl(kube: Kube, tj_namespace: str, s3: Any,
                                                    media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("brief", upload(s3, media["short"]), ttlSecondsAfterFinished=3))
    finished_at = time.monotonic()
    wait_phase(kube, ns, "brief", ("Succeeded",), timeout=240)

    def gone() -> bool:
        try:
            kube.get(tj_path(ns, "brief"))
        except ApiError as e:
            return e.status == 404
        return False

    wait_for("TranscodeJob deleted by retention", gone, timeout=120)
    assert time.monotonic() - finished_at >= 3
    wait_for("its Job garbage-collected", lambda: jobs_of(kube, ns, "brief") == [], timeout=120)
