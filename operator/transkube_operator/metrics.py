"""Prometheus metrics of the operator."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any, get_args

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from transkube_api.models import FailureCategory, Phase

PHASES: tuple[str, ...] = get_args(Phase)

JOBS = Gauge("transkube_transcodejobs", "TranscodeJobs known to this operator, by phase.", ["phase"])
DURATION = Histogram(
    "transkube_transcodejob_duration_seconds", "Creation to final phase of TranscodeJobs, by final phase.",
    ["phase"], buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
RECONCILE_ERRORS = Counter("transkube_reconcile_errors_total", "Reconciles that raised, by exception type.", ["error"])
RECONCILES = Counter("transkube_reconciles_total", "Reconciles run.")
# The operator's own load on the API server and how fast it keeps up (issue 12's breakdown, live).
API_REQUESTS = Counter("transkube_operator_api_requests", "Requests this operator made to the Kubernetes API "
                       "(its informers' lists and watches included), by verb, resource and response code.",
                       ["verb", "resource", "code"])
RECONCILE_SECONDS = Histogram("transkube_operator_reconcile_duration_seconds", "Time one reconcile took, "
                              "including its API writes.",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
EVENT_LAG = Histogram("transkube_operator_event_lag_seconds", "From a watch event (or a due timer) to the start "
                      "of the reconcile it asked for: the work queue's lag.",
                      buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CACHED_OBJECTS = Gauge("transkube_operator_cached_objects", "Jobs and worker pods held (slim) by the operator's "
                       "informers.", ["resource"])
WATCH_RESTARTS = Counter("transkube_operator_watch_restarts", "Informer watches restarted: `expired` (410, so a "
                         "fresh list) or `error` (the API server unreachable or failing).", ["resource", "reason"])
QUEUE_DEPTH = Gauge("transkube_operator_workqueue_depth", "Keys waiting in the work queue (ready, and on "
                    "timers).", ["state"])

LEADER = Gauge("transkube_operator_leader", "1 while this replica holds the leader Lease and reconciles; 0 while "
               "it stands by.")

_serving = threading.Event()


def serve(port: int) -> None:
    """Serves /metrics on port from a background thread, once per process however often it is called (a standby
    serves it while it waits, and keeps it when it leads). A port still held by a pod being replaced (the dev
    cluster's pods share the host's network) is retried every second."""
    if _serving.is_set():
        return
    _serving.set()

    def bind() -> None:
        while True:
            try:
                start_http_server(port)
                return
            except OSError:
                threading.Event().wait(1.0)

    threading.Thread(target=bind, name="metrics-bind", daemon=True).start()


_phases: dict[str, str] = {}
_counts: dict[str, int] = dict.fromkeys(PHASES, 0)
_lock = threading.Lock()
for _p in PHASES:
    JOBS.labels(_p).set(0)


def observe_phase(uid: str, phase: str | None) -> None:
    """Records the phase of one TranscodeJob (None when it is gone) and updates the gauge (O(1))."""
    with _lock:
        old = _phases.pop(uid, None) if phase is None else _phases.get(uid)
        if phase is not None:
            _phases[uid] = phase
        if old == phase:
            return
        for p, step in ((old, -1), (phase, 1)):
            if p is not None:
                _counts[p] = _counts.get(p, 0) + step
                JOBS.labels(p).set(_counts[p])


# ---- lifecycle metrics: what a reconcile's plan says happened, as pure observations -------------------

_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
QUEUE_WAIT = Histogram(
    "transkube_queue_wait_seconds", "Creation to the first worker pod running, by profile and accelerator.",
    ["profile", "accelerator"], buckets=_WAIT_BUCKETS,
)
RUN_TIME = Histogram(
    "transkube_run_seconds", "First attempt's start to the final phase, by profile, accelerator and final phase.",
    ["profile", "accelerator", "phase"], buckets=_WAIT_BUCKETS,
)
ENCODE_SPEED = Histogram(
    "transkube_encode_speed_ratio", "Seconds of input media per second of run time of succeeded jobs, by profile.",
    ["profile", "accelerator"], buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
RETRIES = Counter("transkube_retries_total", "Attempts started after a failed one, by the failure's reason.",
                  ["reason"])
FAILURES = Counter("transkube_failures_total", "TranscodeJobs that ended Failed, by reason.", ["reason"])
FALLBACKS = Counter("transkube_gpu_fallbacks_total", "GPU jobs moved to CPU after no GPU node took them.")


@dataclass(frozen=True)
class Observation:
    metric: str  # queue_wait | run_time | encode_speed | retry | failure | fallback
    labels: tuple[tuple[str, str], ...] = ()
    value: float = 1.0


def profile_of(tj: dict[str, Any]) -> str:
    """A job's profile: the preset its outputs share, else "custom" (bounded cardinality)."""
    presets = {o.get("preset") for o in (tj.get("spec") or {}).get("outputs") or []}
    return str(next(iter(presets))) if len(presets) == 1 and None not in presets else "custom"


def observations(tj: dict[str, Any], phase: str, patch: dict[str, Any], events: list[tuple[str, str]],
                 now: dt.datetime) -> list[Observation]:
    """Pure: what to record for one reconcile of `tj` (its status before) that planned `phase`/`patch`/events."""
    status = tj.get("status") or {}
    merged = {**status, **patch}
    profile = profile_of(tj)
    accel = str((merged.get("accelerator") or {}).get("effective") or "cpu")
    base = (("profile", profile), ("accelerator", accel))
    created = _time(tj["metadata"].get("creationTimestamp"))
    out: list[Observation] = []
    reasons = [reason for reason, _ in events]
    if "Started" in reasons and int(merged.get("attempts") or 0) <= 1 and created:
        out.append(Observation("queue_wait", base, (now - created).total_seconds()))
    for reason, message in events:
        if reason == "Retrying":
            why = message.split(" after ", 1)[1].split(":", 1)[0] if " after " in message else "Unknown"
            out.append(Observation("retry", (("reason", why),)))
        elif reason == "FallbackToCPU":
            out.append(Observation("fallback"))
    terminal = ("Succeeded", "Failed", "Cancelled")
    if phase in terminal and status.get("phase") not in terminal:
        started = _time(merged.get("startTime"))
        if started:
            seconds = max((now - started).total_seconds(), 0.0)
            out.append(Observation("run_time", (*base, ("phase", phase)), seconds))
            media = (merged.get("input") or {}).get("durationSeconds")
            if phase == "Succeeded" and media and seconds > 0:
                out.append(Observation("encode_speed", base, float(media) / seconds))
        if phase == "Failed":
            out.append(Observation("failure", (("reason", str(merged.get("reason") or "Unknown")),)))
    return out


def record(obs: list[Observation]) -> None:
    for o in obs:
        labels = dict(o.labels)
        if o.metric == "queue_wait":
            QUEUE_WAIT.labels(**labels).observe(o.value)
        elif o.metric == "run_time":
            RUN_TIME.labels(**labels).observe(o.value)
        elif o.metric == "encode_speed":
            ENCODE_SPEED.labels(**labels).observe(o.value)
        elif o.metric == "retry":
            RETRIES.labels(**labels).inc()
        elif o.metric == "failure":
            FAILURES.labels(**labels).inc()
        elif o.metric == "fallback":
            FALLBACKS.inc()


def _time(value: Any) -> dt.datetime | None:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


# ---- scheduling and lifecycle: set by the admission pass from the in-memory index of TranscodeJobs -------

POOL_QUEUED = Gauge("transkube_pool_queued", "TranscodeJobs waiting for admission, by pool.", ["pool"])
POOL_RUNNING = Gauge("transkube_pool_admitted", "Admitted TranscodeJobs holding a pool slot, by pool.", ["pool"])
POOL_CAPACITY = Gauge("transkube_pool_capacity", "Slots per pool (operator config).", ["pool"])
DEAD_LETTERS = Gauge("transkube_failed_transcodejobs", "Failed TranscodeJobs (the dead-letter view), by failure "
                     "category.", ["category"])
QUOTA_REFUSALS = Counter("transkube_quota_refusals_total", "TranscodeJobs refused by a namespace quota.",
                         ["namespace"])
STALLS = Counter("transkube_stalled_attempts_total", "Attempts killed by the stall watchdog.")
WEBHOOK_DELIVERIES = Counter("transkube_webhook_deliveries_total", "Webhook POSTs made (or refused before "
                             "connecting), by result reason.", ["result"])
FAILURE_CATEGORIES: tuple[str, ...] = get_args(FailureCategory)


def record_queue(queued: dict[str, int], running: dict[str, int], capacity: dict[str, int],
                 failed_by_category: dict[str, int]) -> None:
    for pool, cap in capacity.items():
        POOL_CAPACITY.labels(pool).set(cap)
        POOL_QUEUED.labels(pool).set(queued.get(pool, 0))
        POOL_RUNNING.labels(pool).set(running.get(pool, 0))
    for category in FAILURE_CATEGORIES:
        DEAD_LETTERS.labels(category).set(failed_by_category.get(category, 0))
