"""Per-tenant job quotas (concurrent jobs, jobs per rolling 24 h), counted from the TranscodeJobs themselves
by their tenant label with a quorum list, so every shim replica counts the same without a shared store.
Two replicas admitting at the same instant can overshoot by one each: quotas are a guard, not a ledger."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from .config import Tier
from .errors import ApiError
from .jobs import LABEL_TENANT, Obj, is_terminal, parse_time
from .kube import Kube
from .metrics import Metrics

DAY_SECONDS = 86400


def quota_usage(objs: Iterable[Obj], now: datetime) -> tuple[int, int, float | None]:
    """(active jobs, jobs created in the last 24 h, seconds until the oldest of those leaves the window)."""
    active = 0
    today: list[float] = []
    for obj in objs:
        meta = obj.get("metadata") or {}
        if not is_terminal(obj) and not meta.get("deletionTimestamp"):
            active += 1
        created = parse_time(meta.get("creationTimestamp"))
        if created is not None and (age := (now - created).total_seconds()) < DAY_SECONDS:
            today.append(age)
    frees_in = DAY_SECONDS - max(today) if today else None
    return active, len(today), frees_in


def check_quota(objs: Iterable[Obj], tier: Tier, now: datetime, daily: bool = True) -> ApiError | None:
    """daily=False for a retry: it makes a finished job active again but creates no job."""
    active, today, frees_in = quota_usage(objs, now)
    if daily and today >= tier.max_jobs_per_day:
        retry = str(max(1, int(frees_in or DAY_SECONDS)))
        return ApiError(429, "quota_exceeded", f"daily job quota reached ({tier.max_jobs_per_day} per 24 h)",
                        headers={"Retry-After": retry})
    if active >= tier.max_concurrent_jobs:
        return ApiError(429, "quota_exceeded",
                        f"concurrent job quota reached ({tier.max_concurrent_jobs} unfinished jobs)",
                        headers={"Retry-After": "30"})
    return None


async def enforce(kube: Kube, namespace: str, tenant: str, tier: Tier, metrics: Metrics, daily: bool = True) -> None:
    objs = await kube.list_jobs(namespace, f"{LABEL_TENANT}={tenant}")
    error = check_quota(objs, tier, datetime.now(UTC), daily)
    if error is not None:
        metrics.quota_rejections.labels("daily" if "daily" in error.message else "concurrent").inc()
        raise error
