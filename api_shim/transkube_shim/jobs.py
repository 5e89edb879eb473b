"""Pure functions between the REST API and TranscodeJob CRs: names, bodies, views, filters, pagination
cursors, manual retries and queue statistics. No I/O here."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, get_args

from transkube_api.constants import API_VERSION, KIND, PREFIX
from transkube_api.models import FailureCategory, TranscodeJobSpec

from .errors import ApiError

Obj = dict[str, Any]

LABEL_TENANT = f"{PREFIX}/tenant"
LABEL_CREATED_BY = f"{PREFIX}/created-by"
ANNOTATION_IDEMPOTENCY_KEY = f"{PREFIX}/idempotency-key-sha256"
ANNOTATION_REQUEST_HASH = f"{PREFIX}/request-sha256"
CREATED_BY = "shim"

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
# Queued: waiting for pool capacity; Pending: admitted, its Job's pod is starting.
FILTER_PHASES = {"queued": "Queued", "pending": "Pending", "running": "Running", "suspended": "Suspended",
                 "succeeded": "Succeeded", "failed": "Failed", "cancelled": "Cancelled"}
FAILURE_CATEGORIES: tuple[str, ...] = get_args(FailureCategory)
MAX_MANUAL_RETRY = 1000  # spec.manualRetry's maximum in the CRD
MAX_IDEMPOTENCY_KEY = 255


def phase(obj: Obj) -> str:
    """A job's phase; one the operator has not seen yet is waiting to be admitted (Queued)."""
    return str((obj.get("status") or {}).get("phase") or "Queued")


def manual_retry(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("manualRetry") or 0)


def retry_pending(obj: Obj) -> bool:
    """A Failed job whose spec.manualRetry was raised and the operator has not acted on it yet (status.manualRetries
    behind). Only Failed counts: the operator retries nothing else, so a raise elsewhere must not keep a job
    looking unfinished."""
    return phase(obj) == "Failed" and manual_retry(obj) > int((obj.get("status") or {}).get("manualRetries") or 0)


def is_terminal(obj: Obj) -> bool:
    """Finished for good; not a Failed job whose retry was requested: it is about to run again (quotas count it,
    event streams stay open)."""
    return phase(obj) in TERMINAL_PHASES and not retry_pending(obj)


def random_name() -> str:
    return f"tj-{secrets.token_hex(6)}"


def idempotent_name(tenant: str, key: str) -> str:
    """Idempotency-Key -> CR name: the same key from the same tenant always names the same CR, so a retried
    POST finds the first one (409 AlreadyExists) instead of making a second job."""
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ApiError(400, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} "
                                                       "printable characters", "Idempotency-Key")
    return "tj-" + hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()[:20]


def request_hash(spec_wire: Obj) -> str:
    return hashlib.sha256(json.dumps(spec_wire, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cr_body(name: str, tenant: str, spec: TranscodeJobSpec, *, idempotency_key: str | None = None) -> Obj:
    wire = spec.wire()
    labels = {LABEL_TENANT: tenant, LABEL_CREATED_BY: CREATED_BY}
    annotations = {ANNOTATION_REQUEST_HASH: request_hash(wire)}
    if idempotency_key is not None:
        annotations[ANNOTATION_IDEMPOTENCY_KEY] = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "labels": labels, "annotations": annotations}, "spec": wire}


def same_request(existing: Obj, spec: TranscodeJobSpec) -> bool:
    annotations = existing.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(ANNOTATION_REQUEST_HASH) == request_hash(spec.wire()))


def webhook_summary(obj: Obj) -> list[Obj]:
    """Per subscription (spec.webhooks): disabled or not, and its deliveries in status.webhookDeliveries (the
    outbox the operator keeps, at most the latest 100) counted by state."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    states = {str(w.get("name")): w for w in status.get("webhooks") or []}
    out: list[Obj] = []
    for hook in spec.get("webhooks") or []:
        name = str(hook.get("name", ""))
        state = states.get(name) or {}
        counts = dict.fromkeys(("pending", "delivered", "failed", "abandoned"), 0)
        for delivery in status.get("webhookDeliveries") or []:
            key = str(delivery.get("state", "")).lower()
            if delivery.get("webhook") == name and key in counts:
                counts[key] += 1
        summary: Obj = {"name": name, "disabled": bool(state.get("disabled")), **counts}
        if state.get("disabledReason"):
            summary["disabledReason"] = state["disabledReason"]
        out.append(summary)
    return out


def job_view(obj: Obj) -> Obj:
    """A CR -> the API's Job object (the `Job` model's wire form). Spec and status pass through as the API
    server stored them (its schema is generated from the same models): priority and pool are in the spec; queue,
    failureCategory, attemptHistory, nextAttemptTime and manualRetries in the status. Derived here: whether a
    retry is pending, and a per-subscription webhook summary."""
    meta = obj.get("metadata") or {}
    view: Obj = {
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "createdAt": meta.get("creationTimestamp", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
        "deleting": bool(meta.get("deletionTimestamp")),
        "retryPending": retry_pending(obj),
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }
    if hooks := webhook_summary(obj):
        view["webhooks"] = hooks
    return view


def _parse_list(raw: str | None, allowed: Mapping[str, str], param: str, what: str) -> frozenset[str] | None:
    """A comma-separated, case-insensitive query parameter -> the values it names (`allowed` maps each lower-case
    spelling to its value); 400 naming the parameter otherwise."""
    if not raw:
        return None
    values = set()
    for part in raw.split(","):
        key = part.strip().lower()
        if key not in allowed:
            raise ApiError(400, "invalid_parameter",
                           f"unknown {what} {part.strip()!r}; one of {', '.join(dict.fromkeys(allowed.values()))}",
                           param)
        values.add(allowed[key])
    return frozenset(values)


def parse_status_filter(raw: str | None) -> frozenset[str] | None:
    """?status=queued,running -> {"Queued", "Running"}."""
    return _parse_list(raw, FILTER_PHASES, "status", "status")


def parse_category_filter(raw: str | None) -> frozenset[str] | None:
    """?failureCategory=Transient,stalled -> {"Transient", "Stalled"} (status.failureCategory of Failed jobs)."""
    return _parse_list(raw, {c.lower(): c for c in FAILURE_CATEGORIES}, "failureCategory", "failure category")


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise ApiError(400, "invalid_parameter", f"limit must be an integer from 1 to {maximum}", "limit")
    return value


# ---- pagination: newest first, cursors like Kubernetes' limit/continue --------------------------------

SortKey = tuple[str, str]  # (creationTimestamp, name)


def sort_key(obj: Obj) -> SortKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def encode_cursor(key: SortKey) -> str:
    raw = json.dumps([1, key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> SortKey:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, created, name = json.loads(raw)
        if version != 1 or not isinstance(created, str) or not isinstance(name, str):
            raise ValueError(token)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ApiError(400, "invalid_continue", "the continue token is not one this API issued",
                       "continue") from exc
    return created, name


def _after(key: SortKey, cursor: SortKey) -> bool:
    """Is key past cursor in newest-first order (creation time descending, then name ascending)?"""
    return key[0] < cursor[0] or (key[0] == cursor[0] and key[1] > cursor[1])


def paginate(objs: Iterable[Obj], limit: int, cursor: SortKey | None, phases: frozenset[str] | None = None,
             categories: frozenset[str] | None = None) -> tuple[list[Obj], str | None]:
    """One page, newest first. The cursor names the last item served, so items created meanwhile never shift
    a page (they sort before it) and a deleted item never makes one skip another. `categories` keeps only jobs
    whose status.failureCategory is one of them (Failed jobs: the dead-letter view)."""
    chosen = [o for o in objs if (phases is None or phase(o) in phases)
              and (categories is None or (o.get("status") or {}).get("failureCategory") in categories)
              and (cursor is None or _after(sort_key(o), cursor))]
    chosen.sort(key=lambda o: sort_key(o)[1])
    chosen.sort(key=lambda o: sort_key(o)[0], reverse=True)  # stable: equal times stay in name order
    page = chosen[:limit]
    token = encode_cursor(sort_key(page[-1])) if len(chosen) > limit else None
    return page, token


# ---- manual retry -----------------------------------------------------------------------------------------

def retry_refusal(obj: Obj) -> ApiError | None:
    """Why POST /retry cannot raise this job's spec.manualRetry now; None if it can."""
    if phase(obj) != "Failed":
        return ApiError(409, "not_failed", f"only failed jobs can be retried; this one is {phase(obj)}")
    if retry_pending(obj):
        return ApiError(409, "retry_pending", "a retry of this job was already requested and has not started yet")
    if manual_retry(obj) >= MAX_MANUAL_RETRY:
        return ApiError(409, "too_many_retries", f"this job was retried {MAX_MANUAL_RETRY} times already")
    return None


def retry_patch(obj: Obj) -> list[Obj]:
    """JSON patch raising spec.manualRetry by one, which the API server applies only if the job is still Failed
    and manualRetry still has the value we read: of two concurrent retries exactly one counts (the other's
    `test` fails). Status is part of the object a patch is applied to, though the write ignores it."""
    current = manual_retry(obj)
    return [{"op": "test", "path": "/status/phase", "value": "Failed"},
            {"op": "test", "path": "/spec/manualRetry", "value": current},
            {"op": "replace", "path": "/spec/manualRetry", "value": current + 1}]


def retry_precondition(obj: Obj) -> tuple[str, int]:
    """What retry_patch tests; a 422 with this unchanged on a fresh read was a real rejection, not a race."""
    return phase(obj), manual_retry(obj)


# ---- queue statistics -------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _pool(obj: Obj) -> str | None:
    """The pool a job queues or runs in: the operator's choice (status.queue.pool), else the one it asked for."""
    pool = ((obj.get("status") or {}).get("queue") or {}).get("pool") or (obj.get("spec") or {}).get("pool")
    return str(pool) if pool else None


POOL_PHASES = {"Queued": "queued", "Pending": "starting", "Running": "running"}


def queue_stats(objs: Sequence[Obj], capacities: Mapping[str, int] | None = None) -> Obj:
    """Counts by phase, per pool (queued/starting/running, with the pool's capacity when the shim knows the
    operator's pool config) and of failed jobs by failureCategory; mean wait and processing time."""
    counts = dict.fromkeys(("Queued", "Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"), 0)
    by_category = dict.fromkeys(FAILURE_CATEGORIES, 0)
    pools: dict[str, Obj] = {}

    def pool_entry(name: str) -> Obj:
        entry = pools.setdefault(name, dict.fromkeys(POOL_PHASES.values(), 0))
        if capacities and name in capacities:
            entry["capacity"] = capacities[name]
        return entry

    for name in capacities or {}:  # every configured pool shows, with or without jobs
        pool_entry(name)
    waits: list[float] = []
    runs: list[float] = []
    for obj in objs:
        p = phase(obj)
        counts[p] = counts.get(p, 0) + 1
        status = obj.get("status") or {}
        if p == "Failed" and status.get("failureCategory") in by_category:
            by_category[status["failureCategory"]] += 1
        if p in POOL_PHASES and (pool := _pool(obj)):
            pool_entry(pool)[POOL_PHASES[p]] += 1
        created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        started = parse_time(status.get("startTime"))
        completed = parse_time(status.get("completionTime"))
        if created and started:
            waits.append(max(0.0, (started - created).total_seconds()))
        if p == "Succeeded" and started and completed:
            runs.append(max(0.0, (completed - started).total_seconds()))
    stats: Obj = {"queued": counts["Queued"], "starting": counts["Pending"], "running": counts["Running"],
                  "suspended": counts["Suspended"], "succeeded": counts["Succeeded"], "failed": counts["Failed"],
                  "cancelled": counts["Cancelled"], "failedByCategory": by_category,
                  "pools": dict(sorted(pools.items()))}
    if waits:
        stats["averageWaitSeconds"] = round(sum(waits) / len(waits), 3)
    if runs:
        stats["averageProcessingSeconds"] = round(sum(runs) / len(runs), 3)
    return stats
