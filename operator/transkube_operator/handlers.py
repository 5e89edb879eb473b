"""kopf handlers: thin. Every event about a TranscodeJob, its Job or its pods leads to one reconcile:
read the current objects, ask reconcile.plan() what to do, do it."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server
from transkube_api.constants import (
    GROUP,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    PREFIX,
    REASON_QUOTA_EXCEEDED,
    VERSION,
)

from . import delivery, metrics, queue, webhooks
from .config import OperatorConfig
from .jobspec import worker_rbac
from .k8s import Kube
from .reconcile import (
    TERMINAL,
    CreateJob,
    DeletePod,
    DeleteTranscodeJob,
    parse_time,
    plan,
    presets_needed,
    rfc3339_precise,
)

Log = logging.Logger | logging.LoggerAdapter[Any]
CFG = OperatorConfig.from_env()
_kube: Kube | None = None
# One reconcile at a time per TranscodeJob: events for it, its Job and its pods arrive concurrently.
_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
WEBHOOKS = webhooks.WebhookConfig(retry_schedule=CFG.webhooks.retry_schedule)
POLICY = delivery.DeliveryPolicy(allowed_cidrs=CFG.webhooks.allowed_cidrs, allow_http=CFG.webhooks.allow_http,
                                 total_timeout=CFG.webhooks.timeout_seconds,
                                 connect_timeout=min(5.0, CFG.webhooks.timeout_seconds),
                                 max_response_bytes=CFG.webhooks.max_response_bytes)
ADMISSION_MIN_INTERVAL = 0.5  # seconds between two admission passes, however many events poke it
ADMISSION_MAX_INTERVAL = 5.0  # a pass at least this often (aging, missed pokes)


class Wakeups:
    """Reconciles a TranscodeJob at a time its plan named (retry backoff end, stall deadline, webhook retry,
    retention), sooner than the resync timer would."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, str]] = []
        # The earliest wake-up pending per job: every progress write re-plans a stall deadline, and one
        # wake-up per job is enough (the reconcile it runs plans the next one).
        self._due: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()

    def at(self, when: dt.datetime, namespace: str, name: str) -> None:
        at, key = when.timestamp(), (namespace, name)
        with self._cond:
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, namespace, name))
            self._cond.notify()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.time():
                    self._cond.wait(timeout=None if not self._heap else max(0.0, self._heap[0][0] - time.time()))
                at, namespace, name = heapq.heappop(self._heap)
                if self._due.get((namespace, name)) != at:
                    continue  # superseded by an earlier wake-up, which already ran
                del self._due[(namespace, name)]
            try:
                reconcile(namespace, name, logging.getLogger("transkube.wakeup"))
            except Exception:  # the resync timer retries; keep the thread alive
                logging.getLogger("transkube.wakeup").exception("reconcile at wake-up failed")


_wakeups = Wakeups()
_admission_poke = threading.Event()


def kube() -> Kube:
    assert _kube is not None, "operator not started"
    return _kube


# A replaced pod may hold the metrics port for a few seconds while it terminates (hostNetwork-like dev nodes,
# or a quick delete): retry every second, not kopf's default minute.
@kopf.on.startup(backoff=1)
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
    threading.Thread(target=_wakeups.run, name="wakeups", daemon=True).start()
    threading.Thread(target=admission_loop, name="admission", daemon=True).start()
    logger.info("transkube operator started: worker image %s, metrics on :%d", CFG.worker_image, CFG.metrics_port)


def reconcile(namespace: str | None, name: str, logger: Log, refusal: tuple[str, str] | None = None) -> None:
    assert namespace, "TranscodeJobs are namespaced"
    k = kube()
    with _locks[(namespace, name)]:
        tj = k.get_tj(namespace, name)
        if tj is None:
            return
        uid = tj["metadata"]["uid"]
        status: dict[str, Any] = tj.get("status") or {}
        metrics.RECONCILES.inc()
        try:
            jobs = k.owned_jobs(namespace, name, uid)
            pods = k.worker_pods(namespace, name)
            presets = {p: k.get_preset(p) for p in presets_needed(tj)}
            now = dt.datetime.now(dt.UTC)
            result = plan(tj, jobs, pods, CFG, now, presets, refusal=refusal)
            after = {k_: v for k_, v in {**status, **result.status_patch}.items() if v is not None}
            # The webhook outbox rides in the same status patch as the phase change it reports.
            outbox = webhooks.outbox_update(tj, status, after, now, WEBHOOKS)
            result.status_patch.update(outbox)
            after.update(outbox)
            if CFG.manage_worker_rbac and any(isinstance(a, CreateJob) for a in result.actions):
                k.ensure_worker_rbac(worker_rbac(namespace, CFG))
            for action in result.actions:
                if isinstance(action, DeleteTranscodeJob):
                    continue
                logger.info("action: %s", type(action).__name__)
                k.apply(namespace, uid, action, name)
                if isinstance(action, DeletePod):
                    metrics.STALLS.inc()
            if result.status_patch:
                k.patch_status(namespace, name, result.status_patch)
            if result.labels_patch:
                k.patch_labels(namespace, name, result.labels_patch)
            for event in result.events:
                k.post_event(tj, event)
            after = deliver_due(k, tj, after, logger)
            if any(isinstance(a, DeleteTranscodeJob) for a in result.actions):
                k.apply(namespace, uid, DeleteTranscodeJob(), name)
                return
        except Exception as exc:
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            raise
        wake = [t for t in (result.wake_at, webhooks.next_due(after)) if t is not None]
        if wake:
            _wakeups.at(max(min(wake), dt.datetime.now(dt.UTC)) + dt.timedelta(milliseconds=200), namespace, name)
        old_phase = status.get("phase")
        if result.phase != old_phase or result.phase == "Queued":
            _admission_poke.set()
        if refusal and result.phase == "Failed" and old_phase != "Failed":
            metrics.QUOTA_REFUSALS.labels(namespace).inc()
        metrics.observe_phase(uid, result.phase)
        metrics.record(metrics.observations(tj, result.phase, result.status_patch,
                                            [(e.reason, e.message) for e in result.events], dt.datetime.now(dt.UTC)))
        if result.phase in TERMINAL and old_phase not in TERMINAL:
            created = parse_time(tj["metadata"].get("creationTimestamp"))
            if created:
                elapsed = (dt.datetime.now(dt.UTC) - created).total_seconds()
                metrics.DURATION.labels(result.phase).observe(elapsed)


def deliver_due(k: Kube, tj: dict[str, Any], status: dict[str, Any], logger: Log) -> dict[str, Any]:
    """POSTs the webhook deliveries that are due, recording each result in status right after it."""
    meta = tj["metadata"]
    subs = {w["name"]: w for w in (tj.get("spec") or {}).get("webhooks") or []}
    secrets: dict[tuple[str, str], str | None] = {}  # one read per Secret key per pass, however many are due
    for entry in webhooks.due(status, dt.datetime.now(dt.UTC)):
        sub = subs.get(entry["webhook"])
        if sub is None:
            continue
        ref = sub.get("secretRef") or {}
        where = (ref.get("name", ""), ref.get("key") or "secret")
        if where not in secrets:
            secrets[where] = k.secret_value(meta["namespace"], *where)
        secret = secrets[where]
        now = dt.datetime.now(dt.UTC)
        if secret is None:
            patch = webhooks.record_failure(status, entry["id"], "SecretNotFound",
                                            f"Secret {ref.get('name')} has no key {ref.get('key') or 'secret'}",
                                            now, WEBHOOKS)
            result_reason = "SecretNotFound"
        else:
            body = webhooks.event_body(entry)
            try:
                hdrs = delivery.headers(secret, entry["id"], int(time.time()), body)
            except ValueError as exc:  # not base64: the secret is unusable until fixed
                patch = webhooks.record_failure(status, entry["id"], "InvalidSecret", str(exc)[:200], now, WEBHOOKS)
                result_reason = "InvalidSecret"
            else:
                result = delivery.post(sub["url"], body, hdrs, POLICY)
                result_reason = result.reason
                logger.info("webhook %s %s -> %s %s", entry["webhook"], entry["type"], result.status, result.reason)
                patch = webhooks.record_result(status, entry["id"], result, dt.datetime.now(dt.UTC), WEBHOOKS)
        metrics.WEBHOOK_DELIVERIES.labels(result_reason).inc()
        if patch:
            k.patch_status(meta["namespace"], meta["name"], patch)
            status = {**status, **patch}
    return status


def admission_loop() -> None:
    """The one place that admits: LIST every TranscodeJob, decide (queue.decide), patch status.queue.
    A single thread, so two admissions never race for the last slot."""
    log = logging.getLogger("transkube.admission")
    while True:
        _admission_poke.wait(timeout=ADMISSION_MAX_INTERVAL)
        _admission_poke.clear()
        try:
            admission_pass(log)
        except Exception:
            log.exception("admission pass failed")
        time.sleep(ADMISSION_MIN_INTERVAL)


def admission_pass(log: logging.Logger) -> None:
    k = kube()
    tjs = k.list_tjs()
    now = dt.datetime.now(dt.UTC)
    sched = CFG.scheduling
    decision = queue.decide(tjs, sched, now)
    failed = Counter(str((tj.get("status") or {}).get("failureCategory") or "Internal") for tj in tjs
                     if (tj.get("status") or {}).get("phase") == "Failed")
    metrics.record_queue(dict(decision.queued), dict(decision.running),
                         {name: pool.capacity for name, pool in sched.pools.items()}, dict(failed))
    if sched.mode != "builtin":
        return
    for (namespace, name), message in decision.refuse.items():
        log.info("refusing %s/%s: %s", namespace, name, message)
        reconcile(namespace, name, log, refusal=(REASON_QUOTA_EXCEEDED, message))
    for namespace, name in decision.admit:
        with _locks[(namespace, name)]:
            log.info("admitting %s/%s", namespace, name)
            _patch_queue(k, namespace, name, {"admittedTime": rfc3339_precise(now), "position": None,
                                               "reason": None})
    for (namespace, name), (position, reason) in decision.positions.items():
        with _locks[(namespace, name)]:
            _patch_queue(k, namespace, name, {"position": position, "reason": reason})


def _patch_queue(k: Kube, namespace: str, name: str, queue_patch: dict[str, Any]) -> None:
    try:
        k.patch_status(namespace, name, {"queue": queue_patch})
    except ApiException as e:  # gone meanwhile
        if e.status != 404:
            raise


@kopf.on.event(GROUP, VERSION, PLURAL)
def on_transcodejob(event: kopf.RawEvent, namespace: str | None, name: str, uid: str, logger: Log,
                    **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.observe_phase(uid, None)
        _locks.pop((namespace or "", name), None)
        _admission_poke.set()  # a deleted job may have held a slot
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
