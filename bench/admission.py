"""Benchmark of one admission pass (transkube_operator.queue) as the cluster grows.

For N TranscodeJobs (a realistic mix: 60 % finished, 10 % running, 30 % queued over 4 pools and 50
namespaces, random priorities), it times, against the same baseline in the same process (the least a pass
over everything must do: read each object's queue fields and sort the waiting ones by priority and enqueue
time):
- decide(): a pass built from the whole list, as at the operator's start;
- the operator's steady state: one running job finishes (Admission.upsert) and Admission.decide runs, which
  walks only the head of each pool, so its cost should not grow with N (ratio falling as N grows); without
  namespace quotas (the chart's default), and with a quota on every namespace (maxConcurrent holds jobs back
  and maxQueued reads each namespace whole, so there it grows with the quota'd namespaces' jobs).
It prints the median of R runs of each and the ratios, and how many status writes the first pass and a
steady-state pass ask for. No cluster needed: the queue is pure.

    .venv/bin/python bench/admission.py [--sizes 1000 10000 50000] [--runs 7]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from transkube_operator.config import NamespaceQuota, Pool, Scheduling
from transkube_operator.queue import Admission, decide, entry_of

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
SCHED = Scheduling(pools={"cpu": Pool(64), "gpu": Pool(8, "nvidia"), "batch": Pool(16), "live": Pool(32)},
                   aging_seconds=300, default_quota=NamespaceQuota(max_concurrent=20, max_queued=1000))
PLAIN = Scheduling(pools=SCHED.pools, aging_seconds=300)  # the chart's default: no namespace quotas


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jobs(n: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    pools = list(SCHED.pools)
    for i in range(n):
        kind = rng.random()
        created = rng.uniform(0, 86400)
        queue: dict[str, Any] = {"pool": rng.choice(pools), "priority": 0, "enqueuedTime": ts(created)}
        if kind < 0.6:
            phase = rng.choice(["Succeeded", "Failed", "Cancelled"])
            queue["admittedTime"] = ts(created - 1)
        elif kind < 0.7:
            phase = "Running"
            queue["admittedTime"] = ts(created - 1)
        else:
            phase = "Queued"
        out.append({"metadata": {"namespace": f"ns-{i % 50}", "name": f"job-{i}", "creationTimestamp": ts(created)},
                    "spec": {"priority": rng.randint(-50, 50)},
                    "status": {"phase": phase, "queue": queue}})
    return out


def settled(tjs: list[dict[str, Any]], sched: Scheduling) -> tuple[Admission, list[dict[str, Any]]]:
    """An Admission over a copy of `tjs` once its first pass's decisions are written (as the operator's
    reconciles write them), and the copy's running jobs, to finish one at a time."""
    copies = copy.deepcopy(tjs)
    state = Admission()
    for t in copies:
        state.upsert(entry_of(t))
    by_key = {(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in copies}
    first = state.decide(sched, NOW)
    for key in first.admit:
        by_key[key]["status"]["queue"]["admittedTime"] = ts(0)
        by_key[key]["status"]["phase"] = "Running"
        state.upsert(entry_of(by_key[key]))
    for key, (position, reason) in first.positions.items():
        by_key[key]["status"]["queue"].update(position=position, reason=reason)
        state.upsert(entry_of(by_key[key]))
    return state, [t for t in copies if t["status"]["phase"] == "Running"]


def writes_after_one_finishes(tjs: list[dict[str, Any]]) -> int:
    """Status writes of the pass after one running job finishes, once earlier decisions are recorded: what
    admission costs in steady state (positions shift by one behind the admitted job)."""
    state, running = settled(tjs, SCHED)
    running[0]["status"]["phase"] = "Succeeded"
    state.upsert(entry_of(running[0]))
    second = state.decide(SCHED, NOW)
    return len(second.admit) + len(second.positions)


def baseline(tjs: list[dict[str, Any]]) -> list[tuple[int, str]]:
    waiting = [(-int(t["spec"]["priority"]), t["status"]["queue"]["enqueuedTime"]) for t in tjs
               if t["status"]["phase"] == "Queued"]
    waiting.sort()
    return [(p, e) for p, e in waiting]


def timed(fn: Any, arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(7)  # noqa: S311 (test data, not secrets)
    print(f"{'jobs':>7} {'decide ms':>10} {'baseline ms':>12} {'ratio':>6} {'1 change, no quotas ms':>23} "
          f"{'ratio':>6} {'1 change, quotas ms':>20} {'ratio':>6} {'admitted':>9} {'writes, 1st':>11} "
          f"{'writes, next':>12}")
    for n in args.sizes:
        tjs = jobs(n, rng)
        plain, quotas = settled(tjs, PLAIN), settled(tjs, SCHED)

        def one_change(steady: tuple[Admission, list[dict[str, Any]]], sched: Scheduling) -> None:
            state, running = steady
            t = running.pop()
            t["status"]["phase"] = "Succeeded"
            state.upsert(entry_of(t))
            state.decide(sched, NOW)

        d_times, b_times, i_times, q_times = [], [], [], []
        for _ in range(args.runs):  # alternate, so drift on a shared machine hits all alike
            d_times.append(timed(lambda x: decide(x, SCHED, NOW), tjs))
            b_times.append(timed(baseline, tjs))
            i_times.append(timed(lambda steady: one_change(steady, PLAIN), plain))
            q_times.append(timed(lambda steady: one_change(steady, SCHED), quotas))
        d, b = statistics.median(d_times), statistics.median(b_times)
        i, q = statistics.median(i_times), statistics.median(q_times)
        result = decide(tjs, SCHED, NOW)
        print(f"{n:>7} {d * 1000:>10.1f} {b * 1000:>12.1f} {d / b:>6.1f} {i * 1000:>23.2f} {i / b:>6.3f} "
              f"{q * 1000:>20.2f} {q / b:>6.2f} "
              f"{len(result.admit):>9} {len(result.admit) + len(result.positions):>11} "
              f"{writes_after_one_finishes(tjs):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
