"""Retries on the local cluster: each failure class (Permanent, Transient, Internal, Disruption, Stalled) and the
manual retry, proven from both sides: the TranscodeJob's status.attemptHistory and the batch Job's status.failed,
which shows whether the attempt spent the Job's backoffLimit (podFailurePolicy FailJob / Count / Ignore).

Transient, Internal and Stalled attempts come from the test-only fault injection (the chart is installed with
faultInjection=true): the worker reads the transkube.dev/fault-injection annotations of its TranscodeJob.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import (
    ANNOTATION_FAULT_ATTEMPTS,
    ANNOTATION_FAULT_INJECTION,
    LABEL_FAILURE_CATEGORY,
)
from transkube_dev.kube import ApiError, Kube, Obj

from .conftest import job_condition, tj_path, wait_for
from .test_transcodejob import (
    BUCKET,
    condition,
    get_tj,
    jobs_of,
    media,
    pods_of,
    slow_output,
    tj,
    upload,
    wait_phase,
)

__all__ = ["media"]  # the session fixture, shared with test_transcodejob

DONE = ("Succeeded", "Failed")


def faulty(body: Obj, fault: str, attempts: int | None = None) -> Obj:
    """body with the fault-injection annotations: `fault` while fewer than `attempts` attempts have finished."""
    annotations = {ANNOTATION_FAULT_INJECTION: fault}
    if attempts is not None:
        annotations[ANNOTATION_FAULT_ATTEMPTS] = str(attempts)
    body["metadata"]["annotations"] = annotations
    return body


def the_job(kube: Kube, ns: str, name: str, job_name: str | None = None) -> Obj:
    """The batch Job named job_name (default: the TranscodeJob's own name, round 0)."""
    want = job_name or name
    (job,) = [j for j in jobs_of(kube, ns, name) if j["metadata"]["name"] == want]
    return job


def failed_count(job: Obj) -> int:
    """The Job's status.failed: the failures that spent its backoffLimit (absent means none)."""
    return int((job.get("status") or {}).get("failed") or 0)


def history(obj: Obj) -> list[Obj]:
    return list((obj.get("status") or {}).get("attemptHistory") or [])


def tj_events(kube: Kube, ns: str, name: str) -> list[tuple[str, str]]:
    """(type, reason) of the Events posted on the TranscodeJob (not on its same-named Job)."""
    items = kube.get(f"/api/v1/namespaces/{ns}/events",
                     fieldSelector=f"involvedObject.name={name},involvedObject.kind=TranscodeJob")["items"]
    return [(e["type"], e["reason"]) for e in items]


def follow(kube: Kube, ns: str, name: str, timeout: float = 300) -> tuple[Obj, list[tuple[Any, ...]]]:
    """Polls the TranscodeJob until it is Succeeded or Failed; returns it and the distinct (phase, reason,
    Stalled condition status/reason) states seen on the way, for assertion messages and best-effort checks."""
    seen: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = get_tj(kube, ns, name)
        status = obj.get("status") or {}
        stalled = condition(obj, "Stalled") or {}
        state = (status.get("phase"), status.get("reason"), stalled.get("status"), stalled.get("reason"),
                 status.get("nextAttemptTime"))
        if not seen or seen[-1] != state:
            seen.append(state)
        if status.get("phase") in DONE:
            return obj, seen
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {name} to finish; states seen: {seen}")


# ---- Permanent: bad input fails the Job at once (podFailurePolicy FailJob), nothing is retried -------------

def test_permanent_failure_is_not_retried_and_is_listed_as_bad_input(kube: Kube, tj_namespace: str) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("missing", f"s3://{BUCKET}/missing/{uuid.uuid4().hex}.mp4", retryLimit=3))
    # A control that never fails: the selectors below must leave it out.
    kube.create(tj_path(ns), tj("control", f"s3://{BUCKET}/missing/control.mp4", suspend=True))
    obj = wait_phase(kube, ns, "missing", DONE)
    status = obj["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InputNotFound", status
    assert status["attempts"] == 1
    assert status["failureCategory"] == "BadInput"
    (entry,) = history(obj)
    assert entry["failureClass"] == "Permanent" and entry["counted"] is False, entry
    assert entry["exitCode"] == 11 and entry["reason"] == "InputNotFound", entry

    job = the_job(kube, ns, "missing")
    assert failed_count(job) == 1, "bad input must fail the Job on its first pod"
    assert job_condition(job, "Failed")["reason"] == "PodFailurePolicy"  # type: ignore[index]

    # The dead-letter view: a label and a selectable status field, as kubectl would list them.
    wait_for("failure-category label", lambda: (get_tj(kube, ns, "missing")["metadata"].get("labels") or {})
             .get(LABEL_FAILURE_CATEGORY) == "BadInput")
    by_label = kube.get(tj_path(ns), labelSelector=f"{LABEL_FAILURE_CATEGORY}=BadInput")["items"]
    assert [o["metadata"]["name"] for o in by_label] == ["missing"]
    by_phase = kube.get(tj_path(ns), fieldSelector="status.phase=Failed")["items"]
    assert [o["metadata"]["name"] for o in by_phase] == ["missing"]
    by_category = kube.get(tj_path(ns), fieldSelector="status.failureCategory=BadInput")["items"]
    assert [o["metadata"]["name"] for o in by_category] == ["missing"]


# ---- Transient: counted against retryLimit, retried after the backoff --------------------------------------

def test_transient_failure_is_counted_and_retried(kube: Kube, tj_namespace: str, s3: Any,
                                                  media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), faulty(tj("flaky", upload(s3, media["short"])), "exit-transient", attempts=1))
    obj, seen = follow(kube, ns, "flaky")
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status, seen)
    assert status["attempts"] == 2
    first, second = history(obj)
    assert first["exitCode"] == 20 and first["reason"] == "TransientError", first
    assert first["failureClass"] == "Transient" and first["counted"] is True, first
    assert first["finishTime"]
    assert second["exitCode"] == 0 and second["reason"] == "Succeeded" and "failureClass" not in second, second
    assert [e["attempt"] for e in (first, second)] == [1, 2]
    job = the_job(kube, ns, "flaky")
    assert failed_count(job) == 1, "a transient failure spends one retry"
    assert job_condition(job, "Complete")
    assert "nextAttemptTime" not in status and "failureCategory" not in status
    assert ("Warning", "Retrying") in wait_for("Retrying event", lambda: tj_events(kube, ns, "flaky"))


# ---- Internal: counted; once retryLimit is spent the job fails -------------------------------------------

def test_internal_failures_exhaust_retry_limit(kube: Kube, tj_namespace: str, s3: Any,
                                               media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), faulty(tj("broken", upload(s3, media["short"]), retryLimit=1), "exit-internal"))
    obj, seen = follow(kube, ns, "broken")
    status = obj["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InternalError", (status, seen)
    assert status["failureCategory"] == "Internal"
    assert status["attempts"] == 2
    entries = history(obj)
    assert len(entries) == 2, entries
    for entry in entries:
        assert entry["failureClass"] == "Internal" and entry["counted"] is True, entry
        assert entry["exitCode"] == 30 and entry["reason"] == "InternalError", entry
    job = the_job(kube, ns, "broken")
    assert failed_count(job) == 2, "retryLimit 1: both attempts counted"
    assert job_condition(job, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    wait_for("failure-category label", lambda: (get_tj(kube, ns, "broken")["metadata"].get("labels") or {})
             .get(LABEL_FAILURE_CATEGORY) == "Internal")


# ---- Disruption: an eviction is not the job's fault (podFailurePolicy Ignore) -----------------------------

def test_evicted_attempt_is_not_counted(kube: Kube, tj_namespace: str, s3: Any,
                                        media: dict[str, Path]) -> None:
    ns = tj_namespace
    kube.create(tj_path(ns), tj("evicted", upload(s3, media["long"]), slow_output(uuid.uuid4().hex),
                                retryLimit=0))
    # Transcoding means the worker runs ffmpeg and handles SIGTERM.
    wait_for("transcoding", lambda: ((get_tj(kube, ns, "evicted").get("status") or {}).get("progress") or {})
             .get("stage") == "Transcoding", timeout=120)
    (pod,) = [p for p in pods_of(kube, ns, "evicted") if p["status"].get("phase") == "Running"]
    pod_name = pod["metadata"]["name"]
    kube.create(f"/api/v1/namespaces/{ns}/pods/{pod_name}/eviction",
                {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod_name, "namespace": ns}})
    # retryLimit 0: had the eviction been counted, the Job would have failed.
    obj, seen = follow(kube, ns, "evicted", timeout=360)
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status, seen, history(obj))
    assert status["attempts"] == 2
    evicted, final = history(obj)
    assert evicted["pod"] == pod_name
    assert evicted["failureClass"] == "Disruption" and evicted["counted"] is False, evicted
    assert final["exitCode"] == 0 and final["reason"] == "Succeeded", final
    job = the_job(kube, ns, "evicted")
    assert failed_count(job) == 0, "an eviction must not spend a retry"
    assert job_condition(job, "Complete")


# ---- Stalled: the watchdog kills an attempt that makes no progress; counted, retried ----------------------

def test_stalled_attempt_is_killed_and_retried(kube: Kube, tj_namespace: str, s3: Any,
                                               media: dict[str, Path]) -> None:
    ns = tj_namespace
    body = tj("frozen", upload(s3, media["long"]), slow_output(uuid.uuid4().hex), stallTimeoutSeconds=10)
    kube.create(tj_path(ns), faulty(body, "stall", attempts=1))
    obj, seen = follow(kube, ns, "frozen", timeout=360)
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status, seen, history(obj))
    assert status["attempts"] == 2
    stalled, final = history(obj)
    assert stalled["failureClass"] == "Stalled" and stalled["counted"] is True, stalled
    assert stalled["reason"] == "Stalled" and stalled["finishTime"], stalled
    assert final["exitCode"] == 0 and final["reason"] == "Succeeded", final
    job = the_job(kube, ns, "frozen")
    assert failed_count(job) == 1, "a stalled attempt spends one retry"
    assert ("Warning", "Stalled") in wait_for("Stalled event", lambda: tj_events(kube, ns, "frozen"))
    # Best effort (the window between the kill and the next attempt is short): when the poll caught the
    # Stalled condition between attempts, it said NoProgress.
    between = [s for s in seen if s[0] == "Pending" and s[2] == "True"]
    assert all(s[3] == "NoProgress" for s in between), seen


# ---- Manual retry: a Failed job runs again under a new Job; the history stays ------------------------------

def test_manual_retry_of_a_failed_job(kube: Kube, tj_namespace: str, s3: Any,
                                      media: dict[str, Path]) -> None:
    ns = tj_namespace
    key = f"inputs/{uuid.uuid4().hex}/late.mp4"
    kube.create(tj_path(ns), tj("late", f"s3://{BUCKET}/{key}"))
    obj = wait_phase(kube, ns, "late", DONE)
    assert obj["status"]["phase"] == "Failed" and obj["status"]["reason"] == "InputNotFound", obj["status"]
    wait_for("failure-category label", lambda: (get_tj(kube, ns, "late")["metadata"].get("labels") or {})
             .get(LABEL_FAILURE_CATEGORY) == "BadInput")

    # Fix the cause (the input appears at that very URI), then ask for a retry.
    s3.upload_file(str(media["short"]), BUCKET, key)
    kube.merge_patch(tj_path(ns, "late"), {"spec": {"manualRetry": 1}})
    # The operator takes the retry up (the phase leaves Failed in the same status write); then it runs.
    wait_for("retry taken up", lambda: (get_tj(kube, ns, "late").get("status") or {}).get("manualRetries") == 1)
    obj, seen = follow(kube, ns, "late")
    status = obj["status"]
    assert status["phase"] == "Succeeded", (status, seen, history(obj))
    assert status["manualRetries"] == 1
    assert status["jobName"] == "late-r1"
    assert "failureCategory" not in status and "reason" not in status, status
    assert LABEL_FAILURE_CATEGORY not in (obj["metadata"].get("labels") or {})
    failed, retried = history(obj)
    assert failed["round"] == 0 and failed["failureClass"] == "Permanent" and failed["reason"] == "InputNotFound"
    assert retried["round"] == 1 and retried["exitCode"] == 0 and retried["reason"] == "Succeeded", retried
    assert retried["attempt"] == 2
    # The round-0 Job goes; the one left is the retry's.
    wait_for("only the retry's Job", lambda: [j["metadata"]["name"] for j in jobs_of(kube, ns, "late")]
             == ["late-r1"], timeout=60)
    assert job_condition(the_job(kube, ns, "late", "late-r1"), "Complete")
    assert ("Normal", "ManualRetry") in wait_for("ManualRetry event", lambda: tj_events(kube, ns, "late"))

    # manualRetry only goes up.
    with pytest.raises(ApiError) as err:
        kube.merge_patch(tj_path(ns, "late"), {"spec": {"manualRetry": 0}})
    assert err.value.status == 422
    assert "manualRetry" in err.value.body and "cannot decrease" in err.value.body, err.value.body
