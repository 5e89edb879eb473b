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
    REASON_BY_EXIT_CODE,
    REASON_INVALID_PRESET,
    REASON_PRESET_NOT_FOUND,
    WORKER_CONTAINER,
)
from transkube_api.models import TranscodeJobSpec
from transkube_api.presets import PresetError, resolve_output

from . import conditions
from .config import OperatorConfig
from .jobspec import Accelerator, Owner, build_job, job_name

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed", "Cancelled")
# Why a job waits, shown in status.reason (and the wide Reason column) while Pending.
PENDING_REASONS = ("Unschedulable", "FallbackToCPU", "RetryBackoff")
OPERATOR_KEYS = ("observedGeneration", "phase", "reason", "message", "conditions", "attempts", "jobName",
                 "accelerator", "startTime", "completionTime", "resolvedOutputs", "presets")


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


Action = CreateJob | DeleteJob | SetJobSuspend


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


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _job_condition(job: Obj, kind: str) -> Obj | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def _worker_terminated(pod: Obj) -> Obj | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == WORKER_CONTAINER:
            term = (cs.get("state") or {}).get("terminated")
            return dict(term) if term else None
    return None


def pod_failure(pod: Obj) -> tuple[str, str] | None:
    """(reason, message) of a failed worker pod, from its termination message or exit code."""
    term = _worker_terminated(pod)
    if not term:
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            return status.get("reason") or "PodFailed", status.get("message") or "the worker pod failed"
        return None
    code = int(term.get("exitCode", 0))
    if code == 0:
        return None
    raw = (term.get("message") or "").strip()
    try:
        parsed = json.loads(raw)
        return str(parsed["reason"]), str(parsed.get("message", ""))[:1024]
    except (ValueError, KeyError, TypeError):
        return REASON_BY_EXIT_CODE.get(code, "WorkerFailed"), (raw[-1024:] or f"worker exited with code {code}")


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


def plan(tj: Obj, jobs: list[Obj], pods: list[Obj], cfg: OperatorConfig, now: dt.datetime,
         presets: Mapping[str, Obj | None] | None = None) -> Plan:
    """`presets`: the TranscodePresets named in presets_needed(tj), by name (None: not found)."""
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

    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    requested: Accelerator = spec.accelerator.type
    effective: Accelerator = (status.get("accelerator") or {}).get("effective") or requested
    name = job_name(owner.name, effective, requested)
    live = [j for j in jobs if not j["metadata"].get("deletionTimestamp")]
    job = next((j for j in live if j["metadata"]["name"] == name), None)
    job_pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == name]
    actions += [DeleteJob(j["metadata"]["name"]) for j in live if j["metadata"]["name"] != name]
    desired["accelerator"] = {"requested": requested, "effective": effective,
                              **({"reason": status["accelerator"]["reason"]}
                                 if effective != requested and (status.get("accelerator") or {}).get("reason") else {})}

    if old_phase in TERMINAL:
        if old_phase == "Cancelled" and job is not None:
            actions.append(DeleteJob(name))
        return _finish(tj, Plan(phase=old_phase, actions=actions), desired, old_phase, status.get("reason"),
                       status.get("message"), now_s)

    if spec.cancel:
        if job is not None:
            actions.append(DeleteJob(name))
        events.append(Event("Normal", "Cancelled", "spec.cancel is true: the Job and its pods are being deleted"))
        return _finish(tj, Plan(phase="Cancelled", actions=actions, events=events), desired, "Cancelled",
                       "Cancelled", "cancelled as requested by spec.cancel", now_s)

    try:
        spec, recorded = resolve_presets(spec, status, presets or {})
    except PresetFailure as failure:
        return _finish(tj, Plan(phase="Failed", actions=actions), desired, "Failed", failure.reason,
                       failure.message, now_s, events_if_new=True)
    desired.update(recorded)

    if job is None:
        manifest = build_job(owner, spec, cfg, effective)
        actions.append(CreateJob(manifest))
        if status.get("jobName") != name:
            events.append(Event("Normal", "JobCreated", f"created Job {name} ({effective})"))
        desired["jobName"] = name
        desired["attempts"] = status.get("attempts") or 0
        phase = "Suspended" if spec.suspend else "Pending"
        return _finish(tj, Plan(phase=phase, actions=actions, events=events), desired, phase,
                       None if phase == "Suspended" else "JobCreated", None, now_s)

    desired["jobName"] = name
    jstatus = job.get("status") or {}
    started = sum(int(jstatus.get(k) or 0) for k in ("active", "failed", "succeeded"))
    attempts = max(int(status.get("attempts") or 0), started)
    if attempts > int(status.get("attempts") or 0) and attempts > 1:
        previous = last_failure(job_pods)
        why = f" after {previous[0]}: {previous[1]}" if previous else ""
        events.append(Event("Warning", "Retrying", f"attempt {attempts} of {spec.retry_limit + 1} started{why}"))
    desired["attempts"] = attempts
    if jstatus.get("startTime") and not desired.get("startTime"):
        desired["startTime"] = jstatus["startTime"]

    if _job_condition(job, "Complete"):
        events.append(Event("Normal", "Succeeded", f"transcode finished: {len(spec.outputs)} output(s) written"))
        return _finish(tj, Plan(phase="Succeeded", actions=actions, events=events), desired, "Succeeded", None,
                       None, now_s)
    failed = _job_condition(job, "Failed")
    if failed:
        reason, message = _failure_reason(failed, job_pods)
        events.append(Event("Warning", "Failed", f"{reason}: {message}"))
        return _finish(tj, Plan(phase="Failed", actions=actions, events=events), desired, "Failed", reason, message,
                       now_s)

    if bool((job.get("spec") or {}).get("suspend")) != spec.suspend:
        actions.append(SetJobSuspend(name, spec.suspend))
        events.append(Event("Normal", "Suspended" if spec.suspend else "Resumed",
                            "spec.suspend is true: pods are stopped" if spec.suspend else "spec.suspend is false"))
    if spec.suspend:
        return _finish(tj, Plan(phase="Suspended", actions=actions, events=events), desired, "Suspended", None,
                       None, now_s)

    current = [p for p in job_pods if not p["metadata"].get("deletionTimestamp")
               and (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    running = [p for p in current if p["status"].get("phase") == "Running"]
    # A worker that exited 0 keeps the job Running until the Job controller marks it Complete.
    finishing = not current and any((p.get("status") or {}).get("phase") == "Succeeded" for p in job_pods)
    if running or finishing:
        if old_phase != "Running" and running:
            pod = running[0]
            events.append(Event("Normal", "Started",
                                f"worker pod {pod['metadata']['name']} running on {pod['spec'].get('nodeName')}"))
        return _finish(tj, Plan(phase="Running", actions=actions, events=events), desired, "Running", "Running",
                       None, now_s)

    reason, message = "Pending", "waiting for the worker pod to start"
    previous = last_failure(job_pods)
    if not current and previous:
        reason, message = "RetryBackoff", f"attempt {attempts} failed ({previous[0]}: {previous[1]}); retrying"
    blocked = next((c for p in current if (c := _unschedulable(p))), None)
    if blocked:
        reason, message = "Unschedulable", str(blocked.get("message", ""))
        created = parse_time(job["metadata"].get("creationTimestamp"))
        waited = (now - created).total_seconds() if created else 0.0
        if (effective == "nvidia" and spec.accelerator.fallback == "cpu"
                and waited >= spec.accelerator.fallback_after_seconds):
            cpu_name = job_name(owner.name, "cpu", requested)
            actions += [DeleteJob(name), CreateJob(build_job(owner, spec, cfg, "cpu"))]
            why = f"no GPU node took the job within {spec.accelerator.fallback_after_seconds}s: {message}"
            desired["accelerator"] = {"requested": requested, "effective": "cpu", "reason": why}
            desired["jobName"] = cpu_name
            events.append(Event("Warning", "FallbackToCPU", why))
            reason, message = "FallbackToCPU", why
    return _finish(tj, Plan(phase="Pending", actions=actions, events=events), desired, "Pending", reason, message,
                   now_s)


def _failure_reason(failed: Obj, pods: list[Obj]) -> tuple[str, str]:
    job_reason = str(failed.get("reason") or "Failed")
    if job_reason == "DeadlineExceeded":
        return "DeadlineExceeded", str(failed.get("message") or "the job ran past spec.deadlineSeconds")
    from_pod = last_failure(pods)
    if from_pod:
        return from_pod
    return job_reason, str(failed.get("message") or "")


def _finish(tj: Obj, p: Plan, desired: Obj, phase: str, reason: str | None, message: str | None, now: str,
            events_if_new: bool = False) -> Plan:
    status: Obj = tj.get("status") or {}
    desired["phase"] = phase
    desired["reason"] = reason if phase in ("Failed", "Cancelled") or reason in PENDING_REASONS else None
    desired["message"] = message if desired["reason"] else None
    desired["conditions"] = conditions.merge(status.get("conditions") or [],
                                             conditions.wanted(phase, reason, message),
                                             desired.get("observedGeneration"), now)
    if phase in TERMINAL and not desired.get("completionTime"):
        desired["completionTime"] = now
    if events_if_new and phase == "Failed":
        p.events.append(Event("Warning", "Failed", f"{reason}: {message}"))
    patch: Obj = {k: v for k, v in desired.items() if v != status.get(k) and not (v is None and k not in status)}
    if phase == "Pending" and not status.get("progress"):
        patch["progress"] = {"stage": "Pending", "percent": 0}
    p.status_patch = patch
    return p
