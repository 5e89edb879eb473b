"""Pure: which webhook events a reconcile produced, and the outbox that delivers them (Standard Webhooks).

Subscriptions live in spec.webhooks[]. Every event becomes one entry per subscribed webhook in
status.webhookDeliveries (the outbox), written in the same status patch as the phase change that caused it and
before any POST: an operator restart then neither loses an event (it is in status) nor repeats one (its id is
deterministic, so a replayed reconcile finds it already there). The handler POSTs `due()` entries and writes
`record_result()` back with another status patch. status.webhooks[] keeps per-subscription state: disabled
after 410 Gone, and the progress throttle.

Everything here works on plain wire dicts (camelCase keys, RFC 3339 times) and returns the status keys to
merge; lists are returned whole because a merge patch replaces lists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .reconcile import parse_time, rfc3339

Obj = dict[str, Any]

EVENT_PREFIX = "transcodejob."
# Event name -> the phase whose arrival fires it (progress is status-driven, see _progress_due).
PHASE_EVENTS = {"queued": "Queued", "started": "Running", "succeeded": "Succeeded", "failed": "Failed",
                "cancelled": "Cancelled"}
MAX_DELIVERIES = 100  # status.webhookDeliveries maxItems in the CRD
MAX_ERROR = 512  # lastError is for humans; a receiver's whole error page does not belong in status
GONE_REASON = "receiver answered 410 Gone"
REMOVED_ERROR = "subscription removed from spec.webhooks"
SUPERSEDED_ERROR = "superseded by a newer progress event"


@dataclass(frozen=True)
class WebhookConfig:
    # Seconds to wait before attempt 1, 2, 3...; once all are spent the delivery is Failed.
    retry_schedule: tuple[int, ...] = (0, 5, 300, 1800, 7200, 18000, 36000)
    # Finished (Delivered/Failed/Abandoned) entries kept, newest first; Pending ones are kept while they fit.
    keep_delivered: int = 20


class Result(Protocol):
    """What one POST came to (delivery.DeliveryResult, or anything shaped like it)."""

    @property
    def ok(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class _Failure:
    ok: bool
    status: int | None
    reason: str
    message: str


def event_id(uid: str, webhook: str, event: str, round_: int, n: int) -> str:
    """The webhook-id: the same for every attempt (and every replay) of one occurrence of one event."""
    digest = hashlib.sha256(f"{uid}/{webhook}/{event}/{round_}/{n}".encode()).hexdigest()
    return f"msg_{digest[:24]}"


def _percent(status: Obj) -> float | None:
    value = (status.get("progress") or {}).get("percent")
    return float(value) if isinstance(value, int | float) else None


def _snapshot(tj: Obj, status: Obj, event: str) -> Obj:
    """The event's data: small on purpose (status is size-limited and every entry carries one)."""
    meta = tj.get("metadata") or {}
    data: Obj = {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                 "phase": status.get("phase"), "attempts": int(status.get("attempts") or 0)}
    for key in ("reason", "message", "failureCategory"):
        if status.get(key) is not None:
            data[key] = status[key]
    if event == "progress":
        data["percent"] = _percent(status)
    if event == "succeeded":
        data["outputs"] = [{"name": o.get("name"), "uri": o.get("uri")} for o in status.get("outputs") or []]
    return data


def _progress_due(sub: Obj, state: Obj, new_status: Obj, now: dt.datetime) -> bool:
    percent = _percent(new_status)
    if new_status.get("phase") != "Running" or percent is None or percent == state.get("lastProgressPercent"):
        return False
    # Only the worker's own reports of this attempt: not the operator's "Pending 0%" placeholder (no updatedAt),
    # nor the previous attempt's numbers (written before this attempt's pod existed).
    updated = parse_time((new_status.get("progress") or {}).get("updatedAt"))
    history = new_status.get("attemptHistory") or []
    started = parse_time(history[-1].get("startTime")) if history else None
    if updated is None or (started is not None and updated < started):
        return False
    last = parse_time(state.get("lastProgressTime"))
    interval = int(sub.get("progressIntervalSeconds") or 30)
    return last is None or (now - last).total_seconds() >= interval


def _trim(deliveries: list[Obj], keep_delivered: int) -> list[Obj]:
    """All Pending entries and the newest `keep_delivered` others, in order, within the CRD's 100."""
    finished = [i for i, d in enumerate(deliveries) if d.get("state") != "Pending"]
    drop = set(finished[:max(0, len(finished) - keep_delivered)])
    kept = [d for i, d in enumerate(deliveries) if i not in drop]
    # Only a long-dead receiver gets here (progress is coalesced): then the oldest entries give way, finished
    # ones first, since a status the API server refuses would stop the whole reconcile.
    while len(kept) > MAX_DELIVERIES:
        victim = next((i for i, d in enumerate(kept) if d.get("state") != "Pending"), 0)
        del kept[victim]
    return kept


def _abandon(entry: Obj, why: str) -> Obj:
    out = {k: v for k, v in entry.items() if k != "nextAttemptTime"}
    out.update(state="Abandoned", lastError=why)
    return out


def outbox_update(tj: Obj, old_status: Obj, new_status: Obj, now: dt.datetime, cfg: WebhookConfig) -> Obj:
    """The "webhooks"/"webhookDeliveries" status keys after this reconcile's events, or {} if nothing changed.

    old_status: status before this reconcile; new_status: status with the plan's patch applied (its webhook keys
    are the current ones).
    """
    subs: list[Obj] = list((tj.get("spec") or {}).get("webhooks") or [])
    old_states: list[Obj] = list(new_status.get("webhooks") or [])
    old_deliveries: list[Obj] = list(new_status.get("webhookDeliveries") or [])
    if not subs and not old_states and not old_deliveries:
        return {}
    by_name = {s.get("name"): s for s in old_states}
    names = [str(s["name"]) for s in subs]
    # One state per current subscription, in spec order; states of removed subscriptions go.
    states: list[Obj] = [dict(by_name.get(n) or {"name": n}) for n in names]
    # A removed subscription's pending entries can never be sent (its URL and secret are gone).
    deliveries = [_abandon(d, REMOVED_ERROR) if d.get("state") == "Pending" and d.get("webhook") not in names
                  else d for d in old_deliveries]
    known = {d.get("id") for d in deliveries}

    uid = str((tj.get("metadata") or {}).get("uid") or "")
    old_phase, new_phase = old_status.get("phase"), new_status.get("phase")
    round_ = int(new_status.get("manualRetries") or 0)
    now_s = rfc3339(now)
    first_delay = dt.timedelta(seconds=cfg.retry_schedule[0] if cfg.retry_schedule else 0)
    # status.progress still holds the previous attempt's numbers when an attempt starts: wait for fresh ones.
    attempt_started = new_phase == "Running" and old_phase != "Running"
    # An attempt that ran and finished between two reconciles (a short job, or one that ran while the operator
    # was failing over to a standby) was never seen Running: its started event still belongs before the end.
    started_unseen = (new_phase in ("Succeeded", "Failed") and old_phase not in ("Running", new_phase)
                      and int(new_status.get("attempts") or 0) >= 1)
    as_started = ({k: v for k, v in new_status.items() if k not in ("reason", "message", "failureCategory")}
                  | {"phase": "Running"}) if started_unseen else new_status
    # A job admitted at first sight (a free slot, nobody waiting) is never Queued; it was still taken into the queue.
    queued_unseen = old_phase is None and new_phase == "Pending"
    as_queued = ({k: v for k, v in new_status.items() if k not in ("reason", "message")}
                 | {"phase": "Queued"}) if queued_unseen else new_status

    def queue(sub_name: str, event: str, n: int) -> None:
        entry_id = event_id(uid, sub_name, event, round_, n)
        if entry_id in known:  # already queued by an earlier (replayed) reconcile
            return
        known.add(entry_id)
        deliveries.append({"id": entry_id, "webhook": sub_name, "type": EVENT_PREFIX + event, "eventTime": now_s,
                           "state": "Pending", "attempts": 0, "nextAttemptTime": rfc3339(now + first_delay),
                           "data": _snapshot(tj, {"started": as_started, "queued": as_queued}.get(event, new_status),
                                             event)})

    for sub, state in zip(subs, states, strict=True):
        if state.get("disabled"):
            continue
        events = set(sub.get("events") or [])
        for event, phase in PHASE_EVENTS.items():
            fired = new_phase == phase and old_phase != phase
            if (event == "started" and started_unseen) or (event == "queued" and queued_unseen):
                fired = True
            if fired and event in events:
                # Each attempt starts once; everything else happens once per manual-retry round.
                queue(state["name"], event, int(new_status.get("attempts") or 0) if event == "started" else 0)
        if "progress" in events and not attempt_started and _progress_due(sub, state, new_status, now):
            seq = int(state.get("progressEvents") or 0) + 1
            # Coalesce: an unsent older progress event is stale once a newer one exists.
            deliveries = [_abandon(d, SUPERSEDED_ERROR) if d.get("webhook") == state["name"]
                          and d.get("type") == EVENT_PREFIX + "progress" and d.get("state") == "Pending" else d
                          for d in deliveries]
            queue(state["name"], "progress", seq)
            state.update(lastProgressTime=now_s, lastProgressPercent=_percent(new_status), progressEvents=seq)

    deliveries = _trim(deliveries, cfg.keep_delivered)
    patch: Obj = {}
    if states != old_states:
        patch["webhooks"] = states
    if deliveries != old_deliveries:
        patch["webhookDeliveries"] = deliveries
    return patch


def _pending(status: Obj) -> Iterable[Obj]:
    return (d for d in status.get("webhookDeliveries") or [] if d.get("state") == "Pending")


def due(status: Obj, now: dt.datetime) -> list[Obj]:
    """Pending entries whose time has come, oldest event first (ties keep outbox order)."""
    ready = [d for d in _pending(status) if (t := parse_time(d.get("nextAttemptTime"))) is None or t <= now]
    return sorted(ready, key=lambda d: parse_time(d.get("eventTime")) or dt.datetime.min.replace(tzinfo=dt.UTC))


def next_due(status: Obj) -> dt.datetime | None:
    """When the earliest Pending entry is due (for a wake-up timer), or None when none is pending."""
    times = [parse_time(d.get("nextAttemptTime")) or dt.datetime.min.replace(tzinfo=dt.UTC)
             for d in _pending(status)]
    return min(times, default=None)


def event_body(delivery: Obj) -> bytes:
    """The Standard Webhooks payload, byte-identical on every attempt (it is what gets signed)."""
    payload = {"type": delivery["type"], "timestamp": delivery["eventTime"], "data": delivery.get("data") or {}}
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def record_result(status: Obj, delivery_id: str, result: Result, now: dt.datetime, cfg: WebhookConfig) -> Obj:
    """The status keys to patch after one POST of `delivery_id`, or {} if it is no longer Pending."""
    deliveries: list[Obj] = [dict(d) for d in status.get("webhookDeliveries") or []]
    entry = next((d for d in deliveries if d.get("id") == delivery_id), None)
    if entry is None or entry.get("state") != "Pending":
        return {}
    attempts = int(entry.get("attempts") or 0) + 1
    entry.update(attempts=attempts, lastAttemptTime=rfc3339(now))
    entry.pop("nextAttemptTime", None)
    entry.pop("responseStatus", None)
    entry.pop("lastError", None)
    if result.status is not None:
        entry["responseStatus"] = result.status
    if result.ok:
        entry["state"] = "Delivered"
        return {"webhookDeliveries": deliveries}
    entry["lastError"] = (f"{result.reason}: {result.message}" if result.message else result.reason)[:MAX_ERROR]
    if result.reason == "Gone" or result.status == 410:
        # The receiver asked us to stop for good: no more POSTs to this subscription, queued ones included.
        name = entry.get("webhook")
        states: list[Obj] = [dict(s) for s in status.get("webhooks") or []]
        state = next((s for s in states if s.get("name") == name), None)
        if state is None:
            state = {"name": name}
            states.append(state)
        state.update(disabled=True, disabledReason=GONE_REASON)
        deliveries = [_abandon(d, GONE_REASON) if d.get("webhook") == name and d.get("state") == "Pending"
                      and d is not entry else d for d in deliveries]
        entry["state"] = "Abandoned"
        return {"webhooks": states, "webhookDeliveries": deliveries}
    if attempts < len(cfg.retry_schedule):
        entry["nextAttemptTime"] = rfc3339(now + dt.timedelta(seconds=cfg.retry_schedule[attempts]))
    else:
        entry["state"] = "Failed"
    return {"webhookDeliveries": deliveries}


def record_failure(status: Obj, delivery_id: str, reason: str, message: str, now: dt.datetime,
                   cfg: WebhookConfig) -> Obj:
    """Like a failed POST without an HTTP response (e.g. SecretNotFound or a refused URL, before any POST)."""
    return record_result(status, delivery_id, _Failure(False, None, reason, message), now, cfg)
