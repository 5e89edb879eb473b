"""The admission queue's decisions (queue.decide), without a cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

from transkube_operator.config import NamespaceQuota, Pool, Scheduling
from transkube_operator.queue import decide

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SCHED = Scheduling(pools={"cpu": Pool(2), "gpu": Pool(1, "nvidia"), "serial": Pool(1)}, aging_seconds=0)


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def tj(name: str, *, ns: str = "a", pool: str = "cpu", priority: int = 0, ago: float = 10, phase: str = "Queued",
       admitted: bool = False, suspend: bool = False, reason: str | None = None,
       position: int | None = None) -> dict[str, Any]:
    queue: dict[str, Any] = {"pool": pool, "priority": priority, "enqueuedTime": ts(ago)}
    if admitted:
        queue["admittedTime"] = ts(ago - 1)
    if position:
        queue["position"] = position
    if reason and phase == "Queued":
        queue["reason"] = reason
    return {"metadata": {"namespace": ns, "name": name, "creationTimestamp": ts(ago)},
            "spec": {"priority": priority, "suspend": suspend},
            "status": {"phase": phase, "queue": queue, **({"reason": reason} if phase == "Failed" else {})}}


def test_priority_first_then_fifo_fills_free_slots() -> None:
    jobs = [tj("old-low", priority=-5, ago=100), tj("new-high", priority=10, ago=5), tj("old-high", priority=10,
                                                                                         ago=50),
            tj("mid", priority=0, ago=60)]
    d = decide(jobs, SCHED, NOW)
    assert d.admit == [("a", "old-high"), ("a", "new-high")]
    assert d.positions == {("a", "mid"): (1, "PoolCapacity"), ("a", "old-low"): (2, "PoolCapacity")}
    assert d.queued["cpu"] == 2 and d.running["cpu"] == 2


def test_admitted_unfinished_jobs_hold_slots_and_finished_or_suspended_ones_do_not() -> None:
    jobs = [tj("run", phase="Running", admitted=True), tj("done", phase="Succeeded", admitted=True),
            tj("paused", phase="Suspended", admitted=True, suspend=True), tj("wait", ago=1)]
    assert decide(jobs, SCHED, NOW).admit == [("a", "wait")]
    full = [*jobs, tj("run2", phase="Running", admitted=True)]
    assert decide(full, SCHED, NOW).admit == []


def test_pools_are_separate() -> None:
    jobs = [tj("g1", pool="gpu", phase="Running", admitted=True), tj("g2", pool="gpu"), tj("c1")]
    d = decide(jobs, SCHED, NOW)
    assert d.admit == [("a", "c1")] and d.positions == {("a", "g2"): (1, "PoolCapacity")}


def test_aging_lets_a_long_waiting_low_priority_job_overtake() -> None:
    aging = Scheduling(pools={"serial": Pool(1)}, aging_seconds=60)
    jobs = [tj("patient", pool="serial", priority=-5, ago=600), tj("eager", pool="serial", priority=3, ago=1)]
    assert decide(jobs, aging, NOW).admit == [("a", "patient")]  # -5 + 10 steps beats 3
    assert decide(jobs, SCHED, NOW).admit == [("a", "eager")]  # no aging


def test_namespace_concurrency_waits_without_blocking_other_namespaces() -> None:
    sched = Scheduling(pools={"cpu": Pool(5)}, aging_seconds=0,
                       quotas={"a": NamespaceQuota(max_concurrent=1)})
    jobs = [tj("a-run", phase="Running", admitted=True), tj("a-next", priority=50, ago=100),
            tj("b-next", ns="b", ago=1)]
    d = decide(jobs, sched, NOW)
    assert d.admit == [("b", "b-next")]
    assert d.positions == {("a", "a-next"): (1, "NamespaceConcurrency")}


def test_quota_refusals_keep_the_oldest_and_refuse_newer_arrivals() -> None:
    sched = Scheduling(pools={"serial": Pool(1)}, aging_seconds=0,
                       quotas={"a": NamespaceQuota(max_queued=2)})
    jobs = [tj("run", pool="serial", phase="Running", admitted=True, ago=500),
            tj("q1", pool="serial", ago=300), tj("q2", pool="serial", ago=200), tj("q3", pool="serial", ago=100,
                                                                                      priority=50)]
    d = decide(jobs, sched, NOW)
    assert list(d.refuse) == [("a", "q3")] and "maxQueued" in d.refuse[("a", "q3")]
    daily = Scheduling(pools={"cpu": Pool(9)}, aging_seconds=0, default_quota=NamespaceQuota(max_per_day=2))
    jobs = [tj("old", phase="Succeeded", admitted=True, ago=90000),  # more than a day ago: not counted
            tj("d1", phase="Succeeded", admitted=True, ago=3000),
            tj("gone", phase="Failed", reason="QuotaExceeded", ago=2000),  # refused ones don't count
            tj("d2", ago=1000), tj("d3", ago=10)]
    d = decide(jobs, daily, NOW)
    assert list(d.refuse) == [("a", "d3")] and "maxPerDay" in d.refuse[("a", "d3")]
    assert d.admit == [("a", "d2")]


def test_positions_are_written_only_when_they_change_and_only_near_the_head() -> None:
    sched = Scheduling(pools={"serial": Pool(1)}, aging_seconds=0, max_positions=2)
    jobs = [tj("run", pool="serial", phase="Running", admitted=True),
            tj("w1", pool="serial", ago=30, position=1, reason="PoolCapacity"),
            tj("w2", pool="serial", ago=20), tj("w3", pool="serial", ago=10)]
    d = decide(jobs, sched, NOW)
    assert d.positions == {("a", "w2"): (2, "PoolCapacity"), ("a", "w3"): (None, "PoolCapacity")}


# ---- cost per change: throttled positions and first sight ---------------------------------------------------

def test_positions_move_with_every_admission_but_are_rewritten_at_most_every_refresh() -> None:
    from transkube_operator.queue import positions_due

    jobs = [tj("run1", admitted=True, ago=100), tj("run2", admitted=True, ago=90),
            tj("w1", ago=50, reason="PoolCapacity", position=2), tj("w2", ago=40, reason="PoolCapacity", position=3)]
    d = decide(jobs, SCHED, NOW)
    assert d.positions == {("a", "w1"): (1, "PoolCapacity"), ("a", "w2"): (2, "PoolCapacity")}
    written = {("a", "w1"): 100.0, ("a", "w2"): 70.0}
    assert positions_due(d, written, now=105.0, refresh=30) == {("a", "w2"): (2, "PoolCapacity")}
    assert positions_due(d, written, now=131.0, refresh=30) == d.positions


def test_a_new_reason_or_a_numbered_place_gained_or_lost_is_written_at_once() -> None:
    from transkube_operator.queue import positions_due

    sched = Scheduling(pools={"cpu": Pool(1)}, aging_seconds=0, max_positions=1)
    jobs = [tj("run", admitted=True, ago=100), tj("w1", ago=50, reason="PoolCapacity", position=None),
            tj("w2", ago=40, reason="PoolCapacity", position=1), tj("w3", ago=30)]
    d = decide(jobs, sched, NOW)
    assert d.positions == {("a", "w1"): (1, "PoolCapacity"), ("a", "w2"): (None, "PoolCapacity"),
                           ("a", "w3"): (None, "PoolCapacity")}
    recent = dict.fromkeys(d.positions, 0.0)
    assert positions_due(d, recent, now=1.0, refresh=30) == d.positions


def test_first_sight_admits_into_a_free_slot_only_when_nobody_waits() -> None:
    from transkube_operator.queue import first_sight

    assert first_sight("a", "cpu", 0, 0, SCHED, "t", "e") == {"pool": "cpu", "admittedTime": "t", "enqueuedTime": "e"}
    assert first_sight("a", "cpu", 1, 0, SCHED, "t", "e") == {"pool": "cpu", "admittedTime": "t", "enqueuedTime": "e"}
    assert first_sight("a", "cpu", 2, 0, SCHED, "t", "e") == {"pool": "cpu", "position": 1, "reason": "PoolCapacity",
                                                                  "enqueuedTime": "e"}
    assert first_sight("b", "cpu", 2, 1, SCHED, "t", "e") == {"pool": "cpu", "position": 2, "reason": "PoolCapacity",
                                                                  "enqueuedTime": "e"}
    few = Scheduling(pools={"cpu": Pool(1)}, max_positions=3)
    assert first_sight("b", "cpu", 1, 3, few, "t", "e") == {"pool": "cpu", "position": None, "reason": "PoolCapacity",
                                                                  "enqueuedTime": "e"}


def test_what_first_sight_takes_counts_at_once_in_the_admission_state() -> None:
    from transkube_operator.queue import Admission, entry_of, first_sight

    state = Admission()
    for i in range(4):
        decided = first_sight("a", "cpu", state.running["cpu"], state.waiting("cpu"), SCHED, ts(0), ts(-i))
        assert decided is not None
        # The overlay a not-yet-written first sight puts on a job without status (handlers.refresh_queue).
        state.upsert(entry_of({"metadata": {"namespace": "a", "name": f"j{i}", "creationTimestamp": ts(0)},
                               "spec": {}, "status": {"queue": decided}}))
    assert (state.running["cpu"], state.waiting("cpu")) == (2, 2)
    assert decided == {"pool": "cpu", "position": 2, "reason": "PoolCapacity", "enqueuedTime": ts(-3)}


def test_first_sight_leaves_quotas_kueue_unknown_pools_and_held_slots_to_the_pass() -> None:
    from transkube_operator.queue import first_sight

    limited = Scheduling(pools={"cpu": Pool(2)}, quotas={"a": NamespaceQuota(max_concurrent=1)})
    assert first_sight("a", "cpu", 0, 0, limited, "t", "e") is None
    assert first_sight("b", "cpu", 0, 0, limited, "t", "e") is not None
    assert first_sight("a", "cpu", 0, 0, Scheduling(pools={"cpu": Pool(2)}, mode="kueue"), "t", "e") is None
    assert first_sight("a", "nope", 0, 0, SCHED, "t", "e") is None
    assert first_sight("a", "cpu", 1, 3, SCHED, "t", "e") is None  # a namespace limit holds those three


def test_a_provisional_first_sight_place_is_corrected_at_once() -> None:
    from transkube_operator.queue import positions_due

    # "late" arrived last with a higher priority: first sight placed it 2nd, the pass puts it 1st.
    jobs = [tj("run1", admitted=True, ago=100), tj("run2", admitted=True, ago=90),
            tj("early", ago=50, reason="PoolCapacity", position=1),
            tj("late", ago=10, priority=5, reason="PoolCapacity", position=2)]
    d = decide(jobs, SCHED, NOW)
    assert d.positions == {("a", "late"): (1, "PoolCapacity"), ("a", "early"): (2, "PoolCapacity")}
    written = dict.fromkeys(d.positions, 100.0)
    assert positions_due(d, written, now=101.0) == {("a", "early"): (2, "PoolCapacity")}  # overtaken
    assert positions_due(d, written, now=101.0, provisional=frozenset(d.positions)) == d.positions


def test_a_job_overtaken_by_a_higher_priority_is_moved_back_at_once() -> None:
    from transkube_operator.queue import positions_due

    jobs = [tj("run1", admitted=True, ago=100), tj("run2", admitted=True, ago=90),
            tj("w1", ago=50, reason="PoolCapacity", position=1), tj("vip", ago=5, priority=9)]
    d = decide(jobs, SCHED, NOW)
    assert d.positions[("a", "w1")] == (2, "PoolCapacity")
    assert ("a", "w1") in positions_due(d, {("a", "w1"): 100.0}, now=101.0)


def oracle(tjs: list[dict[str, Any]], sched: Scheduling, now: dt.datetime) -> tuple[Any, ...]:
    """The admission rule stated plainly: sort every waiting job, walk them all (what decide() must equal)."""
    from collections import Counter

    from transkube_operator.queue import (
        REASON_NAMESPACE_CONCURRENCY,
        REASON_POOL_CAPACITY,
        _refusals,
        effective_priority,
        entry_of,
    )

    entries = [entry_of(t) for t in tjs]
    refuse = _refusals(entries, sched, now)
    used = Counter(e.pool for e in entries if e.holds_capacity and e.pool)
    ns_used = Counter(e.namespace for e in entries if e.holds_capacity)
    waiting = sorted((e for e in entries if e.waiting and e.key not in refuse),
                     key=lambda e: (-effective_priority(e, sched, now), e.enqueued, e.namespace, e.name))
    admit, positions, place = [], {}, Counter()
    for e in waiting:
        assert e.pool is not None
        capacity = sched.pools[e.pool].capacity if e.pool in sched.pools else 0
        limit = sched.quota(e.namespace).max_concurrent
        if used[e.pool] < capacity and (limit is None or ns_used[e.namespace] < limit):
            admit.append(e.key)
            used[e.pool] += 1
            ns_used[e.namespace] += 1
            continue
        place[e.pool] += 1
        reason = REASON_POOL_CAPACITY if used[e.pool] >= capacity else REASON_NAMESPACE_CONCURRENCY
        position = place[e.pool] if place[e.pool] <= sched.max_positions else None
        if (e.position, e.reason) != (position, reason):
            positions[e.key] = (position, reason)
    return admit, positions, refuse, +place, +used


def test_the_incremental_pass_equals_sorting_everything_through_random_changes() -> None:
    """Admission keeps its queue up to date one job at a time and walks only the head of each pool; after every
    change its decision equals the plain rule's over the whole list (priorities, aging, namespace limits,
    quotas, unknown pools, a few numbered places)."""
    import random

    from transkube_operator.queue import Admission, entry_of

    rng = random.Random(12)  # noqa: S311 (test data, not secrets)
    sched = Scheduling(pools={"cpu": Pool(3), "gpu": Pool(1, "nvidia"), "none": Pool(0)}, aging_seconds=60,
                       quotas={"q": NamespaceQuota(max_concurrent=1, max_queued=4),
                               "d": NamespaceQuota(max_per_day=6)}, max_positions=4)
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    state = Admission()
    for step in range(600):
        key = (rng.choice(["a", "b", "q", "d"]), f"j{rng.randrange(40)}")
        if key in jobs and rng.random() < 0.15:
            del jobs[key]
            state.remove(key)
        else:
            phase = rng.choice(["Queued", "Queued", "Queued", "Running", "Succeeded", "Failed"])
            body = tj(key[1], ns=key[0], pool=rng.choice(["cpu", "cpu", "gpu", "none", "gone"]),
                      priority=rng.choice([0, 0, 5, -5]), ago=rng.uniform(0, 600), phase=phase,
                      admitted=phase != "Queued" or rng.random() < 0.1, suspend=rng.random() < 0.05,
                      reason=rng.choice([None, "PoolCapacity", "NamespaceConcurrency"]),
                      position=rng.choice([None, None, 1, 2, 3, 5]))
            jobs[key] = body
            state.upsert(entry_of(body))
        d = state.decide(sched, NOW)
        want = oracle(list(jobs.values()), sched, NOW)
        assert (d.admit, d.positions, d.refuse, +d.queued, +d.running) == want, step
