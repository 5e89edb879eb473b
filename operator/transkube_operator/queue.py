"""Pure: the admission queue. Given every TranscodeJob, decide which waiting ones to admit now, where the others
stand, and which a namespace quota refuses.

Order within a pool: effective priority first (spec.priority plus one step per `aging_seconds` waited, so nothing
starves), then FIFO by enqueue time, then name. A pool's capacity counts admitted jobs that are not finished and
not suspended. A namespace's maxConcurrent makes its jobs wait without blocking other namespaces' jobs behind them.
maxQueued and maxPerDay refuse (QuotaExceeded) rather than leave a job waiting forever.
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from transkube_api.constants import REASON_QUOTA_EXCEEDED

from .config import NamespaceQuota, Scheduling
from .reconcile import TERMINAL, parse_time

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
REASON_POOL_CAPACITY = "PoolCapacity"
REASON_NAMESPACE_CONCURRENCY = "NamespaceConcurrency"
DAY = dt.timedelta(days=1)
# A waiting job's position is rewritten at most this often (unless it enters or leaves the first max_positions,
# or its reason changes): every admission moves every position behind it, and each move is a status write.
POSITION_REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class Entry:
    """A TranscodeJob as admission sees it."""

    namespace: str
    name: str
    pool: str | None  # None: the operator has not queued it yet
    priority: int
    created: dt.datetime
    enqueued: dt.datetime
    admitted: bool
    holds_capacity: bool  # admitted, not finished, not suspended
    waiting: bool  # queued, not admitted, not suspended
    position: int | None
    reason: str | None
    refused: bool  # already failed by a quota
    failed_category: str | None  # Failed: its failure category

    @property
    def key(self) -> Key:
        return self.namespace, self.name


def entry_of(tj: Obj) -> Entry:
    meta = tj["metadata"]
    spec = tj.get("spec") or {}
    status = tj.get("status") or {}
    queue = status.get("queue") or {}
    phase = status.get("phase")
    created = parse_time(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
    active = phase not in TERMINAL and not spec.get("cancel")
    admitted = bool(queue.get("admittedTime"))
    suspended = bool(spec.get("suspend"))
    return Entry(
        namespace=meta["namespace"], name=meta["name"], pool=queue.get("pool"),
        priority=int(spec.get("priority") or 0), created=created,
        enqueued=parse_time(queue.get("enqueuedTime")) or created, admitted=admitted,
        holds_capacity=active and admitted and not suspended,
        # No phase yet with a pool: queued at first sight, its first status write on the way.
        waiting=active and not admitted and not suspended and phase in (None, "Queued") and bool(queue.get("pool")),
        position=queue.get("position"), reason=queue.get("reason"),
        refused=phase == "Failed" and status.get("reason") == REASON_QUOTA_EXCEEDED,
        failed_category=str(status.get("failureCategory") or "Internal") if phase == "Failed" else None)


def effective_priority(entry: Entry, sched: Scheduling, now: dt.datetime) -> int:
    if sched.aging_seconds <= 0:
        return entry.priority
    waited = max(0.0, (now - entry.enqueued).total_seconds())
    return entry.priority + int(waited // sched.aging_seconds)


@dataclass
class Decision:
    admit: list[Key] = field(default_factory=list)
    # Waiting jobs whose place or reason changed: (position, reason).
    positions: dict[Key, tuple[int | None, str]] = field(default_factory=dict)
    refuse: dict[Key, str] = field(default_factory=dict)  # key -> message
    queued: Counter[str] = field(default_factory=Counter)  # per pool, after this decision
    running: Counter[str] = field(default_factory=Counter)  # per pool, after this decision
    previous: dict[Key, tuple[int | None, str | None]] = field(default_factory=dict)  # of the jobs in positions


_FURTHER_BACK = (None, REASON_POOL_CAPACITY)  # the place of every job past the numbered ones in a full pool
Order = tuple[dt.datetime, str, str]  # (enqueued, namespace, name): FIFO within one pool and priority


class Admission:
    """The admission queue, kept up to date one job at a time (upsert/remove as watch events arrive), so that a
    pass costs what changed, not the size of the queue: per pool and priority, the waiting jobs sorted FIFO;
    slot counts per pool and namespace. A pass (decide) merges the heads of those lists in admission order,
    admits while slots are free, numbers the first `max_positions` places of each pool, and stops walking a
    pool once it is full and numbered: everyone behind is "further back" (no position, PoolCapacity), and of
    those only the jobs whose status says otherwise need a write. Namespaces with a quota are read whole.

    Within one (pool, priority) list, an earlier job has aged at least as much, so each list's head is its
    best: merging the heads gives the same order as sorting every waiting job."""

    def __init__(self) -> None:
        self._entries: dict[Key, Entry] = {}
        self._waiting: defaultdict[str, dict[int, list[Order]]] = defaultdict(dict)  # pool -> priority -> FIFO
        self._waiting_count: Counter[str] = Counter()  # pool -> waiting jobs
        self.running: Counter[str] = Counter()  # pool -> jobs holding one of its slots
        self._ns_running: Counter[str] = Counter()
        self._marked: defaultdict[str, set[Key]] = defaultdict(set)  # waiting, status place not _FURTHER_BACK
        self._by_ns: defaultdict[str, set[Key]] = defaultdict(set)
        self.failed: Counter[str] = Counter()  # Failed jobs by failure category

    def waiting(self, pool: str) -> int:
        return self._waiting_count[pool]

    def upsert(self, entry: Entry) -> None:
        old = self._entries.get(entry.key)
        if old == entry:
            return
        if old is not None:
            self._account(old, -1)
        self._entries[entry.key] = entry
        self._account(entry, +1)

    def remove(self, key: Key) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._account(old, -1)

    def _account(self, e: Entry, sign: int) -> None:
        if sign > 0:
            self._by_ns[e.namespace].add(e.key)
        else:
            self._by_ns[e.namespace].discard(e.key)
            if not self._by_ns[e.namespace]:
                del self._by_ns[e.namespace]
        if e.holds_capacity:
            self._ns_running[e.namespace] += sign
            if e.pool:
                self.running[e.pool] += sign
        if e.failed_category is not None:
            self.failed[e.failed_category] += sign
        if not e.waiting:
            return
        assert e.pool is not None
        groups = self._waiting[e.pool]
        order = (e.enqueued, e.namespace, e.name)
        self._waiting_count[e.pool] += sign
        if sign > 0:
            bisect.insort(groups.setdefault(e.priority, []), order)
            if (e.position, e.reason) != _FURTHER_BACK:
                self._marked[e.pool].add(e.key)
            return
        fifo = groups[e.priority]
        del fifo[bisect.bisect_left(fifo, order)]
        if not fifo:
            del groups[e.priority]
        self._marked[e.pool].discard(e.key)

    def is_waiting(self, key: Key) -> bool:
        e = self._entries.get(key)
        return e is not None and e.waiting

    def decide(self, sched: Scheduling, now: dt.datetime) -> Decision:
        out = Decision()
        out.refuse = _refusals([self._entries[k] for ns in self._by_ns if _has_quota(sched.quota(ns))
                                for k in self._by_ns[ns]], sched, now)
        used = Counter(self.running)
        ns_used = Counter(self._ns_running)
        heap: list[tuple[tuple[int, dt.datetime, str, str], str, int, int]] = []

        def push(pool: str, priority: int, i: int) -> None:
            enqueued, namespace, name = self._waiting[pool][priority][i]
            e = self._entries[(namespace, name)]
            heapq.heappush(heap, ((-effective_priority(e, sched, now), enqueued, namespace, name), pool, priority, i))

        for pool, groups in self._waiting.items():
            for priority in groups:
                push(pool, priority, 0)
        place: Counter[str] = Counter()
        done: set[str] = set()  # pools full and numbered: the rest of their queue is further back
        visited: set[Key] = set()
        while heap:
            (_, _, namespace, name), pool, priority, i = heapq.heappop(heap)
            if pool in done:
                continue
            if i + 1 < len(self._waiting[pool][priority]):
                push(pool, priority, i + 1)
            e = self._entries[(namespace, name)]
            visited.add(e.key)
            if e.key in out.refuse:
                continue
            capacity = sched.pools[pool].capacity if pool in sched.pools else 0
            limit = sched.quota(e.namespace).max_concurrent
            if used[pool] < capacity and (limit is None or ns_used[e.namespace] < limit):
                out.admit.append(e.key)
                used[pool] += 1
                ns_used[e.namespace] += 1
                continue
            place[pool] += 1
            reason = REASON_POOL_CAPACITY if used[pool] >= capacity else REASON_NAMESPACE_CONCURRENCY
            # Positions past the first few hundred change with every admission and would cost one status write
            # per waiting job per admission; they are left unset ("further back") instead.
            position = place[pool] if place[pool] <= sched.max_positions else None
            _place(out, e, position, reason)
            if used[pool] >= capacity and place[pool] >= sched.max_positions:
                done.add(pool)
        for pool in done:
            for key in self._marked[pool] - visited:
                if key not in out.refuse:
                    _place(out, self._entries[key], *_FURTHER_BACK)
        admitted = Counter(self._entries[k].pool for k in out.admit)
        refused = Counter(self._entries[k].pool for k in out.refuse if self._entries[k].waiting)
        out.queued = Counter({pool: n - admitted[pool] - refused[pool] for pool, n in self._waiting_count.items()
                              if n - admitted[pool] - refused[pool] > 0})
        out.running = used
        return out


def _place(out: Decision, e: Entry, position: int | None, reason: str) -> None:
    if (e.position, e.reason) != (position, reason):
        out.positions[e.key] = (position, reason)
        out.previous[e.key] = (e.position, e.reason)


def _has_quota(quota: NamespaceQuota) -> bool:
    return quota.max_queued is not None or quota.max_per_day is not None


def decide(tjs: list[Obj], sched: Scheduling, now: dt.datetime) -> Decision:
    """One pass over a list of TranscodeJobs (the operator keeps an Admission up to date instead)."""
    admission = Admission()
    for tj in tjs:
        admission.upsert(entry_of(tj))
    return admission.decide(sched, now)


def _refusals(entries: list[Entry], sched: Scheduling, now: dt.datetime) -> dict[Key, str]:
    """Jobs a namespace quota refuses. Deterministic: the oldest jobs keep their places, so a job accepted
    once is never refused later; only newer arrivals beyond the limit are."""
    refuse: dict[Key, str] = {}
    by_ns: defaultdict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_ns[e.namespace].append(e)
    for ns, group in by_ns.items():
        quota = sched.quota(ns)
        if quota.max_per_day is not None:
            today = sorted((e for e in group if now - e.created < DAY and not e.refused),
                           key=lambda e: (e.created, e.name))
            for e in today[quota.max_per_day:]:
                if e.waiting:
                    refuse[e.key] = (f"namespace {ns} allows {quota.max_per_day} TranscodeJobs per 24 hours "
                                     f"(maxPerDay); {len(today)} were created")
        if quota.max_queued is not None:
            queued = sorted((e for e in group if e.waiting and e.key not in refuse),
                            key=lambda e: (e.enqueued, e.name))
            for e in queued[quota.max_queued:]:
                refuse[e.key] = (f"namespace {ns} allows {quota.max_queued} queued TranscodeJobs (maxQueued); "
                                 f"{len(queued)} are waiting")
    return refuse


def positions_due(decision: Decision, last_written: dict[Key, float], now: float,
                  refresh: float = POSITION_REFRESH_SECONDS,
                  provisional: frozenset[Key] = frozenset()) -> dict[Key, tuple[int | None, str]]:
    """The position changes worth a status write now (`now`, `last_written`: monotonic seconds): a new reason,
    a job entering or leaving the numbered places, a job moved back (a higher priority overtook it), a
    provisional first-sight place the pass corrects, or a position last written `refresh` seconds ago or more.
    Moving forward as the queue drains is what the throttle is for; it waits for a later pass, which recomputes it."""
    due: dict[Key, tuple[int | None, str]] = {}
    for key, (position, reason) in decision.positions.items():
        old_position, old_reason = decision.previous.get(key, (None, None))
        overtaken = position is not None and old_position is not None and position > old_position
        if key in provisional or overtaken or reason != old_reason or (position is None) != (old_position is None) \
                or now - last_written.get(key, -math.inf) >= refresh:
            due[key] = (position, reason)
    return due


def first_sight(namespace: str, pool: str, running: int, waiting: int, sched: Scheduling, now: str,
                enqueued: str) -> Obj | None:
    """status.queue keys for a job the operator sees for the first time, so its first write is already right:
    admitted at once when its pool has a free slot and nobody waits there (no one is overtaken), else queued
    behind the `waiting` ones with a provisional place (the next pass corrects it if a priority says otherwise).
    None when the pass must decide (namespace quotas, kueue, an unknown pool). `enqueued` is its FIFO time
    (reconcile.enqueue_time), so a pass before its first write lands orders it right."""
    quota = sched.quota(namespace)
    if sched.mode != "builtin" or pool not in sched.pools \
            or (quota.max_concurrent, quota.max_queued, quota.max_per_day) != (None, None, None):
        return None
    if running < sched.pools[pool].capacity:
        if waiting:
            return None  # a free slot while jobs wait: a namespace limit holds them; the pass knows which
        return {"pool": pool, "admittedTime": now, "enqueuedTime": enqueued}
    place = waiting + 1
    return {"pool": pool, "position": place if place <= sched.max_positions else None,
            "reason": REASON_POOL_CAPACITY, "enqueuedTime": enqueued}
