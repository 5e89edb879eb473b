"""The operator's runtime: thin, and cheap for the API server at any number of TranscodeJobs.

- Reads come from memory. Informers (informer.py: a paged list, then a watch) keep slim projections of
  TranscodeJobs (for admission), their Jobs and worker pods, and TranscodePresets, and each job's body as
  compact JSON for its reconcile. No reconcile starts before every one holds its first listing, and admission
  waits for the whole queue, so nothing decides on a half-filled cache. kopf runs the process: signals,
  startup and cleanup, /healthz and JSON logs.
- Every event becomes a key in one work queue (workqueue.py): events coalesce, one key is never reconciled
  twice at once, and time-based decisions (retry backoff, stall deadline, GPU fallback, retention, webhook
  retries, error retries) are timers on the same queue. Nothing polls per object.
- A reconcile reads its inputs from memory on the event loop, then runs reconcile.plan() and the writes it
  asks for on a small thread pool (the Kubernetes client is synchronous), and takes its own writes back into
  memory from the API server's answers, so it never repeats one.
- Admission runs in memory over the TranscodeJobs' slim entries: no LIST. Its decisions reach status through
  the job's own reconcile, status.queue's one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import config as kube_config
from transkube_api.constants import (
    API_VERSION,
    KIND,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    PRESET_PLURAL,
    REASON_QUOTA_EXCEEDED,
)
from transkube_api.models import AcceleratorSpec

from . import cache, delivery, k8s, leader, metrics, queue, webhooks
from .cache import Key, Obj
from .config import OperatorConfig
from .informer import Children, Informer, Named
from .jobspec import worker_rbac
from .k8s import Kube
from .queue import Admission
from .reconcile import (
    TERMINAL,
    CreateJob,
    DeleteJob,
    DeletePod,
    DeleteTranscodeJob,
    Plan,
    SetJobSuspend,
    enqueue_time,
    parse_time,
    plan,
    pool_for,
    presets_needed,
    rfc3339_precise,
)
from .workqueue import WorkQueue

DEFAULT_ACCELERATOR: str = AcceleratorSpec.model_fields["type"].default

Log = logging.Logger | logging.LoggerAdapter[Any]
log = logging.getLogger("transkube.operator")
CFG = OperatorConfig.from_env()
WEBHOOKS = webhooks.WebhookConfig(retry_schedule=CFG.webhooks.retry_schedule)
POLICY = delivery.DeliveryPolicy(allowed_cidrs=CFG.webhooks.allowed_cidrs, allow_http=CFG.webhooks.allow_http,
                                 total_timeout=CFG.webhooks.timeout_seconds,
                                 connect_timeout=min(5.0, CFG.webhooks.timeout_seconds),
                                 max_response_bytes=CFG.webhooks.max_response_bytes)
WORKERS = 16  # reconciles in flight at once (threads: the Kubernetes client blocks on the API server's answers)
DELIVERERS = 4  # webhook POSTs in flight at once, apart from reconciles: a slow receiver delays only its own
ADMISSION_MIN_INTERVAL = 0.5  # seconds between two admission passes, however many events poke it
ADMISSION_MAX_INTERVAL = 5.0  # a pass at least this often while jobs wait (aging); in memory, no API calls
WATCH_NAMESPACES: list[str] = []  # set by main from --namespace; empty: the whole cluster
WRITTEN_TTL = 120.0  # seconds a remembered write may wait for the watch to catch up before it is dropped


@dataclass
class Runtime:
    """The operator's in-memory state. Touched only on the event loop."""

    kube: Kube | None = None
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    deliveries: WorkQueue[Key] = field(default_factory=WorkQueue)  # jobs with webhook deliveries due
    bodies: cache.Bodies = field(default_factory=cache.Bodies)  # TranscodeJobs as of their latest event or write
    written_jobs: dict[Key, dict[str, tuple[float, Obj]]] = field(default_factory=dict)  # our Job writes
    admission: dict[Key, Obj] = field(default_factory=dict)  # decided, not yet seen in the index
    refusals: dict[Key, tuple[str, str]] = field(default_factory=dict)
    rbac_ready: set[str] = field(default_factory=set)  # namespaces whose worker RBAC exists
    queue_state: Admission = field(default_factory=Admission)  # the entries, decisions overlaid
    position_written: dict[Key, float] = field(default_factory=dict)  # monotonic time of its last position
    provisional: set[Key] = field(default_factory=set)  # first-sight places no pass has checked yet
    entries: dict[Key, Obj] = field(default_factory=dict)  # admission's slim view of each TranscodeJob
    # The informers (informer.py), started by startup(): what the operator reads, fed by list+watch.
    preset_specs: Named = field(default_factory=Named)  # name -> preset (cache.preset_entry)
    presets: Informer[Obj] | None = None
    tjs: Informer[cache.Packed] | None = None
    jobs: Informer[Obj] | None = None
    pods: Informer[Obj] | None = None
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # admission has something to look at
    executor: ThreadPoolExecutor | None = None
    delivery_executor: ThreadPoolExecutor | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def informers(self) -> list[Informer[Any]]:
        return [i for i in (self.presets, self.tjs, self.jobs, self.pods) if i is not None]

    def children(self, informer: Informer[Obj] | None, key: Key) -> list[Obj]:
        assert informer is not None and isinstance(informer.sink, Children)
        return informer.sink.store.children(key)


RT = Runtime()


def about(key: Key, uid: str | None = None) -> dict[str, Any]:
    """A log line's `extra` naming its TranscodeJob: kopf's JSON formatter writes it as the line's "object", as
    for kopf's own per-object lines, so `kubectl logs ... | jq 'select(.object.name == "x")'` finds them."""
    return {"k8s_ref": {"apiVersion": API_VERSION, "kind": KIND, "name": key[1], "namespace": key[0], "uid": uid},
            "k8s_skip": True}


def kube() -> Kube:
    assert RT.kube is not None, "operator not started"
    return RT.kube


# ---- what the informers hand over, on the loop ---------------------------------------------------------------

class TranscodeJobs:
    """The TranscodeJob informer's sink: each job's compact body (for its reconcile) and slim entry (for
    admission); every change becomes a key in the work queue."""

    def listed(self, namespace: str, items: list[cache.Packed]) -> None:
        """A whole listing (at start, or after the watch expired): jobs not in it are gone."""
        present = {item.key for item in items}
        for key in [k for k in RT.bodies if k not in present and (not namespace or k[0] == namespace)]:
            held = RT.bodies.identity(key)
            forget(key, held[0] if held else None)
        for item in items:
            self.event("ADDED", item)
        RT.poke.set()

    def event(self, kind: str, item: cache.Packed) -> None:
        key = item.key
        if kind == "DELETED":
            forget(key, item.uid)
            return
        held = RT.bodies.identity(key)
        if held is not None and held[0] != item.uid:  # deleted and created again under the same name
            forget(key, held[0])
            held = None
        RT.entries[key] = item.entry
        refresh_queue(key)
        if held is not None and held[1] >= item.resource_version:
            return  # our own write coming back: the reconcile that made it already saw it
        RT.bodies.put_packed(item)
        RT.queue.add(key, urgent=not item.phase)


def on_child(key: Key) -> None:
    """A Job or worker pod of this TranscodeJob changed."""
    if key in RT.bodies:
        RT.queue.add(key)


def start_informers() -> None:
    """Presets, TranscodeJobs, and the Jobs and worker pods the operator made, each on its own list+watch."""
    namespaces = list(WATCH_NAMESPACES)
    children = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB}"
    RT.presets = Informer(PRESET_PLURAL, cache.preset_entry, RT.preset_specs)
    RT.tjs = Informer(PLURAL, cache.pack, TranscodeJobs(), namespaces=namespaces)
    RT.jobs = Informer("jobs", cache.slim_job, Children("jobs", on_child), children, namespaces)
    RT.pods = Informer("pods", cache.slim_pod, Children("pods", on_child), children, namespaces)
    api = k8s.api_client(4 * (len(namespaces) or 1))  # its own pool: each stream holds a connection for minutes
    for informer in RT.informers():
        informer.start(api)


def refresh_queue(key: Key) -> None:
    """Admission's view of one job: its slim entry with a decision not written yet overlaid (so a slot is
    never given twice); the overlay goes once the job's status shows it."""
    entry = RT.entries.get(key)
    if entry is None:
        RT.queue_state.remove(key)
        return
    pending = RT.admission.get(key)
    if pending is not None and cache.decision_written(entry, pending):
        del RT.admission[key]
        pending = None
    RT.queue_state.upsert(queue.entry_of(cache.queue_view(entry, pending)))


# ---- startup ---------------------------------------------------------------------------------------------

@kopf.on.startup(backoff=1)
async def startup(settings: kopf.OperatorSettings, logger: Log, **_: Any) -> None:
    # kopf runs the process (signals, startup and cleanup, /healthz, JSON logs); it watches nothing itself, not
    # even CRDs (its scan for resources to serve: there are none).
    settings.posting.level = logging.WARNING
    settings.scanning.disabled = True
    if not RT.tasks:  # once, however many times a failed startup is retried
        metrics.serve(CFG.metrics_port)  # already serving when this replica stood by first
        metrics.LEADER.set(1)  # only the replica that reconciles gets here
        if not CFG.leader_election.enabled:
            leader.LEADING.set()
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
        RT.kube = Kube(k8s.api_client(WORKERS + DELIVERERS))
        RT.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="reconcile")
        start_informers()
        RT.delivery_executor = ThreadPoolExecutor(DELIVERERS, thread_name_prefix="deliver")
        RT.tasks = [asyncio.create_task(RT.queue.run_timers(), name="timers"),
                    asyncio.create_task(RT.deliveries.run_timers(), name="delivery-timers"),
                    asyncio.create_task(admission_loop(), name="admission"),
                    *(asyncio.create_task(worker(), name=f"worker-{i}") for i in range(WORKERS)),
                    *(asyncio.create_task(deliverer(), name=f"deliverer-{i}") for i in range(DELIVERERS))]
    logger.info("transkube operator started: worker image %s, metrics on :%d", CFG.worker_image, CFG.metrics_port)


@kopf.on.cleanup()
async def cleanup(logger: Log, **_: Any) -> None:
    """On a graceful stop (SIGTERM): stop our loops and wait for the writes already in flight, so that when
    main() then releases the leader Lease no reconcile of ours is still running (and kopf need not wait
    5 s for tasks it does not know)."""
    for informer in RT.informers():
        informer.stop()
    for task in RT.tasks:
        task.cancel()
    await asyncio.gather(*RT.tasks, return_exceptions=True)
    for executor in (RT.executor, RT.delivery_executor):
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
    logger.info("transkube operator stopped its workers")


# ---- events: each one is a key in the work queue ---------------------------------------------------------

def forget(key: Key, uid: str | None) -> None:
    RT.bodies.pop(key)
    RT.entries.pop(key, None)
    RT.written_jobs.pop(key, None)
    RT.admission.pop(key, None)
    RT.queue_state.remove(key)
    RT.position_written.pop(key, None)
    RT.provisional.discard(key)
    RT.refusals.pop(key, None)
    RT.queue.discard_timer(key)
    RT.deliveries.discard_timer(key)
    if uid:
        metrics.observe_phase(uid, None)
    RT.poke.set()  # a deleted job may have held a slot


# ---- the reconcile: inputs from memory, decisions pure, writes on a thread -------------------------------

@dataclass(frozen=True)
class Inputs:
    key: Key
    tj: Obj
    jobs: list[Obj]
    pods: list[Obj]
    presets: dict[str, Obj | None]
    admission: Obj | None
    refusal: tuple[str, str] | None
    ensure_rbac: bool


@dataclass
class Outcome:
    plan: Plan
    status: Obj  # status after this reconcile's writes
    body: Obj | None = None  # the TranscodeJob as the API server answered our last write to it
    jobs: dict[str, Obj] = field(default_factory=dict)  # Jobs as the API server answered our writes
    deleted_jobs: list[str] = field(default_factory=list)
    rbac_ready: bool = False
    deleted: bool = False


def snapshot(key: Key) -> Inputs | None:
    """Everything one reconcile reads, from memory (on the event loop, where the indexes change)."""
    tj = RT.bodies.get(key)
    if tj is None:
        return None
    uid = tj["metadata"]["uid"]
    written = RT.written_jobs.get(key, {})
    watched = RT.children(RT.jobs, key)
    if written:
        now = time.monotonic()
        for name in cache.stale_writes(watched, {n: o for n, (_, o) in written.items()}):
            written.pop(name, None)
        for name in [n for n, (t, _) in written.items() if now - t > WRITTEN_TTL]:
            written.pop(name, None)
    jobs = [j for j in cache.merge_children(watched, {n: o for n, (_, o) in written.items()})
            if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])]
    pods = sorted(RT.children(RT.pods, key), key=lambda p: p["metadata"]["name"])
    presets = {p: dict(v) if (v := RT.preset_specs.get(p)) is not None else None for p in presets_needed(tj)}
    if key not in RT.admission and not ((tj.get("status") or {}).get("queue") or {}).get("pool"):
        decided = first_sight(tj)
        if decided is not None:
            RT.admission[key] = decided
            refresh_queue(key)
            if "position" in decided:
                RT.position_written[key] = time.monotonic()
                RT.provisional.add(key)
    return Inputs(key=key, tj=tj, jobs=jobs, pods=list(pods), presets=presets,
                  admission=RT.admission.get(key), refusal=RT.refusals.get(key),
                  ensure_rbac=CFG.manage_worker_rbac and key[0] not in RT.rbac_ready)


def first_sight(tj: Obj) -> Obj | None:
    """Admission's answer for a job not queued yet, so its first status write is already right (queue.first_sight).
    The overlay in RT.admission holds the slot until the job's status shows it."""
    spec = tj.get("spec") or {}
    if spec.get("suspend") or spec.get("cancel") or (tj.get("status") or {}).get("phase"):
        return None
    accelerator = (spec.get("accelerator") or {}).get("type") or DEFAULT_ACCELERATOR
    pool = pool_for(spec.get("pool"), accelerator, CFG.scheduling)
    now = dt.datetime.now(dt.UTC)
    return queue.first_sight(tj["metadata"]["namespace"], pool, RT.queue_state.running[pool],
                             RT.queue_state.waiting(pool), CFG.scheduling, rfc3339_precise(now),
                             enqueue_time(tj["metadata"], now))


def execute(inp: Inputs) -> Outcome:
    """plan() and its writes (on a worker thread; touches no shared state)."""
    k = kube()
    namespace, name = inp.key
    tj = inp.tj
    uid = tj["metadata"]["uid"]
    status: Obj = tj.get("status") or {}
    metrics.RECONCILES.inc()
    now = dt.datetime.now(dt.UTC)
    result = plan(tj, inp.jobs, inp.pods, CFG, now, inp.presets, refusal=inp.refusal, admission=inp.admission)
    after = {k_: v for k_, v in {**status, **result.status_patch}.items() if v is not None}
    # The webhook outbox rides in the same status patch as the phase change it reports.
    outbox = webhooks.outbox_update(tj, status, after, now, WEBHOOKS)
    result.status_patch.update(outbox)
    after.update(outbox)
    out = Outcome(plan=result, status=after)
    if inp.ensure_rbac and any(isinstance(a, CreateJob) for a in result.actions):
        leader.check_leading()
        k.ensure_worker_rbac(worker_rbac(namespace, CFG))
        out.rbac_ready = True
    for action in result.actions:
        if isinstance(action, DeleteTranscodeJob):
            continue
        leader.check_leading()
        log.info("%s/%s action: %s", namespace, name, type(action).__name__, extra=about(inp.key, uid))
        answer = k.apply(namespace, uid, action, name)
        if answer is not None and isinstance(action, CreateJob | SetJobSuspend):
            out.jobs[answer["metadata"]["name"]] = cache.slim_job(answer)
        if isinstance(action, DeleteJob):
            out.deleted_jobs.append(action.name)
        if isinstance(action, DeletePod):
            metrics.STALLS.inc()
    # Events and the label first: once status says Failed, `kubectl describe` shows why and a selector on the
    # failure category already finds the job.
    leader.check_leading()
    for event in result.events:
        k.post_event(tj, event)
    if result.labels_patch:
        out.body = k.patch_labels(namespace, name, result.labels_patch)
    if result.status_patch:
        out.body = k.patch_status(namespace, name, result.status_patch)
    if any(isinstance(a, DeleteTranscodeJob) for a in result.actions):
        k.apply(namespace, uid, DeleteTranscodeJob(), name)
        out.deleted = True
    return out


def absorb(inp: Inputs, out: Outcome) -> None:
    """Takes a reconcile's results into memory (on the event loop)."""
    key = inp.key
    tj = inp.tj
    uid = tj["metadata"]["uid"]
    if out.body is not None:
        RT.bodies.put_newer(key, out.body)
    if out.jobs or out.deleted_jobs:
        written = RT.written_jobs.setdefault(key, {})
        for name in out.deleted_jobs:
            written.pop(name, None)
        stamp = time.monotonic()
        written.update({n: (stamp, o) for n, o in out.jobs.items()})
    if out.rbac_ready:
        RT.rbac_ready.add(key[0])
    pending = RT.admission.get(key)
    if inp.admission is not None and pending is inp.admission \
            and not cache.decision_written({"status": out.status}, inp.admission):
        del RT.admission[key]  # the plan did not take it (a pool it does not run in, a suspend): the pass decides
        refresh_queue(key)
    result = out.plan
    old_phase = (tj.get("status") or {}).get("phase")
    if result.phase in TERMINAL:
        RT.refusals.pop(key, None)
    if result.wake_at is not None and not out.deleted:
        delay = (result.wake_at - dt.datetime.now(dt.UTC)).total_seconds()
        RT.queue.add_after(key, max(delay, 0.0) + 0.2)
    if not out.deleted:
        schedule_delivery(key, out.status)
    if result.phase != old_phase or result.phase == "Queued":
        RT.poke.set()
    if inp.refusal and result.phase == "Failed" and old_phase != "Failed":
        metrics.QUOTA_REFUSALS.labels(key[0]).inc()
    metrics.observe_phase(uid, result.phase)
    now = dt.datetime.now(dt.UTC)
    metrics.record(metrics.observations(tj, result.phase, result.status_patch,
                                        [(e.reason, e.message) for e in result.events], now))
    if result.phase in TERMINAL and old_phase not in TERMINAL:
        created = parse_time(tj["metadata"].get("creationTimestamp"))
        if created:
            metrics.DURATION.labels(result.phase).observe((now - created).total_seconds())


async def wait_leading() -> None:
    """Fenced (the Lease is not ours, e.g. while the API server is away): hold every write until it is again."""
    while not leader.LEADING.is_set():  # noqa: ASYNC110 (a threading.Event, set by the Lease thread)
        await asyncio.sleep(0.2)


async def worker() -> None:
    loop = asyncio.get_running_loop()
    # A reconcile before every cache holds its first listing could miss an existing Job (and create another)
    # or a preset (and fail the job).
    for informer in RT.informers():
        await informer.synced.wait()
    while True:
        await wait_leading()
        key, waited = await RT.queue.get()
        if not leader.LEADING.is_set():  # fenced while waiting: the key stays queued
            RT.queue.done(key)
            RT.queue.add(key)
            continue
        metrics.EVENT_LAG.observe(waited)
        try:
            inp = snapshot(key)
            if inp is None:
                RT.queue.forget(key)
                continue
            started = time.monotonic()
            out = await loop.run_in_executor(RT.executor, execute, inp)
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
            absorb(inp, out)
            RT.queue.forget(key)
        except Exception as exc:  # level-based: the next try reads the state afresh
            metrics.RECONCILE_ERRORS.labels(type(exc).__name__).inc()
            delay = RT.queue.retry(key)
            log.warning("reconcile of %s/%s failed (%s: %s); retrying in %.1fs", *key, type(exc).__name__,
                        str(exc)[:300], delay, extra=about(key))
        finally:
            RT.queue.done(key)
            metrics.QUEUE_DEPTH.labels("ready").set(len(RT.queue))
            metrics.QUEUE_DEPTH.labels("timers").set(RT.queue.delayed)


# ---- webhook delivery: its own workers; the outbox stays in status -----------------------------------------

def schedule_delivery(key: Key, status: Obj) -> None:
    due = webhooks.next_due(status)
    if due is not None:
        RT.deliveries.add_after(key, max((due - dt.datetime.now(dt.UTC)).total_seconds(), 0.0))


async def deliverer() -> None:
    """POSTs a job's due deliveries. It holds the job's key in the reconcile queue meanwhile: the outbox has
    two writers (reconcile adds entries, delivery records results) and a merge patch replaces the list."""
    loop = asyncio.get_running_loop()
    while True:
        await wait_leading()
        key, _ = await RT.deliveries.get()
        try:
            if not RT.queue.hold(key):
                RT.deliveries.add_after(key, 0.2)  # reconciling now; its outbox may change
                continue
            try:
                tj = RT.bodies.get(key)
                if tj is None:
                    continue
                body, status = await loop.run_in_executor(RT.delivery_executor, deliver_due, kube(), tj,
                                                          dict(tj.get("status") or {}))
                if body is not None and key in RT.bodies:
                    RT.bodies.put_newer(key, body)
                    RT.queue.add(key)  # retention waits for pending deliveries; runs after the release
                schedule_delivery(key, status)
            finally:
                RT.queue.done(key)
            RT.deliveries.forget(key)
        except Exception as exc:
            delay = RT.deliveries.retry(key)
            log.warning("webhook delivery of %s/%s failed (%s: %s); retrying in %.1fs", *key,
                        type(exc).__name__, str(exc)[:300], delay, extra=about(key))
        finally:
            RT.deliveries.done(key)


def deliver_due(k: Kube, tj: Obj, status: Obj) -> tuple[Obj | None, Obj]:
    """POSTs the webhook deliveries that are due, recording each result in status right after it. Returns the
    TranscodeJob as last written (None: nothing written) and the status after."""
    meta = tj["metadata"]
    subs = {w["name"]: w for w in (tj.get("spec") or {}).get("webhooks") or []}
    secrets: dict[tuple[str, str], str | None] = {}  # one read per Secret key per pass, however many are due
    body: Obj | None = None
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
            payload = webhooks.event_body(entry)
            try:
                hdrs = delivery.headers(secret, entry["id"], int(time.time()), payload)
            except ValueError as exc:  # not base64: the secret is unusable until fixed
                patch = webhooks.record_failure(status, entry["id"], "InvalidSecret", str(exc)[:200], now, WEBHOOKS)
                result_reason = "InvalidSecret"
            else:
                leader.check_leading()
                result = delivery.post(sub["url"], payload, hdrs, POLICY)
                result_reason = result.reason
                log.info("webhook %s %s -> %s %s", entry["webhook"], entry["type"], result.status, result.reason,
                         extra=about((meta["namespace"], meta["name"]), meta.get("uid")))
                patch = webhooks.record_result(status, entry["id"], result, dt.datetime.now(dt.UTC), WEBHOOKS)
        metrics.WEBHOOK_DELIVERIES.labels(result_reason).inc()
        if patch:
            leader.check_leading()
            body = k.patch_status(meta["namespace"], meta["name"], patch)
            status = {**status, **patch}
    return body, status


# ---- admission: in memory, from the TranscodeJob index ----------------------------------------------------

async def admission_loop() -> None:
    """The one place that decides admission. On the event loop, so two passes never race for a slot."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(RT.poke.wait(), timeout=ADMISSION_MAX_INTERVAL)
        RT.poke.clear()
        try:
            admission_pass(dt.datetime.now(dt.UTC))
        except Exception:
            log.exception("admission pass failed")
        await asyncio.sleep(ADMISSION_MIN_INTERVAL)


def admission_pass(now: dt.datetime) -> None:
    if RT.tjs is None or not RT.tjs.synced.is_set():
        return  # the queue is not whole before the first listing of TranscodeJobs
    state = RT.queue_state
    sched = CFG.scheduling
    decision = state.decide(sched, now)
    metrics.record_queue(dict(decision.queued), dict(decision.running),
                         {name: pool.capacity for name, pool in sched.pools.items()},
                         {c: n for c, n in state.failed.items() if n > 0})
    if sched.mode != "builtin":
        return
    for key, message in decision.refuse.items():
        if key not in RT.refusals:
            log.info("refusing %s/%s: %s", *key, message, extra=about(key))
            RT.refusals[key] = (REASON_QUOTA_EXCEEDED, message)
            RT.queue.add(key)
    for key in decision.admit:
        log.info("admitting %s/%s", *key, extra=about(key))
        RT.admission[key] = {"admittedTime": rfc3339_precise(now), "position": None, "reason": None}
        refresh_queue(key)
        RT.position_written.pop(key, None)
        RT.provisional.discard(key)
        RT.queue.add(key)
    stamp = time.monotonic()
    checked = frozenset(k for k in RT.provisional if state.is_waiting(k) and k not in decision.refuse)
    for key, (position, reason) in queue.positions_due(decision, RT.position_written, stamp,
                                                       provisional=checked).items():
        RT.admission[key] = {"position": position, "reason": reason}
        refresh_queue(key)
        RT.position_written[key] = stamp
        RT.queue.add(key)
    RT.provisional -= checked
