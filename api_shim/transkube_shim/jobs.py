"""Pure functions between the REST API and TranscodeJob CRs: names, bodies, views, filters, pagination
cursors, retries and queue statistics. No I/O here."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from transkube_api.constants import API_VERSION, KIND, PREFIX
from transkube_api.models import TranscodeJobSpec

from .errors import ApiError

Obj = dict[str, Any]

LABEL_TENANT = f"{PREFIX}/tenant"
LABEL_CREATED_BY = f"{PREFIX}/created-by"
LABEL_RETRY_OF = f"{PREFIX}/retry-of"
ANNOTATION_RETRY_OF = f"{PREFIX}/retry-of"
ANNOTATION_IDEMPOTENCY_KEY = f"{PREFIX}/idempotency-key-sha256"
ANNOTATION_REQUEST_HASH = f"{PREFIX}/request-sha256"
CREATED_BY = "shim"

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
FILTER_PHASES = {"queued": "Pending", "pending": "Pending", "running": "Running", "suspended": "Suspended",
                 "succeeded": "Succeeded", "failed": "Failed", "cancelled": "Cancelled"}
MAX_IDEMPOTENCY_KEY = 255


def phase(obj: Obj) -> str:
    """A job's phase; one the operator has not seen yet is queued (Pending)."""
    return str((obj.get("status") or {}).get("phase") or "Pending")


def is_terminal(obj: Obj) -> bool:
    return phase(obj) in TERMINAL_PHASES


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


def cr_body(name: str, tenant: str, spec: TranscodeJobSpec, *, idempotency_key: str | None = None,
            retry_of: str | None = None) -> Obj:
    wire = spec.wire()
    labels = {LABEL_TENANT: tenant, LABEL_CREATED_BY: CREATED_BY}
    annotations = {ANNOTATION_REQUEST_HASH: request_hash(wire)}
    if idempotency_key is not None:
        annotations[ANNOTATION_IDEMPOTENCY_KEY] = hashlib.sha256(idempotency_key.encode()).hexdigest()
    if retry_of is not None:
        annotations[ANNOTATION_RETRY_OF] = retry_of
        if len(retry_of) <= 63:
            labels[LABEL_RETRY_OF] = retry_of
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": name, "labels": labels, "annotations": annotations}, "spec": wire}


def same_request(existing: Obj, spec: TranscodeJobSpec) -> bool:
    annotations = existing.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(ANNOTATION_REQUEST_HASH) == request_hash(spec.wire()))


def job_view(obj: Obj) -> Obj:
    """A CR -> the API's Job object (the `Job` model's wire form). Spec and status pass through as the API
    server stored them: its schema is generated from the same models."""
    meta = obj.get("metadata") or {}
    view: Obj = {
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "createdAt": meta.get("creationTimestamp", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
        "deleting": bool(meta.get("deletionTimestamp")),
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }
    retry_of = (meta.get("annotations") or {}).get(ANNOTATION_RETRY_OF)
    if retry_of:
        view["retryOf"] = retry_of
    return view


def parse_status_filter(raw: str | None) -> frozenset[str] | None:
    """?status=queued,running -> {"Pending", "Running"}."""
    if not raw:
        return None
    phases = set()
    for part in raw.split(","):
        key = part.strip().lower()
        if key not in FILTER_PHASES:
            raise ApiError(400, "invalid_parameter",
                           f"unknown status {part.strip()!r}; one of {', '.join(FILTER_PHASES)}", "status")
        phases.add(FILTER_PHASES[key])
    return frozenset(phases)


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


def paginate(objs: Iterable[Obj], limit: int, cursor: SortKey | None,
             phases: frozenset[str] | None = None) -> tuple[list[Obj], str | None]:
    """One page, newest first. The cursor names the last item served, so items created meanwhile never shift
    a page (they sort before it) and a deleted item never makes one skip another."""
    chosen = [o for o in objs if (phases is None or phase(o) in phases)
              and (cursor is None or _after(sort_key(o), cursor))]
    chosen.sort(key=lambda o: sort_key(o)[1])
    chosen.sort(key=lambda o: sort_key(o)[0], reverse=True)  # stable: equal times stay in name order
    page = chosen[:limit]
    token = encode_cursor(sort_key(page[-1])) if len(chosen) > limit else None
    return page, token


# ---- retry ------------------------------------------------------------------------------------------------

def retry_root(obj: Obj) -> str:
    """Retries of retries are named after the first job: web, web-retry-1, web-retry-2."""
    meta = obj.get("metadata") or {}
    return str((meta.get("annotations") or {}).get(ANNOTATION_RETRY_OF) or meta.get("name"))


def retry_name(root: str, attempt: int) -> str:
    suffix = f"-retry-{attempt}"
    return root[: 253 - len(suffix)] + suffix


def retry_spec(obj: Obj) -> TranscodeJobSpec:
    spec = dict(obj.get("spec") or {})
    spec["suspend"] = False
    spec["cancel"] = False
    return TranscodeJobSpec.model_validate(spec)


# ---- queue statistics -------------------------------------------------------------------------------------

def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def queue_stats(objs: Sequence[Obj]) -> Obj:
    counts = dict.fromkeys(("Pending", "Running", "Suspended", "Succeeded", "Failed", "Cancelled"), 0)
    waits: list[float] = []
    runs: list[float] = []
    for obj in objs:
        p = phase(obj)
        counts[p] = counts.get(p, 0) + 1
        status = obj.get("status") or {}
        created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
        started = parse_time(status.get("startTime"))
        completed = parse_time(status.get("completionTime"))
        if created and started:
            waits.append(max(0.0, (started - created).total_seconds()))
        if p == "Succeeded" and started and completed:
            runs.append(max(0.0, (completed - started).total_seconds()))
    stats: Obj = {"queued": counts["Pending"], "running": counts["Running"], "suspended": counts["Suspended"],
                  "succeeded": counts["Succeeded"], "failed": counts["Failed"], "cancelled": counts["Cancelled"]}
    if waits:
        stats["averageWaitSeconds"] = round(sum(waits) / len(waits), 3)
    if runs:
        stats["averageProcessingSeconds"] = round(sum(runs) / len(runs), 3)
    return stats

