"""The operator's work queue, after client-go's workqueue: keys, not events.

- A key added many times before a worker takes it is processed once (events coalesce).
- A key is never processed by two workers at once: added while in flight, it is processed again afterwards.
- `add_after` is the one timer wheel: a heap keyed by due time (retry backoff ends, stall deadlines, GPU
  fallback, retention, webhook retries). It wakes for the earliest due key only; nothing polls per object.
- `retry` requeues a key whose reconcile failed, with per-key exponential backoff.

Everything runs on one asyncio loop; no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic, base_delay: float = 0.5,
                 max_delay: float = 60.0) -> None:
        self._clock = clock
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()  # queued (in _ready, or to be re-queued when its worker is done)
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}  # when a queued key was first added (the queue's lag)
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # the earliest pending add_after per key
        self._seq = 0
        self._failures: dict[K, int] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._wakeup = asyncio.Event()  # a key became ready
        self._timer_changed = asyncio.Event()  # the earliest due time moved earlier

    def __len__(self) -> int:
        return len(self._ready)

    @property
    def delayed(self) -> int:
        return len(self._due)

    def add(self, key: K, urgent: bool = False) -> None:
        """Queues `key`; `urgent` puts it first (a job nobody has acted on yet, seen while an operator that just
        started reconciles every existing job once: the new one should not wait behind them all)."""
        if key in self._dirty:
            if urgent and key in self._ready and self._ready[0] != key:
                self._ready.remove(key)
                self._ready.appendleft(key)
            return
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key not in self._processing:
            if urgent:
                self._ready.appendleft(key)
            else:
                self._ready.append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        """Adds `key` once `delay` seconds have passed; an earlier pending time for the key wins."""
        if delay <= 0:
            self.add(key)
            return
        due = self._clock() + delay
        if key in self._due and self._due[key] <= due:
            return
        earliest = self._heap[0][0] if self._heap else None
        self._due[key] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, key))
        if earliest is None or due < earliest:
            self._timer_changed.set()

    def retry(self, key: K) -> float:
        """Requeues a failed key after an exponential backoff (0.5 s, 1 s, 2 s ... 60 s); returns the delay."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay = float(min(self._base_delay * (2 ** n), self._max_delay))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key's reconcile succeeded: its backoff starts over."""
        self._failures.pop(key, None)

    def discard_timer(self, key: K) -> None:
        """Drops a pending add_after (the object is gone); the heap entry is skipped when it surfaces."""
        self._due.pop(key, None)

    async def get(self) -> tuple[K, float]:
        """The next key and how long it waited in the queue; the caller must call done(key)."""
        while not self._ready:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        waited = self._clock() - self._added_at.pop(key, self._clock())
        return key, max(0.0, waited)

    def busy(self, key: K) -> bool:
        return key in self._processing

    def hold(self, key: K) -> bool:
        """Claims a key for other work on the same object (a webhook delivery): while held, no worker gets it;
        adds meanwhile are processed after release (done). False if a worker has it now."""
        if key in self._processing:
            return False
        self._processing.add(key)
        if key in self._dirty:
            self._ready.remove(key)  # re-queued by done()
        return True

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:  # added again while in flight
            self._ready.append(key)
            self._wakeup.set()

    def pop_due(self) -> float | None:
        """Moves every due key to the ready queue; returns seconds until the next one (None: none pending)."""
        now = self._clock()
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:  # superseded by an earlier time, or discarded
                heapq.heappop(self._heap)
                continue
            if due > now:
                return due - now
            heapq.heappop(self._heap)
            del self._due[key]
            self.add(key)
        return None

    async def run_timers(self) -> None:
        """The timer wheel's task: sleeps until the earliest due key (or until an earlier one is added)."""
        while True:
            wait = self.pop_due()
            self._timer_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_changed.wait(), timeout=wait)
