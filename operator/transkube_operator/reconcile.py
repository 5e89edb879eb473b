"""Pure: given a TranscodeJob, the Jobs it owns and their pods, decide what to do and what status to write.

`plan()` returns actions (create/delete/suspend a Job), a status patch holding only the operator-owned keys
that changed, and the Events a user should see. The kopf handlers just carry these out.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from transkube_api.constants import (
    LABEL_FAILURE_CATEGORY,
    LABEL_ROLE,
    REASON_BY_EXIT_CODE,
    REASON_INVALID_PRESET,
    REASON_POOL_MISMATCH,
    REASON_POOL_NOT_FOUND,
    REASON_PRESET_NOT_FOUND,
    REASON_STALLED,
    REASON_URI_FORBIDDEN,
    ROLE_CLEANUP,
    failure_category,
)
from transkube_api.models import TranscodeJobSpec
from transkube_api.presets import PresetError, resolve_output
from transkube_api.scope import check_spec

from . import conditions, history
from .config import OperatorConfig, Scheduling
from .jobspec import Accelerator, Owner, build_cleanup_job, build_job, cleanup_job_name, job_name

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed", "Cancelled")
# Why a job waits, shown in status.reason (and the wide Reason column) while Pending.
# Status keys written only along with a change that matters (see _piggyback).
PIGGYBACK = frozenset({"attemptHistory", "attempts", "startTime"})
WAITING_FOR_POD = ("Pending", "waiting for the worker pod to start")  # status.reason and message
# A worker pod unschedulable for less than this is usually waiting for a finishing pod's resources to be freed
# (a slot was just released), not news: reporting it would cost two status writes (set, then cleared) per job
# on a tightly packed node. Lasting longer, status says Unschedulable.
UNSCHEDULABLE_GRACE_SECONDS = 10.0
PENDING_REASONS = ("Unschedulable", "FallbackToCPU", "RetryBackoff", REASON_STALLED)
OPERATOR_KEYS = ("observedGeneration", "phase", "reason", "message", "conditions", "attempts", "jobName",
                 "accelerator", "startTime", "completionTime", "resolvedOutputs", "presets", "queue",
                 "failureCategory", "attemptHistory", "nextAttemptTime", "manualRetries", "cleanup")


@dataclass(frozen=True)
class CreateJob:
    manifest: Obj


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class SetJobSuspend:
    name: str
    suspend: bool


@dataclass(frozen=True)
class DeletePod:
    """The stall watchdog's kill: the pod fails, the Job counts it and starts the next attempt."""

    name: str


@dataclass(frozen=True)
class DeleteTranscodeJob:
    """Retention: the finished TranscodeJob (and through ownership its Job) goes."""


Action = CreateJob | DeleteJob | SetJobSuspend | DeletePod | DeleteTranscodeJob


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    phase: str
    actions: list[Action] = field(default_factory=list)
    status_patch: Obj = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # metadata.labels to merge-patch on the TranscodeJob (None value: remove), or None.
    labels_patch: dict[str, str | None] | None = None
    # When a time-based decision is next due (retry backoff end, retention, stall deadline); None: none.
    wake_at: dt.datetime | None = None


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_precise(t: dt.datetime) -> str:
    """Microseconds: FIFO order in the queue must hold between jobs created within one second."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _job_condition(job: Obj, kind: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def pod_failure(pod: Obj) -> tuple[str, str] | None:
    """(reason, message) of a failed worker pod, from its termination message or exit code."""
    end = history.ended(pod)
    if end is None or end["exitCode"] == 0:
        return None
    return str(end["reason"]), str(end["message"])


def _by_creation(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]))


def last_failure(pods: list[Obj]) -> tuple[str, str] | None:
    failures = [f for p in _by_creation(pods) if (f := pod_failure(p))]
    return failures[-1] if failures else None


def _unschedulable(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return dict(c)
    return None


def presets_needed(tj: Obj) -> list[str]:
    """Names of the TranscodePresets the handler must fetch for plan(): those the outputs name, unless the
    presets were already resolved (status.resolvedOutputs is written once and then is the truth)."""
    if (tj.get("status") or {}).get("resolvedOutputs"):
        return []
    outputs = (tj.get("spec") or {}).get("outputs") or []
    return sorted({str(o["preset"]) for o in outputs if isinstance(o, dict) and o.get("preset")})


class PresetFailure(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def resolve_presets(spec: TranscodeJobSpec, status: Obj, presets: Mapping[str, Obj | None]
                    ) -> tuple[TranscodeJobSpec, Obj]:
    """The spec the worker runs (outputs with their presets merged in) and the status keys that record it.
    `presets`: the fetched TranscodePreset objects by name, None for a missing one. Once status.resolvedOutputs
    exists it is used as is, so later preset edits never change a job. Raises PresetFailure."""
    if not any(o.preset for o in spec.outputs):
        return spec, {}
    recorded = status.get("resolvedOutputs")
    if recorded:
        try:
            return TranscodeJobSpec.model_validate({**spec.wire(), "outputs": recorded}), {}
        except ValidationError as exc:
            raise PresetFailure(REASON_INVALID_PRESET, f"status.resolvedOutputs is not valid: "
                                                       f"{exc.errors()[0]['msg']}") from exc
    outputs: list[Obj] = []
    uses: list[Obj] = []
    for o in spec.outputs:
        wire = o.wire()
        if not o.preset:
            outputs.append(wire)
            continue
        obj = presets.get(o.preset)
        if obj is None:
            raise PresetFailure(REASON_PRESET_NOT_FOUND,
                                f"output {o.name}: TranscodePreset {o.preset!r} does not exist")
        try:
            outputs.append(resolve_output(wire, obj.get("spec") or {}))
        except PresetError as exc:
            raise PresetFailure(REASON_INVALID_PRESET, f"output {o.name}, preset {o.preset}: {exc}") from exc
        generation = (obj.get("metadata") or {}).get("generation")
        uses.append({"output": o.name, "preset": o.preset, **({"generation": generation} if generation else {})})
    try:
        resolved = TranscodeJobSpec.model_validate({**spec.wire(), "outputs": outputs})
    except ValidationError as exc:
        raise PresetFailure(REASON_INVALID_PRESET, f"the outputs with their presets are not valid: "
                                                   f"{exc.errors()[0]['msg']}") from exc
    return resolved, {"resolvedOutputs": [o.wire() for o in resolved.outputs], "presets": uses}


def enqueue_time(meta: Obj, now: dt.datetime) -> str:
    """A job's place in FIFO order: its creation, to the microsecond. creationTimestamp has whole seconds, so
    the first sight's sub-second part orders jobs created within one second; clamped into that second, an
    operator that sees a job late (a restart, a takeover, a burst) never moves it behind later jobs."""
    created = parse_time(meta.get("creationTimestamp"))
    if created is None:
        return rfc3339_precise(now)
    clamped = min(max(now, created), created + dt.timedelta(microseconds=999_999))
    return rfc3339_precise(clamped)


def plan(tj: Obj, jobs: list[Obj], pods: list[Obj], cfg: OperatorConfig, now: dt.datetime,
         presets: Mapping[str, Obj | None] | None = None, refusal: tuple[str, str] | None = None,
         admission: Obj | None = None) -> Plan:
    """`presets`: the TranscodePresets named in presets_needed(tj), by name (None: not found).
    `refusal`: (reason, message) when the admission queue refuses this job (a namespace quota).
    `admission`: status.queue keys the admission queue decided (admittedTime, or position and reason; None
    removes a key). The job's reconcile is status.queue's one writer: it writes them with the rest."""
    meta = tj["metadata"]
    status: Obj = tj.get("status") or {}
    generation = meta.get("generation")
    old_phase = status.get("phase")
    now_s = rfc3339(now)
    desired: Obj = {k: status.get(k) for k in OPERATOR_KEYS}
    desired["observedGeneration"] = generation
    events: list[Event] = []
    actions: list[Action] = []

    try:
        spec = TranscodeJobSpec.model_validate(tj.get("spec") or {})
    except ValidationError as exc:
        # The CRD schema should have caught this; never leave the object without an answer.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return _finish(tj, Plan(phase="Failed"), desired, "Failed", "InvalidSpec",
                       f"spec.{where}: {first['msg']}", now_s, events_if_new=old_phase != "Failed")

    round_ = int(status.get("manualRetries") or 0)
    fresh = False
    if spec.manual_retry > round_:
        if old_phase == "Failed":
            # A fresh start under a new Job name; the history stays, the verdict goes.
            round_, fresh, old_phase = spec.manual_retry, True, None
            for key in ("reason", "message", "failureCategory", "completionTime", "nextAttemptTime", "queue",
                        "cleanup"):
                desired[key] = None
            desired["accelerator"] = None
            events.append(Event("Normal", "ManualRetry", f"retry {round_} requested (spec.manualRetry): a fresh "
                                                         "Job starts; the attempt history is kept"))
        elif old_phase != "Cancelled" or not spec.cancel:
            events.append(Event("Warning", "RetryIgnored", f"spec.manualRetry={spec.manual_retry}: only a Failed "
                                                           f"job can be retried; this one is {old_phase}"))
        desired["manualRetries"] = spec.manual_retry

    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    requested: Accelerator = spec.accelerator.type
    accel_status: Obj = desired.get("accelerator") or {}
    effective: Accelerator = accel_status.get("effective") or requested
    name = job_name(owner.name, effective, requested, round_)
    live = [j for j in jobs if not j["metadata"].get("deletionTimestamp")]
    cleanups = [j for j in live if (j["metadata"].get("labels") or {}).get(LABEL_ROLE) == ROLE_CLEANUP]
    live = [j for j in live if j not in cleanups]
    if fresh:
        actions += [DeleteJob(j["metadata"]["name"]) for j in cleanups]
    job = next((j for j in live if j["metadata"]["name"] == name), None)
    job_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name]
    actions += [DeleteJob(j["metadata"]["name"]) for j in live if j["metadata"]["name"] != name]
    desired["accelerator"] = {"requested": requested, "effective": effective,
                              **({"reason": accel_status["reason"]}
                                 if effective != requested and accel_status.get("reason") else {})}
    attempt_log = history.update(status.get("attemptHistory") or [], job_pods, round_, now_s)
    desired["attemptHistory"] = attempt_log or None

    if old_phase in TERMINAL:
        if old_phase == "Cancelled" and job is not None:
            actions.append(DeleteJob(name))
        if old_phase in ("Failed", "Cancelled"):
            _cleanup(tj, spec, cfg, owner, desired, attempt_log, round_, jobs, cleanups, pods, actions, events,
                     now_s)
        p = Plan(phase=old_phase, actions=actions, events=events)
        _retention(p, spec, status, cfg, now)
        return _finish(tj, p, desired, old_phase, status.get("reason"), status.get("message"), now_s)

    if spec.cancel:
        if job is not None:
            actions.append(DeleteJob(name))
        events.append(Event("Normal", "Cancelled", "spec.cancel is true: the Job and its pods are being deleted"))
        return _finish(tj, Plan(phase="Cancelled", actions=actions, events=events), desired, "Cancelled",
                       "Cancelled", "cancelled as requested by spec.cancel", now_s)

    if job is None:
        # Storage confinement, re-checked before any Job exists (clusters without the admission policy, or a
        # mapping changed since the job was admitted). The spec as written: a preset's own URIs (a watermark)
        # are the cluster admin's.
        refused = check_spec(spec, cfg.storage_scope.scope_for(owner.namespace), f"namespace {owner.namespace}")
        if refused is not None:
            message = "spec." + refused.message
            p = Plan(phase="Failed", actions=actions, events=[*events, Event("Warning", REASON_URI_FORBIDDEN,
                                                                              message)])
            return _finish(tj, p, desired, "Failed", REASON_URI_FORBIDDEN, message, now_s)

    try:
        spec, recorded = resolve_presets(spec, status, presets or {})
    except PresetFailure as failure:
        return _finish(tj, Plan(phase="Failed", actions=actions), desired, "Failed", failure.reason,
                       failure.message, now_s, events_if_new=True)
    desired.update(recorded)

    # ---- the admission queue
    sched = cfg.scheduling
    queue: Obj = dict(desired.get("queue") or {})
    pool = queue.get("pool") or pool_for(spec.pool, effective, sched)
    # Decided for the queued job it saw, or at first sight for this pool (queue.first_sight).
    if admission and (queue.get("pool") or admission.get("pool") == pool):
        queue = {k: v for k, v in {**queue, **admission}.items() if v is not None}
    if pool not in sched.pools:
        return _finish(tj, Plan(phase="Failed", actions=actions), desired, "Failed", REASON_POOL_NOT_FOUND,
                       f"pool {pool!r} is not configured (pools: {', '.join(sorted(sched.pools))})", now_s,
                       events_if_new=True)
    if sched.pools[pool].accelerator != effective:
        return _finish(tj, Plan(phase="Failed", actions=actions), desired, "Failed", REASON_POOL_MISMATCH,
                       f"pool {pool!r} runs {sched.pools[pool].accelerator} jobs; this job needs {effective}",
                       now_s, events_if_new=True)
    queue.update(pool=pool, priority=spec.priority)
    queue.setdefault("enqueuedTime", enqueue_time(meta, now))
    kueue = sched.mode == "kueue"
    if spec.suspend and not kueue:
        # A suspended job frees its slot; on resume it queues again (keeping its place by enqueue time).
        for key in ("admittedTime", "position", "reason"):
            queue.pop(key, None)
    if kueue:
        admitted = job is not None and not (job.get("spec") or {}).get("suspend") and not spec.suspend
        if admitted and not queue.get("admittedTime"):
            queue["admittedTime"] = now_s
    else:
        admitted = bool(queue.get("admittedTime"))
    if admitted:
        queue.pop("position", None)
        queue.pop("reason", None)
    desired["queue"] = queue
    if refusal and not admitted:
        if job is not None:
            actions.append(DeleteJob(name))
        return _finish(tj, Plan(phase="Failed", actions=actions), desired, "Failed", refusal[0], refusal[1],
                       now_s, events_if_new=True)

    # ---- retry backoff: after a counted failure the Job is held until the schedule says go
    counted = history.counted_failures(attempt_log, round_)
    jstatus: Obj = (job.get("status") or {}) if job else {}
    wake_at: dt.datetime | None = None
    in_backoff = False
    if job is not None and counted and not int(jstatus.get("active") or 0) and len(counted) <= spec.retry_limit:
        schedule = spec.retry_backoff_seconds or list(cfg.retry_backoff_seconds)
        delay = schedule[min(len(counted), len(schedule)) - 1]
        finished = parse_time(counted[-1].get("finishTime"))
        if finished and delay and now < finished + dt.timedelta(seconds=delay):
            in_backoff = True
            wake_at = finished + dt.timedelta(seconds=delay)
    desired["nextAttemptTime"] = rfc3339(wake_at) if wake_at else None
    hold = spec.suspend or not admitted or in_backoff

    if job is None:
        manifest = build_job(owner, spec, cfg, effective, pool=pool, round_=round_,
                             suspend=True if kueue else hold)
        actions.append(CreateJob(manifest))
        # A Job held for the queue is news when it is admitted (the Admitted event names it), not now: one Event
        # fewer per queued job, which matters when a catalog of them is applied at once.
        if (status.get("jobName") != name or fresh) and (admitted or kueue):
            events.append(Event("Normal", "JobCreated", f"created Job {name} ({effective}, pool {pool})"))
        desired["jobName"] = name
        desired["attempts"] = status.get("attempts") or 0
        phase = "Suspended" if spec.suspend else ("Pending" if admitted else "Queued")
        p = Plan(phase=phase, actions=actions, events=events, wake_at=wake_at)
        if phase == "Queued":  # as the reconcile after the Job exists would write it: no second write for it
            reason, message = _queued(queue, pool, spec.priority)
            return _finish(tj, p, desired, phase, reason, message, now_s, reset_progress=fresh)
        if phase == "Pending":
            return _finish(tj, p, desired, phase, *WAITING_FOR_POD, now_s, reset_progress=fresh)
        return _finish(tj, p, desired, phase, None, None, now_s, reset_progress=fresh)

    desired["jobName"] = name
    attempts = max(int(status.get("attempts") or 0), attempt_log[-1]["attempt"] if attempt_log else 0)
    if attempts > int(status.get("attempts") or 0) and attempts > 1:
        previous = history.last_failure(attempt_log[:-1], round_) if not fresh else None
        why = f" after {previous.get('reason')}: {previous.get('message')}" if previous else ""
        in_round = sum(1 for e in attempt_log if e.get("round", 0) == round_)
        of = f"attempt {in_round} of {spec.retry_limit + 1}" + (f" of retry {round_}" if round_ else "")
        events.append(Event("Warning", "Retrying", f"{of} started{why}"))
    desired["attempts"] = attempts
    if jstatus.get("startTime") and not desired.get("startTime"):
        desired["startTime"] = jstatus["startTime"]

    if _job_condition(job, "Complete"):
        events.append(Event("Normal", "Succeeded", f"transcode finished: {len(spec.outputs)} output(s) written"))
        p = Plan(phase="Succeeded", actions=actions, events=events)
        _retention(p, spec, {**status, "completionTime": now_s}, cfg, now)
        return _finish(tj, p, desired, "Succeeded", None, None, now_s)
    failed = _job_condition(job, "Failed")
    if failed:
        reason, message = _failure_reason(failed, job_pods, history.last_failure(attempt_log, round_))
        events.append(Event("Warning", "Failed", f"{reason}: {message}"))
        p = Plan(phase="Failed", actions=actions, events=events)
        _retention(p, spec, {**status, "completionTime": now_s}, cfg, now)
        return _finish(tj, p, desired, "Failed", reason, message, now_s)

    if not kueue and bool((job.get("spec") or {}).get("suspend")) != hold:
        actions.append(SetJobSuspend(name, hold))
    elif kueue and spec.suspend and not (job.get("spec") or {}).get("suspend"):
        actions.append(SetJobSuspend(name, True))
    if spec.suspend and old_phase != "Suspended":
        events.append(Event("Normal", "Suspended", "spec.suspend is true: pods are stopped"))
    elif not spec.suspend and old_phase == "Suspended":
        events.append(Event("Normal", "Resumed", "spec.suspend is false: the job queues again"))
    if spec.suspend:
        return _finish(tj, Plan(phase="Suspended", actions=actions, events=events), desired, "Suspended", None,
                       None, now_s)
    if not admitted:
        enqueued = parse_time(queue.get("enqueuedTime"))
        if effective == "nvidia" and spec.accelerator.fallback == "cpu" and enqueued and not kueue:
            due = enqueued + dt.timedelta(seconds=spec.accelerator.fallback_after_seconds)
            if now >= due:
                why = (f"the GPU pool {pool} admitted no slot within {spec.accelerator.fallback_after_seconds}s "
                       "(no GPU node took the job)")
                return _fall_back_to_cpu(tj, owner, spec, cfg, desired, actions, events, name, round_, why, now_s)
        reason, message = _queued(queue, pool, spec.priority)
        return _finish(tj, Plan(phase="Queued", actions=actions, events=events), desired, "Queued", reason,
                       message, now_s)
    if old_phase == "Queued":
        events.append(Event("Normal", "Admitted", f"admitted to pool {pool}: Job {name} starts"))

    current = [p for p in job_pods if not p["metadata"].get("deletionTimestamp")
               and (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    running = [p for p in current if p["status"].get("phase") == "Running"]
    # A worker that exited 0 keeps the job Running until the Job controller marks it Complete.
    finishing = not current and any((p.get("status") or {}).get("phase") == "Succeeded" for p in job_pods)
    stall_timeout = spec.stall_timeout_seconds or cfg.stall_timeout_seconds
    if running:
        stalled = _stalled(running[0], status.get("progress") or {}, stall_timeout, now)
        if stalled:
            pod_name = running[0]["metadata"]["name"]
            actions.append(DeletePod(pod_name))
            desired["attemptHistory"] = history.update(attempt_log, job_pods, round_, now_s,
                                                       stalled=frozenset({pod_name}))
            message = f"no ffmpeg progress for {stall_timeout}s in pod {pod_name}: killing the attempt to retry it"
            events.append(Event("Warning", REASON_STALLED, message))
            return _finish(tj, Plan(phase="Pending", actions=actions, events=events), desired, "Pending",
                           REASON_STALLED, message, now_s, stalled=True)
        deadline = _stall_deadline(running[0], status.get("progress") or {}, stall_timeout)
        wake_at = deadline if deadline and (wake_at is None or deadline < wake_at) else wake_at
    if running or finishing:
        if old_phase != "Running" and running:
            pod = running[0]
            events.append(Event("Normal", "Started",
                                f"worker pod {pod['metadata']['name']} running on {pod['spec'].get('nodeName')}"))
        p = _finish(tj, Plan(phase="Running", actions=actions, events=events, wake_at=wake_at), desired,
                    "Running", "Running", None, now_s)
        # The worker exited 0 and the Job controller is about to mark the Job Complete: the attempt's finish
        # rides in that write instead of a write of its own.
        return _piggyback(p, status) if finishing and not running else p

    reason, message = WAITING_FOR_POD
    previous = history.last_failure(attempt_log, round_)
    stalled_before = bool(previous and previous.get("failureClass") == "Stalled") and not current
    if not current and previous and previous.get("counted"):
        reason = "RetryBackoff"
        message = f"attempt {previous['attempt']} failed ({previous.get('reason')}: {previous.get('message')})"
        message += f"; next attempt at {desired['nextAttemptTime']}" if in_backoff else "; retrying"
    blocked = next((c for p in current if (c := _unschedulable(p))), None)
    if blocked:
        since = parse_time(blocked.get("lastTransitionTime"))
        if since is None or (now - since).total_seconds() >= UNSCHEDULABLE_GRACE_SECONDS:
            reason, message = "Unschedulable", str(blocked.get("message", ""))
        else:  # news only if it lasts: re-checked when the grace ends
            due = since + dt.timedelta(seconds=UNSCHEDULABLE_GRACE_SECONDS)
            wake_at = due if wake_at is None or due < wake_at else wake_at
        created = parse_time(job["metadata"].get("creationTimestamp"))
        waited = (now - created).total_seconds() if created else 0.0
        if (effective == "nvidia" and spec.accelerator.fallback == "cpu"
                and waited >= spec.accelerator.fallback_after_seconds):
            why = f"no GPU node took the job within {spec.accelerator.fallback_after_seconds}s: {message}"
            return _fall_back_to_cpu(tj, owner, spec, cfg, desired, actions, events, name, round_, why, now_s)
        if effective == "nvidia" and spec.accelerator.fallback == "cpu" and created:
            due = created + dt.timedelta(seconds=spec.accelerator.fallback_after_seconds)
            wake_at = due if wake_at is None or due < wake_at else wake_at
    # A worker pod that does not run yet is news when it runs, fails or cannot be scheduled, each a write of
    # its own that carries the attempt's record too.
    return _piggyback(_finish(tj, Plan(phase="Pending", actions=actions, events=events, wake_at=wake_at), desired,
                              "Pending", reason, message, now_s, stalled=stalled_before), status)


def _fall_back_to_cpu(tj: Obj, owner: Owner, spec: TranscodeJobSpec, cfg: OperatorConfig, desired: Obj,
                      actions: list[Action], events: list[Event], gpu_job: str, round_: int, why: str,
                      now_s: str) -> Plan:
    """Replace the GPU Job by a CPU one, which queues in the CPU pool (the GPU slot is released)."""
    cpu_pool = cfg.scheduling.default_pools.get("cpu", "cpu")
    desired["queue"] = {"pool": cpu_pool, "priority": spec.priority, "enqueuedTime": now_s}
    actions += [DeleteJob(gpu_job), CreateJob(build_job(owner, spec, cfg, "cpu", pool=cpu_pool, round_=round_,
                                                        suspend=True))]
    desired["accelerator"] = {"requested": spec.accelerator.type, "effective": "cpu", "reason": why}
    desired["jobName"] = job_name(owner.name, "cpu", spec.accelerator.type, round_)
    events.append(Event("Warning", "FallbackToCPU", why))
    return _finish(tj, Plan(phase="Queued", actions=actions, events=events), desired, "Queued", "FallbackToCPU",
                   why, now_s)


WORKER_EXIT_CODES = (0, *REASON_BY_EXIT_CODE)  # the worker exited on its own, having cleaned up after itself


def _cleanup(tj: Obj, spec: TranscodeJobSpec, cfg: OperatorConfig, owner: Owner, desired: Obj,
             attempt_log: list[Obj], round_: int, jobs: list[Obj], cleanups: list[Obj], pods: list[Obj],
             actions: list[Action], events: list[Event], now_s: str) -> None:
    """After Failed/Cancelled: if an attempt of the last round was killed before its own cleanup (SIGKILL, OOM,
    a lost node), run the cleanup Job once the worker Jobs are gone, and record how it went."""
    state: Obj = dict(desired.get("cleanup") or {})
    name = cleanup_job_name(owner.name)
    if not state:
        killed = [e for e in attempt_log if e.get("round", 0) == round_ and e.get("finishTime") is not None
                  and e.get("exitCode") not in WORKER_EXIT_CODES]
        worker_jobs_left = [j for j in jobs if j not in cleanups]
        if not killed or (worker_jobs_left and not _all_finished(worker_jobs_left)):
            return
        since = str(tj["metadata"].get("creationTimestamp") or now_s)
        actions.append(CreateJob(build_cleanup_job(owner, spec, cfg, since)))
        desired["cleanup"] = {"state": "Running", "jobName": name, "startTime": now_s}
        events.append(Event("Normal", "CleanupStarted", f"attempt {killed[-1]['attempt']} was killed "
                                                        f"({killed[-1].get('reason')}); Job {name} removes its "
                                                        "partial outputs"))
        return
    if state.get("state") != "Running":
        return
    job = next((j for j in cleanups if j["metadata"]["name"] == name), None)
    if job is None:
        return
    own_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name]
    if _job_condition(job, "Complete"):
        # The cleanup's termination message says what it removed ({"reason": "Cleaned", "message": ...}).
        raw = next((t.get("message") for p in own_pods
                    if (t := history.worker_terminated(p)) and t.get("exitCode") == 0), None)
        message = _json_message(raw) or "partial outputs removed"
        desired["cleanup"] = {**state, "state": "Succeeded", "completionTime": now_s, "message": message}
        events.append(Event("Normal", "CleanedUp", message))
    elif _job_condition(job, "Failed"):
        last = last_failure(own_pods)
        message = f"{last[0]}: {last[1]}" if last else "the cleanup Job failed"
        desired["cleanup"] = {**state, "state": "Failed", "completionTime": now_s, "message": message}
        events.append(Event("Warning", "CleanupFailed", message))


def _all_finished(jobs: list[Obj]) -> bool:
    return all(_job_condition(j, "Complete") or _job_condition(j, "Failed") for j in jobs)


def _json_message(raw: str | None) -> str | None:
    try:
        return str(json.loads(raw or "")["message"])
    except (ValueError, KeyError, TypeError):
        return None


def _stall_deadline(pod: Obj, progress: Obj, timeout: int) -> dt.datetime | None:
    """When the running attempt counts as stalled if ffmpeg reports nothing new: `timeout` after its last
    Transcoding progress written during this pod's life."""
    if progress.get("stage") != "Transcoding":
        return None
    updated = parse_time(progress.get("updatedAt"))
    started = parse_time((pod.get("status") or {}).get("startTime") or pod["metadata"].get("creationTimestamp"))
    if updated is None or started is None or updated < started:
        return None  # the progress is an earlier attempt's
    return updated + dt.timedelta(seconds=timeout)


def _stalled(pod: Obj, progress: Obj, timeout: int, now: dt.datetime) -> bool:
    deadline = _stall_deadline(pod, progress, timeout)
    return deadline is not None and now >= deadline


def _retention(p: Plan, spec: TranscodeJobSpec, status: Obj, cfg: OperatorConfig, now: dt.datetime) -> None:
    """Delete a finished TranscodeJob after its TTL, once no webhook delivery is pending."""
    ttl = spec.ttl_seconds_after_finished if spec.ttl_seconds_after_finished is not None \
        else (cfg.finished_retention_seconds or None)  # the operator's 0 means keep; the spec's 0 means now
    finished = parse_time(status.get("completionTime"))
    if ttl is None or finished is None:
        return
    due = finished + dt.timedelta(seconds=ttl)
    pending = any(d.get("state") == "Pending" for d in status.get("webhookDeliveries") or []) \
        or (status.get("cleanup") or {}).get("state") == "Running"
    if now >= due and not pending:
        p.actions.append(DeleteTranscodeJob())
    elif now < due:
        p.wake_at = due if p.wake_at is None or due < p.wake_at else p.wake_at


def _failure_reason(failed: Obj, pods: list[Obj], last: Obj | None) -> tuple[str, str]:
    job_reason = str(failed.get("reason") or "Failed")
    if job_reason == "DeadlineExceeded":
        return "DeadlineExceeded", str(failed.get("message") or "the job ran past spec.deadlineSeconds")
    if last and last.get("reason"):
        return str(last["reason"]), str(last.get("message") or "")
    from_pod = last_failure(pods)
    if from_pod:
        return from_pod
    return job_reason, str(failed.get("message") or "")


def pool_for(spec_pool: str | None, accelerator: str, sched: Scheduling) -> str:
    """The pool a job queues in: spec.pool, else the default pool of the accelerator it runs on."""
    return spec_pool or sched.default_pools.get(accelerator, accelerator)


def _piggyback(p: Plan, status: Obj) -> Plan:
    """Drops a status patch that only records an attempt starting, or ending well: both are recomputed from the
    pod (a worker that started or succeeded stays until its Job goes) and written with the next change that
    matters, so a job costs one write per state. An attempt that ended otherwise is written at once: its pod
    may be gone (an eviction deletes it) before anything else changes."""
    if not p.status_patch or not set(p.status_patch) <= PIGGYBACK or p.events or p.actions:
        return p
    old = {e.get("attempt"): e for e in status.get("attemptHistory") or []}
    for entry in p.status_patch.get("attemptHistory") or []:
        if entry != old.get(entry.get("attempt")) and entry.get("finishTime") and entry.get("reason") != "Succeeded":
            return p
    p.status_patch = {}
    return p


def _queued(queue: Obj, pool: str, priority: int) -> tuple[str, str]:
    """status.reason and message of a job waiting for admission."""
    where = f"pool {pool}" + (f", position {queue['position']}" if queue.get("position") else "")
    why = {"PoolCapacity": "the pool is at capacity",
           "NamespaceConcurrency": "the namespace is at its maxConcurrent"}.get(queue.get("reason") or "",
                                                                                  "waiting for admission")
    return queue.get("reason") or "Queued", f"{where} (priority {priority}): {why}"


def _dict_patch(old: Any, new: Any) -> Any:
    """A JSON merge patch value for a nested object: keys dropped from `new` are sent as null."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**{k: None for k in old if k not in new}, **new}
    return new


def _finish(tj: Obj, p: Plan, desired: Obj, phase: str, reason: str | None, message: str | None, now: str,
            events_if_new: bool = False, stalled: bool = False, reset_progress: bool = False) -> Plan:
    status: Obj = tj.get("status") or {}
    desired["phase"] = phase
    desired["reason"] = reason if phase in ("Failed", "Cancelled", "Queued") or reason in PENDING_REASONS else None
    desired["message"] = message if desired["reason"] else None
    desired["failureCategory"] = failure_category(reason) if phase == "Failed" else None
    desired["conditions"] = conditions.merge(status.get("conditions") or [],
                                             conditions.wanted(phase, reason, message, stalled=stalled),
                                             desired.get("observedGeneration"), now)
    if phase in TERMINAL and not desired.get("completionTime"):
        desired["completionTime"] = now
    if events_if_new and phase == "Failed":
        p.events.append(Event("Warning", "Failed", f"{reason}: {message}"))
    patch: Obj = {k: _dict_patch(status.get(k), v) for k, v in desired.items()
                  if v != status.get(k) and not (v is None and k not in status)}
    if reset_progress or (phase in ("Pending", "Queued") and not status.get("progress")):
        patch["progress"] = {"stage": "Pending", "percent": 0, "fps": None, "speed": None, "etaSeconds": None,
                             "eta": None}
    p.status_patch = patch
    labels = (tj["metadata"].get("labels") or {})
    category = desired["failureCategory"]
    if labels.get(LABEL_FAILURE_CATEGORY) != category:
        p.labels_patch = {LABEL_FAILURE_CATEGORY: category}
    return p
