"""Pure: the admission queue. Given every TranscodeJob, decide which waiting ones to admit now, where the others
stand, and which a namespace quota refuses.

Order within a pool: effective priority first (spec.priority plus one step per `aging_seconds` waited, so nothing
starves), then FIFO by enqueue time, then name. A pool's capacity counts admitted jobs that are not finished and
not suspended. A namespace's maxConcurrent makes its jobs wait without blocking other namespaces' jobs behind them.
maxQueued and maxPerDay refuse (QuotaExceeded) rather than leave a job waiting forever.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from transkube_api.constants import REASON_QUOTA_EXCEEDED

from .config import Scheduling
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
        waiting=active and not admitted and not suspended and phase == "Queued" and bool(queue.get("pool")),
        position=queue.get("position"), reason=queue.get("reason"),
        refused=phase == "Failed" and status.get("reason") == REASON_QUOTA_EXCEEDED)


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
    seen_waiting: set[Key] = field(default_factory=set)  # every waiting job this decision placed


def decide(tjs: list[Obj], sched: Scheduling, now: dt.datetime) -> Decision:
    entries = [entry_of(tj) for tj in tjs]
    out = Decision()
    out.refuse = _refusals(entries, sched, now)
    used: Counter[str] = Counter(e.pool for e in entries if e.holds_capacity and e.pool)
    ns_used: Counter[str] = Counter(e.namespace for e in entries if e.holds_capacity)
    waiting = [e for e in entries if e.waiting and e.key not in out.refuse]
    waiting.sort(key=lambda e: (-effective_priority(e, sched, now), e.enqueued, e.namespace, e.name))
    place: Counter[str] = Counter()
    for e in waiting:
        assert e.pool is not None
        capacity = sched.pools[e.pool].capacity if e.pool in sched.pools else 0
        limit = sched.quota(e.namespace).max_concurrent
        if used[e.pool] < capacity and (limit is None or ns_used[e.namespace] < limit):
            out.admit.append(e.key)
            used[e.pool] += 1
            ns_used[e.namespace] += 1
            continue
        place[e.pool] += 1
        out.seen_waiting.add(e.key)
        reason = REASON_POOL_CAPACITY if used[e.pool] >= capacity else REASON_NAMESPACE_CONCURRENCY
        # Positions past the first few hundred change with every admission and would cost one status write
        # per waiting job per admission; they are left unset ("further back") instead.
        position = place[e.pool] if place[e.pool] <= sched.max_positions else None
        if (e.position, e.reason) != (position, reason):
            out.positions[e.key] = (position, reason)
            out.previous[e.key] = (e.position, e.reason)
    out.queued = place
    out.running = used
    return out


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


@dataclass
class PoolView:
    """Pool occupancy as of the last admission pass, plus what first sight took since (on the event loop)."""

    running: Counter[str] = field(default_factory=Counter)
    waiting: Counter[str] = field(default_factory=Counter)


def first_sight(namespace: str, pool: str, view: PoolView, sched: Scheduling, now: str) -> Obj | None:
    """status.queue keys for a job the operator sees for the first time, so its first write is already right:
    admitted at once when its pool has a free slot and nobody waits there (no one is overtaken), else queued
    behind the waiting ones with a provisional place (the next pass corrects it if a priority says otherwise).
    None when the pass must decide (namespace quotas, kueue, an unknown pool). Updates `view` for what it took."""
    quota = sched.quota(namespace)
    if sched.mode != "builtin" or pool not in sched.pools \
            or (quota.max_concurrent, quota.max_queued, quota.max_per_day) != (None, None, None):
        return None
    if view.running[pool] < sched.pools[pool].capacity:
        if view.waiting[pool]:
            return None  # a free slot while jobs wait: a namespace limit holds them; the pass knows which
        view.running[pool] += 1
        return {"pool": pool, "admittedTime": now}
    view.waiting[pool] += 1
    place = view.waiting[pool]
    return {"pool": pool, "position": place if place <= sched.max_positions else None,
            "reason": REASON_POOL_CAPACITY}
