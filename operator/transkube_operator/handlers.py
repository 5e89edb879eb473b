"""kopf handlers: thin. Every event about a TranscodeJob, its Job or its pods leads to one reconcile:
read the current objects, ask reconcile.plan() what to do, do it."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import config as kube_config
from prometheus_client import start_http_server
from transkube_api.constants import GROUP, LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, PREFIX, VERSION

from . import metrics
from .config import OperatorConfig
from .jobspec import worker_rbac
from .k8s import Kube
from .reconcile import TERMINAL, CreateJob, parse_time, plan, presets_needed

Log = logging.Logger | logging.LoggerAdapter[Any]
CFG = OperatorConfig.from_env()
_kube: Kube | None = None
# One reconcile at a time per TranscodeJob: events for it, its Job and its pods arrive concurrently.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def kube() -> Kube:
    assert _kube is not None, "operator not started"
    return _kube


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, logger: Log, **_: Any) -> None:
    global _kube
    # kopf's own bookkeeping lives in annotations under our prefix; status stays ours.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.execution.max_workers = 16
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    _kube = Kube()
    start_http_server(CFG.metrics_port)
    logger.info("transkube operator started: worker image %s, metrics on :%d", CFG.worker_image, CFG.metrics_port)


def reconcile(namespace: str | None, name: str, logger: Log) -> None:
    assert namespace, "TranscodeJobs are namespaced"
    k = kube()
    with _locks[(namespace, name)]:
        tj = k.get_tj(namespace, name)
        if tj is None:
            return
        uid = tj["metadata"]["uid"]
        metrics.RECONCILES.inc()
        try:
            jobs = k.owned_jobs(namespace, name, uid)
            pods = k.worker_pods(namespace, name)
            presets = {p: k.get_preset(p) for p in presets_needed(tj)}
            result = plan(tj, jobs, pods, CFG, dt.datetime.now(dt.UTC), presets)
            if CFG.manage_worker_rbac and any(isinstance(a, CreateJob) for a in result.actions):
                k.ensure_worker_rbac(worker_rbac(namespace, CFG))
            for action in result.actions:
                logger.info("action: %s", type(action).__name__)
                k.apply(namespace, uid, action)
            if result.status_patch:
                k.patch_status(namespace, name, result.status_patch)
            for event in result.events:
                k.post_event(tj, event)
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            raise
        old_phase = (tj.get("status") or {}).get("phase")
        metrics.observe_phase(uid, result.phase)
        metrics.record(metrics.observations(tj, result.phase, result.status_patch,
                                            [(e.reason, e.message) for e in result.events], dt.datetime.now(dt.UTC)))
        if result.phase in TERMINAL and old_phase not in TERMINAL:
            created = parse_time(tj["metadata"].get("creationTimestamp"))
            if created:
                elapsed = (dt.datetime.now(dt.UTC) - created).total_seconds()
                metrics.DURATION.labels(result.phase).observe(elapsed)


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_transcodejob(event: kopf.RawEvent, namespace: str | None, name: str, uid: str, logger: Log,
                    **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.observe_phase(uid, None)
        _locks.pop((namespace or "", name), None)
        return
    reconcile(namespace, name, logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: kopf.PRESENT})
def on_job(namespace: str | None, labels: Mapping[str, str], logger: Log, **_: Any) -> None:
    reconcile(namespace, labels[LABEL_JOB], logger)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: kopf.PRESENT})
def on_pod(namespace: str | None, labels: Mapping[str, str], logger: Log, **_: Any) -> None:
    reconcile(namespace, labels[LABEL_JOB], logger)


def _in_flight(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL


# A periodic resync: time-based decisions (GPU fallback) and recovery from a failed reconcile.
@kopf.timer(GROUP, VERSION, PLURAL, interval=10, when=_in_flight)
def resync(namespace: str | None, name: str, logger: Log, **_: Any) -> None:
    reconcile(namespace, name, logger)
