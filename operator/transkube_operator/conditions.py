"""Pure: status.conditions the Kubernetes way, readable by kstatus, `kubectl wait` and GitOps tools.

- Ready: True once the spec is fully realised (succeeded, or cancelled as asked).
- Succeeded: True on success, False on failure or cancel, Unknown while in flight.
- Reconciling / Stalled: present only while True (kstatus' abnormal-true conditions).
  Stalled is also True (reason NoProgress) between a watchdog kill and the next attempt.
lastTransitionTime changes only when a condition's status flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Phase = str


@dataclass(frozen=True)
class Want:
    type: str
    status: str
    reason: str
    message: str = ""


def wanted(phase: Phase, reason: str | None, message: str | None, stalled: bool = False) -> list[Want]:
    """`stalled`: the watchdog killed the last attempt for want of progress and the next one is not running yet
    (Stalled=True with reason NoProgress until it is)."""
    msg = message or ""
    if phase == "Succeeded":
        return [Want("Ready", "True", "Succeeded", msg or "all outputs written"),
                Want("Succeeded", "True", "Succeeded", msg or "all outputs written")]
    if phase == "Failed":
        why = reason or "Failed"
        return [Want("Ready", "False", why, msg), Want("Succeeded", "False", why, msg),
                Want("Stalled", "True", why, msg)]
    if phase == "Cancelled":
        return [Want("Ready", "True", "Cancelled", msg or "cancelled as requested by spec.cancel"),
                Want("Succeeded", "False", "Cancelled", msg or "cancelled as requested by spec.cancel")]
    if phase == "Suspended":
        return [Want("Ready", "False", "Suspended", msg or "suspended by spec.suspend"),
                Want("Succeeded", "Unknown", "Suspended", msg or "suspended by spec.suspend")]
    # Queued, Pending or Running: in progress.
    why = reason or phase
    wants = [Want("Ready", "False", why, msg), Want("Succeeded", "Unknown", why, msg),
             Want("Reconciling", "True", why, msg)]
    if stalled:
        wants.append(Want("Stalled", "True", "NoProgress", msg))
    return wants


def merge(existing: list[dict[str, Any]], wants: list[Want], generation: int | None, now: str) -> list[dict[str, Any]]:
    """New conditions list: keeps lastTransitionTime of conditions whose status did not change."""
    old = {c.get("type"): c for c in existing or []}
    out = []
    for w in wants:
        prev = old.get(w.type)
        since = prev["lastTransitionTime"] if prev and prev.get("status") == w.status and \
            prev.get("lastTransitionTime") else now
        cond: dict[str, Any] = {"type": w.type, "status": w.status, "reason": w.reason, "message": w.message,
                                "lastTransitionTime": since}
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out
