"""Prometheus metrics of the operator."""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended")

JOBS = Gauge("transkube_transcodejobs", "TranscodeJobs known to this operator, by phase.", ["phase"])
DURATION = Histogram(
    "transkube_transcodejob_duration_seconds", "Creation to final phase of TranscodeJobs, by final phase.",
    ["phase"], buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400),
)
RECONCILE_ERRORS = Counter("transkube_reconcile_errors_total", "Reconciles that raised, by exception type.", ["error"])
RECONCILES = Counter("transkube_reconciles_total", "Reconciles run.")

_phases: dict[str, str] = {}
_lock = threading.Lock()
for _p in PHASES:
    JOBS.labels(_p).set(0)


def observe_phase(uid: str, phase: str | None) -> None:
    """Records the phase of one TranscodeJob (None when it is gone) and refreshes the gauge."""
    with _lock:
        if phase is None:
            _phases.pop(uid, None)
        else:
            _phases[uid] = phase
        counts = dict.fromkeys(PHASES, 0)
        for p in _phases.values():
            counts[p] = counts.get(p, 0) + 1
    for p, n in counts.items():
        JOBS.labels(p).set(n)
