"""Pure: status.attemptHistory, one entry per worker pod, and the failure class of each ended attempt.

Pods go away (a manual retry deletes the old Job, the Job's TTL deletes it later), so the history is kept in
status and only ever extended: a recorded entry is completed once, never rewritten.
"""

from __future__ import annotations

import json
from typing import Any

from transkube_api.constants import REASON_BY_EXIT_CODE, REASON_STALLED, WORKER_CONTAINER, ExitCode

Obj = dict[str, Any]
MAX_ENTRIES = 50


def worker_terminated(pod: Obj) -> Obj | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == WORKER_CONTAINER:
            term = (cs.get("state") or {}).get("terminated")
            return dict(term) if term else None
    return None


def _disrupted(pod: Obj) -> bool:
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ended(pod: Obj) -> Obj | None:
    """{exitCode, reason, message, finishTime} once the worker pod has finished, else None."""
    status = pod.get("status") or {}
    term = worker_terminated(pod)
    if term is None:
        if status.get("phase") != "Failed":
            return None
        return {"exitCode": None, "reason": status.get("reason") or "PodFailed",
                "message": status.get("message") or "the worker pod failed", "finishTime": None}
    code = int(term.get("exitCode", 0))
    if code == 0:
        return {"exitCode": 0, "reason": "Succeeded", "message": None, "finishTime": term.get("finishedAt")}
    raw = (term.get("message") or "").strip()
    try:
        parsed = json.loads(raw)
        reason, message = str(parsed["reason"]), str(parsed.get("message", ""))[:1024]
    except (ValueError, KeyError, TypeError):
        reason = REASON_BY_EXIT_CODE.get(code, "WorkerFailed")
        message = raw[-1024:] or f"worker exited with code {code}"
    return {"exitCode": code, "reason": reason, "message": message, "finishTime": term.get("finishedAt")}


def failure_class(pod: Obj, exit_code: int | None) -> str:
    """Mirrors the Job's podFailurePolicy: which rule this failure matched."""
    if exit_code in ExitCode.PERMANENT:
        return "Permanent"
    if _disrupted(pod):
        return "Disruption"
    if exit_code == ExitCode.TRANSIENT:
        return "Transient"
    return "Internal"


def update(history: list[Obj], pods: list[Obj], round_: int, now: str,
           stalled: frozenset[str] = frozenset()) -> list[Obj]:
    """The history with `pods` (this round's worker pods) recorded. `stalled`: pods the watchdog is killing now."""
    out = [dict(e) for e in history]
    by_pod = {e["pod"]: e for e in out}
    ordered = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    for pod in ordered:
        name = pod["metadata"]["name"]
        entry = by_pod.get(name)
        if entry is None:
            entry = {"attempt": (out[-1]["attempt"] + 1) if out else 1, "round": round_, "pod": name,
                     "startTime": pod["metadata"].get("creationTimestamp")}
            out.append(entry)
            by_pod[name] = entry
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not entry.get("node"):
            entry["node"] = node
        if name in stalled and not entry.get("failureClass"):
            entry.update({"reason": REASON_STALLED, "failureClass": "Stalled", "counted": True, "finishTime": now,
                          "message": "no ffmpeg progress within the stall timeout; the attempt was killed"})
        if entry.get("exitCode") is not None or (entry.get("reason") and entry.get("failureClass") != "Stalled"):
            continue
        end = ended(pod)
        if end is None:
            continue
        if entry.get("failureClass") == "Stalled":  # keep the watchdog's verdict; add what the pod said
            entry["exitCode"] = end["exitCode"]
            continue
        entry.update({k: v for k, v in end.items() if v is not None})
        entry.setdefault("finishTime", now)
        if end["exitCode"] != 0:
            cls = failure_class(pod, end["exitCode"])
            entry["failureClass"] = cls
            entry["counted"] = cls in ("Transient", "Internal", "Stalled")
    return out[-MAX_ENTRIES:]


def counted_failures(history: list[Obj], round_: int) -> list[Obj]:
    return [e for e in history if e.get("round", 0) == round_ and e.get("counted")]


def last_failure(history: list[Obj], round_: int) -> Obj | None:
    failed = [e for e in history if e.get("round", 0) == round_ and e.get("failureClass")]
    return failed[-1] if failed else None
