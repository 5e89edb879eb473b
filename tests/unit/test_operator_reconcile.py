"""The operator's decisions, without a cluster: Job manifests and reconcile plans from object states."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from transkube_api.constants import ExitCode
from transkube_api.models import TranscodeJobSpec
from transkube_operator import conditions
from transkube_operator.config import OperatorConfig, Scheduling
from transkube_operator.jobspec import Owner, build_job, job_name, worker_rbac
from transkube_operator.reconcile import CreateJob, DeleteJob, DeletePod, SetJobSuspend, plan

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.UTC)
CFG = OperatorConfig(s3_endpoint="http://127.0.0.1:9000")
SPEC: dict[str, Any] = {
    "input": {"uri": "s3://media/in.mp4"},
    "outputs": [{"name": "web", "uri": "s3://media/out.mp4", "container": "mp4",
                 "video": {"codec": "h264", "resolution": "720p"}}],
}


ADMITTED = {"pool": "cpu", "priority": 0, "enqueuedTime": "2026-11-21T11:00:00Z",
            "admittedTime": "2026-11-21T11:00:01Z"}


def tj(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, generation: int = 1,
       admitted: bool = True) -> dict[str, Any]:
    """A TranscodeJob; admitted by the queue unless told otherwise (most tests are about what follows)."""
    return {"metadata": {"name": "movie", "namespace": "media", "uid": "uid-1", "generation": generation,
                         "creationTimestamp": "2026-11-21T11:00:00Z"},
            "spec": {**SPEC, **(spec or {})},
            "status": {**({"queue": dict(ADMITTED)} if admitted else {}), **(status or {})}}


def job(name: str = "movie", *, conditions_: list[dict[str, Any]] | None = None, suspend: bool = False,
        created: str = "2026-11-21T11:59:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created, "ownerReferences": [{"uid": "uid-1"}]},
            "spec": {"suspend": suspend}, "status": {"conditions": conditions_ or [], **status}}


def pod(name: str, phase: str, job_name_: str = "movie", created: str = "2026-11-21T11:59:01Z",
        exit_code: int | None = None, message: str = "", unschedulable: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "worker", "state": {"terminated": {
            "exitCode": exit_code, "message": message}}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": unschedulable}]
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": {"job-name": job_name_}},
            "spec": {"nodeName": "node-a"}, "status": status}


def cond(obj_status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in obj_status.get("conditions", []) if c["type"] == kind), None)


def test_new_transcodejob_creates_its_job_and_goes_pending() -> None:
    p = plan(tj(), [], [], CFG, NOW)
    assert p.phase == "Pending"
    (action,) = p.actions
    assert isinstance(action, CreateJob)
    assert action.manifest["metadata"]["name"] == "movie"
    assert p.status_patch["jobName"] == "movie"
    assert p.status_patch["observedGeneration"] == 1
    assert cond(p.status_patch, "Reconciling")["status"] == "True"  # type: ignore[index]
    assert cond(p.status_patch, "Succeeded")["status"] == "Unknown"  # type: ignore[index]
    assert [e.reason for e in p.events] == ["JobCreated"]


def test_repeating_a_reconcile_with_the_same_state_patches_nothing() -> None:
    first = plan(tj(), [job()], [pod("movie-a", "Running")], CFG, NOW)
    settled = tj(status={**first.status_patch})
    again = plan(settled, [job()], [pod("movie-a", "Running")], CFG, NOW + dt.timedelta(seconds=30))
    assert again.status_patch == {}
    assert again.events == []


def test_running_then_succeeded_keeps_transition_times_only_on_flips() -> None:
    running = plan(tj(status={"phase": "Pending"}), [job(active=1)], [pod("movie-a", "Running")], CFG, NOW)
    assert running.phase == "Running"
    assert [e.reason for e in running.events] == ["Started"]
    later = NOW + dt.timedelta(minutes=5)
    done = plan(tj(status=running.status_patch), [job(succeeded=1, conditions_=[
        {"type": "Complete", "status": "True"}])], [pod("movie-a", "Succeeded")], CFG, later)
    assert done.phase == "Succeeded"
    ready = cond(done.status_patch, "Ready")
    assert ready is not None and ready["status"] == "True"
    assert ready["lastTransitionTime"] == "2026-11-21T12:05:00Z"
    assert cond(done.status_patch, "Reconciling") is None
    assert done.status_patch["completionTime"] == "2026-11-21T12:05:00Z"


def test_failure_reason_comes_from_the_workers_termination_message() -> None:
    message = json.dumps({"reason": "InputNotFound", "message": "s3://media/in.mp4 does not exist"})
    failed_job = job(failed=1, conditions_=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}])
    p = plan(tj(status={"phase": "Running"}), [failed_job],
             [pod("movie-a", "Failed", exit_code=ExitCode.INPUT_NOT_FOUND, message=message)], CFG, NOW)
    assert p.phase == "Failed"
    assert p.status_patch["reason"] == "InputNotFound"
    assert p.status_patch["message"] == "s3://media/in.mp4 does not exist"
    stalled = cond(p.status_patch, "Stalled")
    assert stalled is not None and stalled["reason"] == "InputNotFound"
    assert [e.type for e in p.events] == ["Warning"]


def test_failure_without_a_message_falls_back_to_the_exit_code_class() -> None:
    failed_job = job(failed=3, conditions_=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    pods = [pod(f"movie-{i}", "Failed", created=f"2026-11-21T11:59:0{i}Z", exit_code=ExitCode.TRANSIENT)
            for i in range(3)]
    p = plan(tj(status={"phase": "Running", "attempts": 3}), [failed_job], pods, CFG, NOW)
    assert p.status_patch["reason"] == "TransientError"


def test_deadline_exceeded_is_reported_as_such() -> None:
    failed_job = job(conditions_=[{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                   "message": "Job was active longer than specified deadline"}])
    p = plan(tj(status={"phase": "Running"}), [failed_job], [], CFG, NOW)
    assert p.status_patch["reason"] == "DeadlineExceeded"


def test_a_new_attempt_emits_a_retrying_event() -> None:
    pods = [pod("movie-a", "Failed", exit_code=137, created="2026-11-21T11:59:01Z"),
            pod("movie-b", "Running", created="2026-11-21T11:59:30Z")]
    p = plan(tj(status={"phase": "Running", "attempts": 1}), [job(active=1, failed=1)], pods, CFG, NOW)
    assert p.status_patch["attempts"] == 2
    (retry,) = [e for e in p.events if e.reason == "Retrying"]
    assert "attempt 2 of 3" in retry.message


def test_cancel_deletes_the_job_and_is_final() -> None:
    p = plan(tj({"cancel": True}, {"phase": "Running"}), [job(active=1)], [], CFG, NOW)
    assert p.phase == "Cancelled"
    assert p.actions == [DeleteJob("movie")]
    assert cond(p.status_patch, "Succeeded")["reason"] == "Cancelled"  # type: ignore[index]
    # Terminal phases are sticky: a TTL-deleted Job is never recreated.
    done = plan(tj(status={"phase": "Succeeded"}), [], [], CFG, NOW)
    assert done.phase == "Succeeded" and done.actions == []


def test_suspend_maps_to_job_suspend_and_back() -> None:
    p = plan(tj({"suspend": True}, {"phase": "Running"}), [job(active=1)], [], CFG, NOW)
    assert p.phase == "Suspended"
    assert p.actions == [SetJobSuspend("movie", True)]
    resumed = plan(tj({"suspend": False}, {"phase": "Suspended"}), [job(suspend=True)], [], CFG, NOW)
    assert resumed.actions == [SetJobSuspend("movie", False)]
    assert [e.reason for e in resumed.events] == ["Resumed"]


def test_gpu_job_falls_back_to_cpu_after_the_timeout() -> None:
    spec = {"accelerator": {"type": "nvidia", "fallback": "cpu", "fallbackAfterSeconds": 60}}
    stuck = pod("movie-a", "Pending", unschedulable="0/2 nodes are available: Insufficient nvidia.com/gpu")
    gpu = {"phase": "Pending", "queue": {**ADMITTED, "pool": "gpu"}}
    early = plan(tj(spec, gpu), [job(created="2026-11-21T11:59:30Z")], [stuck], CFG, NOW)
    assert early.actions == []
    assert early.status_patch["reason"] == "Unschedulable"
    late = plan(tj(spec, gpu), [job(created="2026-11-21T11:58:00Z")], [stuck], CFG, NOW)
    delete, create = late.actions
    assert delete == DeleteJob("movie")
    assert isinstance(create, CreateJob) and create.manifest["metadata"]["name"] == "movie-cpu"
    assert "nodeSelector" not in create.manifest["spec"]["template"]["spec"]
    assert late.status_patch["accelerator"]["effective"] == "cpu"
    assert [e.reason for e in late.events] == ["FallbackToCPU"]
    # The CPU Job waits for a slot in the CPU pool: the GPU slot is released.
    assert create.manifest["spec"]["suspend"] is True and late.phase == "Queued"
    assert late.status_patch["queue"]["pool"] == "cpu" and late.status_patch["queue"]["admittedTime"] is None


def test_wait_policy_never_falls_back() -> None:
    spec = {"accelerator": {"type": "nvidia", "fallback": "wait", "fallbackAfterSeconds": 10}}
    stuck = pod("movie-a", "Pending", unschedulable="Insufficient nvidia.com/gpu")
    p = plan(tj(spec, {"phase": "Pending", "queue": {**ADMITTED, "pool": "gpu"}}),
             [job(created="2026-11-20T00:00:00Z")], [stuck], CFG, NOW)
    assert p.actions == []


def test_invalid_spec_fails_with_the_field_named() -> None:
    bad = tj({"outputs": [{"name": "o", "uri": "s3://media/o.webm", "container": "webm",
                           "video": {"codec": "h264"}}]})
    p = plan(bad, [], [], CFG, NOW)
    assert p.phase == "Failed" and p.actions == []
    assert p.status_patch["reason"] == "InvalidSpec"
    assert "spec.outputs.0" in p.status_patch["message"]


def test_conditions_keep_transition_time_while_status_is_unchanged() -> None:
    first = conditions.merge([], conditions.wanted("Running", "Running", None), 1, "T1")
    second = conditions.merge(first, conditions.wanted("Running", "Running", None), 2, "T2")
    assert {c["lastTransitionTime"] for c in second} == {"T1"}
    assert {c["observedGeneration"] for c in second} == {2}


# ---- the Job manifest ---------------------------------------------------------------------------

OWNER = Owner(name="movie", namespace="media", uid="uid-1")


def test_job_manifest_is_owned_restricted_and_fails_fast_on_bad_input() -> None:
    manifest = build_job(OWNER, TranscodeJobSpec.model_validate({**SPEC, "retryLimit": 4, "deadlineSeconds": 600}),
                         CFG, "cpu")
    spec = manifest["spec"]
    assert manifest["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "name": "movie", "uid": "uid-1",
        "controller": True, "blockOwnerDeletion": True}
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (4, 600)
    assert spec["ttlSecondsAfterFinished"] == CFG.ttl_seconds_after_finished
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                             "values": [10, 11, 12]}}
    assert rules[1]["action"] == "Ignore" and rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod_spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert TranscodeJobSpec.model_validate_json(env["TRANSKUBE_SPEC"]).outputs[0].name == "web"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:9000"
    assert container["envFrom"] == [{"secretRef": {"name": "transkube-storage", "optional": True}}]
    assert "nodeSelector" not in pod_spec and "tolerations" not in pod_spec


def test_gpu_job_gets_selector_toleration_and_gpu_limit() -> None:
    spec = TranscodeJobSpec.model_validate({**SPEC, "accelerator": {"type": "nvidia"},
                                            "input": {"uri": "s3://media/in.mp4",
                                                      "credentialsSecretRef": {"name": "my-s3"}}})
    pod_spec = build_job(OWNER, spec, CFG, "nvidia")["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["envFrom"] == [{"secretRef": {"name": "my-s3"}}]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRANSKUBE_ACCELERATOR"] == "nvidia"
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"]


def test_job_names_are_deterministic_and_fit() -> None:
    assert job_name("movie", "cpu", "cpu") == "movie"
    assert job_name("movie", "cpu", "nvidia") == "movie-cpu"
    long = "x" * 63
    assert job_name(long, "cpu", "cpu") == job_name(long, "cpu", "cpu")
    assert len(job_name(long, "cpu", "nvidia")) <= 52
    assert job_name(long, "cpu", "cpu") != job_name(long, "cpu", "nvidia")


def test_worker_rbac_grants_only_status_writes() -> None:
    sa, role, binding = worker_rbac("media", CFG)
    assert sa["kind"] == "ServiceAccount"
    assert role["rules"] == [
        {"apiGroups": ["media.transkube.dev"], "resources": ["transcodejobs"], "verbs": ["get"]},
        {"apiGroups": ["media.transkube.dev"], "resources": ["transcodejobs/status"], "verbs": ["get", "patch"]},
    ]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "transkube-worker", "namespace": "media"}]


def test_a_finished_worker_keeps_the_job_running_until_the_job_completes() -> None:
    p = plan(tj(status={"phase": "Running"}), [job(succeeded=1)], [pod("movie-a", "Succeeded")], CFG, NOW)
    assert p.phase == "Running"
    assert p.events == []


def test_between_attempts_the_job_is_pending_with_the_last_failure() -> None:
    failed = pod("movie-a", "Failed", exit_code=ExitCode.TRANSIENT,
                 message=json.dumps({"reason": "TransientError", "message": "S3 timed out"}))
    p = plan(tj(status={"phase": "Running", "attempts": 1}), [job(failed=1)], [failed], CFG, NOW)
    assert p.phase == "Pending"
    assert p.status_patch["reason"] == "RetryBackoff"
    assert "TransientError: S3 timed out" in p.status_patch["message"]


def test_held_job_carries_pool_label_and_priority_annotation() -> None:
    spec = TranscodeJobSpec.model_validate({**SPEC, "priority": -5})
    job_ = build_job(Owner("movie", "media", "uid-1"), spec, CFG, "cpu", pool="cpu", suspend=True)
    assert job_["spec"]["suspend"] is True
    assert job_["metadata"]["labels"]["transkube.dev/pool"] == "cpu"
    assert job_["metadata"]["annotations"]["transkube.dev/priority"] == "-5"  # not a valid label value
    assert "kueue.x-k8s.io/queue-name" not in job_["metadata"]["labels"]
    kueue = OperatorConfig(scheduling=Scheduling(mode="kueue"))
    assert build_job(Owner("movie", "media", "uid-1"), spec, kueue, "cpu", pool="cpu")["metadata"]["labels"][
        "kueue.x-k8s.io/queue-name"] == "cpu"


def test_a_new_job_is_held_queued_until_admitted() -> None:
    p = plan(tj(admitted=False), [], [], CFG, NOW)
    assert p.phase == "Queued"
    (create,) = p.actions
    assert isinstance(create, CreateJob) and create.manifest["spec"]["suspend"] is True
    assert p.status_patch["queue"]["pool"] == "cpu" and p.status_patch["queue"]["enqueuedTime"]
    admitted = plan(tj(status={"phase": "Queued"}), [job(suspend=True)], [], CFG, NOW)
    assert SetJobSuspend("movie", False) in admitted.actions and admitted.phase == "Pending"
    assert "Admitted" in [e.reason for e in admitted.events]


def test_unknown_pool_fails_with_a_config_category() -> None:
    p = plan(tj({"pool": "nope"}, admitted=False), [], [], CFG, NOW)
    assert p.phase == "Failed" and p.status_patch["reason"] == "PoolNotFound"
    assert p.status_patch["failureCategory"] == "Config" and p.labels_patch == {
        "transkube.dev/failure-category": "Config"}


def test_counted_failure_holds_the_job_for_the_backoff_schedule() -> None:
    failed_pod = pod("movie-a", "Failed", exit_code=20, message='{"reason": "TransientError", "message": "s3"}')
    failed_pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = "2026-11-21T11:59:58Z"
    p = plan(tj({"retryBackoffSeconds": [30]}, {"phase": "Running"}), [job(failed=1)], [failed_pod], CFG, NOW)
    assert SetJobSuspend("movie", True) in p.actions
    assert p.status_patch["reason"] == "RetryBackoff" and p.status_patch["nextAttemptTime"] == "2026-11-21T12:00:28Z"
    (entry,) = p.status_patch["attemptHistory"]
    assert entry["failureClass"] == "Transient" and entry["counted"] is True
    later = plan(tj({"retryBackoffSeconds": [30]}, {"phase": "Pending", **p.status_patch}),
                 [job(failed=1, suspend=True)], [failed_pod], CFG, NOW + dt.timedelta(seconds=31))
    assert SetJobSuspend("movie", False) in later.actions


def test_watchdog_kills_an_attempt_without_progress() -> None:
    running = pod("movie-a", "Running", created="2026-11-21T11:50:00Z")
    progress = {"stage": "Transcoding", "percent": 12, "updatedAt": "2026-11-21T11:55:00Z"}
    p = plan(tj({"stallTimeoutSeconds": 60}, {"phase": "Running", "progress": progress}), [job(active=1)], [running],
             CFG, NOW)
    assert DeletePod("movie-a") in p.actions and [e.reason for e in p.events] == ["Stalled"]
    assert cond(p.status_patch, "Stalled")["reason"] == "NoProgress"  # type: ignore[index]
    assert p.status_patch["attemptHistory"][0]["failureClass"] == "Stalled"
    fresh = {**progress, "updatedAt": "2026-11-21T11:59:30Z"}
    ok = plan(tj({"stallTimeoutSeconds": 60}, {"phase": "Running", "progress": fresh}), [job(active=1)], [running],
              CFG, NOW)
    assert ok.actions == [] and ok.wake_at == NOW + dt.timedelta(seconds=30)


def test_manual_retry_starts_a_fresh_job_and_keeps_the_history() -> None:
    history = [{"attempt": 1, "round": 0, "pod": "movie-a", "reason": "InputNotFound", "exitCode": 11,
                "failureClass": "Permanent", "counted": False, "finishTime": "2026-11-21T11:59:00Z"}]
    failed = {"phase": "Failed", "reason": "InputNotFound", "failureCategory": "BadInput", "attemptHistory": history,
              "completionTime": "2026-11-21T11:59:01Z"}
    obj = tj({"manualRetry": 1}, failed)
    obj["metadata"]["labels"] = {"transkube.dev/failure-category": "BadInput"}
    p = plan(obj, [job()], [], CFG, NOW)
    assert DeleteJob("movie") in p.actions
    (create,) = [a for a in p.actions if isinstance(a, CreateJob)]
    assert create.manifest["metadata"]["name"] == "movie-r1" and create.manifest["spec"]["suspend"] is True
    assert p.phase == "Queued" and p.status_patch["manualRetries"] == 1
    assert p.status_patch["failureCategory"] is None and p.labels_patch == {"transkube.dev/failure-category": None}
    assert "attemptHistory" not in p.status_patch  # kept as it was
    assert "ManualRetry" in [e.reason for e in p.events]


def test_a_killed_last_attempt_gets_a_cleanup_job_once_the_worker_job_is_done() -> None:
    killed = pod("movie-a", "Failed", exit_code=137, message="")
    failed_job = job(failed=1, conditions_=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    p = plan(tj({"retryLimit": 0}, {"phase": "Running"}), [failed_job], [killed], CFG, NOW)
    assert p.phase == "Failed"
    after = {"phase": "Failed", **p.status_patch}
    cleanup = plan(tj({"retryLimit": 0}, after), [failed_job], [killed], CFG, NOW)
    (create,) = [a for a in cleanup.actions if isinstance(a, CreateJob)]
    manifest = create.manifest
    assert manifest["metadata"]["name"] == "movie-cleanup"
    assert manifest["metadata"]["labels"]["transkube.dev/role"] == "cleanup"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "cleanup"
    assert {"name": "TRANSKUBE_CLEANUP_SINCE", "value": "2026-11-21T11:00:00Z"} in container["env"]
    assert cleanup.status_patch["cleanup"]["state"] == "Running"
    # The cleanup Job is not mistaken for a stray worker Job, and its success is recorded.
    cjob = {**job("movie-cleanup", conditions_=[{"type": "Complete", "status": "True"}]),
            "metadata": {"name": "movie-cleanup", "labels": {"transkube.dev/role": "cleanup"},
                         "creationTimestamp": "2026-11-21T12:00:00Z"}}
    cpod = pod("movie-cleanup-x", "Succeeded", job_name_="movie-cleanup", exit_code=0,
               message='{"reason": "Cleaned", "message": "aborted 1 multipart upload(s), deleted 2 object(s)"}')
    done = plan(tj({"retryLimit": 0}, {**after, **cleanup.status_patch}), [failed_job, cjob], [killed, cpod], CFG,
                NOW)
    assert not any(isinstance(a, DeleteJob) for a in done.actions)
    assert done.status_patch["cleanup"]["state"] == "Succeeded"
    assert "deleted 2 object(s)" in done.status_patch["cleanup"]["message"]


def test_a_worker_that_exited_on_its_own_needs_no_cleanup() -> None:
    failed = pod("movie-a", "Failed", exit_code=20, message='{"reason": "TransientError", "message": "x"}')
    failed_job = job(failed=1, conditions_=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    p = plan(tj({"retryLimit": 0}, {"phase": "Running"}), [failed_job], [failed], CFG, NOW)
    again = plan(tj({"retryLimit": 0}, {"phase": "Failed", **p.status_patch}), [failed_job], [failed], CFG, NOW)
    assert again.actions == [] and "cleanup" not in again.status_patch


# ---- one status write per state change (issue 12: <= 10 requests per lifecycle) ----------------------------

def test_a_fresh_job_queued_is_written_once_as_the_reconcile_after_its_job_would_write_it() -> None:
    fresh = tj(admitted=False)
    first = plan(fresh, [], [], CFG, NOW)
    assert first.phase == "Queued"
    assert first.events == []  # the held Job is news when admitted, not now
    (create,) = first.actions
    assert isinstance(create, CreateJob) and create.manifest["spec"]["suspend"] is True
    written = tj(admitted=False, status=json.loads(json.dumps(first.status_patch)))
    again = plan(written, [job(suspend=True)], [], CFG, NOW + dt.timedelta(seconds=1))
    assert again.status_patch == {}


def test_first_sight_admission_creates_the_job_released_in_one_write() -> None:
    fresh = tj(admitted=False)
    p = plan(fresh, [], [], CFG, NOW, admission={"pool": "cpu", "admittedTime": "2026-11-21T12:00:00.1Z"})
    assert p.phase == "Pending"
    (create,) = p.actions
    assert isinstance(create, CreateJob) and not create.manifest["spec"].get("suspend")
    assert p.status_patch["queue"]["admittedTime"] == "2026-11-21T12:00:00.1Z"
    assert [e.reason for e in p.events] == ["JobCreated"]


def test_first_sight_for_another_pool_is_not_taken() -> None:
    p = plan(tj(admitted=False), [], [], CFG, NOW, admission={"pool": "gpu", "admittedTime": "x"})
    assert p.phase == "Queued"
    assert "admittedTime" not in p.status_patch["queue"]


def test_a_first_sight_place_rides_in_the_first_write() -> None:
    p = plan(tj(admitted=False), [], [], CFG, NOW,
             admission={"pool": "cpu", "position": 3, "reason": "PoolCapacity"})
    assert p.status_patch["queue"]["position"] == 3
    assert p.status_patch["reason"] == "PoolCapacity"
    assert "position 3" in p.status_patch["message"]


def test_start_time_alone_is_not_a_write_but_rides_with_the_worker_running() -> None:
    pending = plan(tj(), [], [], CFG, NOW)
    settled = tj(status=json.loads(json.dumps(pending.status_patch)))
    released = job(startTime="2026-11-21T12:00:01Z")
    assert plan(settled, [released], [], CFG, NOW).status_patch == {}
    assert plan(settled, [released], [pod("movie-a", "Pending")], CFG, NOW).status_patch == {}
    running = plan(settled, [released], [pod("movie-a", "Running")], CFG, NOW)
    assert running.phase == "Running"
    assert running.status_patch["startTime"] == "2026-11-21T12:00:01Z"


def test_a_worker_that_exited_0_waits_for_the_job_complete_write() -> None:
    released = job(startTime="2026-11-21T12:00:01Z")
    running = plan(tj(), [released], [pod("movie-a", "Running")], CFG, NOW)
    settled = tj(status=json.loads(json.dumps(running.status_patch)))
    exited = [pod("movie-a", "Succeeded", exit_code=0)]
    finishing = plan(settled, [released], exited, CFG, NOW + dt.timedelta(seconds=5))
    assert finishing.phase == "Running" and finishing.status_patch == {}
    done = job(startTime="2026-11-21T12:00:01Z",
               conditions_=[{"type": "Complete", "status": "True"}])
    succeeded = plan(settled, [done], exited, CFG, NOW + dt.timedelta(seconds=6))
    assert succeeded.phase == "Succeeded"
    assert succeeded.status_patch["attemptHistory"][-1].get("finishTime")


def test_an_attempt_that_ended_badly_is_written_at_once_its_pod_may_vanish() -> None:
    released = job(startTime="2026-11-21T12:00:01Z")
    running = plan(tj(), [released], [pod("movie-a", "Running")], CFG, NOW)
    terminating = pod("movie-a", "Running")
    terminating["metadata"]["deletionTimestamp"] = "2026-11-21T12:00:03Z"
    status = json.loads(json.dumps(running.status_patch))
    going = plan(tj(status=status), [released], [terminating], CFG, NOW + dt.timedelta(seconds=3))
    assert going.phase == "Pending"
    settled = tj(status={**status, **json.loads(json.dumps(going.status_patch))})
    evicted = pod("movie-a", "Failed", exit_code=143, message="evicted")
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                        "reason": "EvictionByEvictionAPI"}]
    after = plan(settled, [released], [evicted], CFG, NOW + dt.timedelta(seconds=5))
    assert after.events == [] and after.phase == "Pending"
    first = after.status_patch["attemptHistory"][0]
    assert first["finishTime"] and first["reason"] != "Succeeded"


def test_a_briefly_unschedulable_pod_is_not_news_until_it_lasts() -> None:
    """A pod the scheduler could not place a moment ago is usually waiting for a finished pod's resources: status
    says so only once the grace has passed (two writes saved per job on a packed node); a timer re-checks."""
    from transkube_operator.reconcile import UNSCHEDULABLE_GRACE_SECONDS

    status = {"phase": "Pending", "queue": {**ADMITTED, "pool": "cpu"}}
    since = NOW - dt.timedelta(seconds=2)
    stuck = pod("movie-a", "Pending", unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
    stuck["status"]["conditions"][0]["lastTransitionTime"] = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    early = plan(tj({}, status), [job()], [stuck], CFG, NOW)
    assert early.status_patch.get("reason") != "Unschedulable"
    assert early.wake_at == since + dt.timedelta(seconds=UNSCHEDULABLE_GRACE_SECONDS)
    later = plan(tj({}, status), [job()], [stuck], CFG, NOW + dt.timedelta(seconds=UNSCHEDULABLE_GRACE_SECONDS))
    assert later.status_patch["reason"] == "Unschedulable"
