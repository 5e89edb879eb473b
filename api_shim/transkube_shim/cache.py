"""The watch-fed cache of TranscodeJobs: one list+watch per process feeds every read and every SSE
subscriber. Writes go to the API server and their answers are folded in at once (read-your-writes).

Objects are stored as slim projections (`slim`): only what a read path uses. Once synced, the cache keeps
serving its last known state while the API server is unreachable (a restart, an outage); `stale_seconds`
says for how long it has not been in sync."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError
from .jobs import ANNOTATION_IDEMPOTENCY_KEY, ANNOTATION_REQUEST_HASH
from .kube import Kube
from .metrics import Metrics

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
log = logging.getLogger("transkube_shim.cache")

WATCH_TIMEOUT_SECONDS = 300
MAX_BACKOFF_SECONDS = 10  # between attempts to reach an API server that is gone (a restart takes seconds)
# metadata a read path uses: the cache key and version, job_view's fields, pagination's sort key.
SLIM_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
# The annotations a read uses (an idempotent replay compares the request hash). Not the rest of transkube.dev/:
# the operator's kopf diff base there is a whole copy of the spec.
KEPT_ANNOTATIONS = (ANNOTATION_REQUEST_HASH, ANNOTATION_IDEMPOTENCY_KEY)


def slim(obj: Obj) -> Obj:
    """The projection of a TranscodeJob the cache keeps: spec and status whole (the API serves them), and of
    metadata only SLIM_METADATA and KEPT_ANNOTATIONS. Dropped: managedFields, labels, finalizers, owner
    references, kubectl's last-applied-configuration, kopf's diff base and progress, every other annotation,
    apiVersion and kind. Pure; job_view(slim(obj)) == job_view(obj)."""
    meta = obj.get("metadata") or {}
    out_meta: Obj = {k: meta[k] for k in SLIM_METADATA if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in KEPT_ANNOTATIONS}
    if annotations:
        out_meta["annotations"] = annotations
    out: Obj = {"metadata": out_meta}
    for key in ("spec", "status"):
        if key in obj:
            out[key] = obj[key]
    return out


@dataclass(eq=False)
class Subscription:
    """One SSE client's view of one job: the newest object, and an event set when it changes. Updates
    coalesce, so a slow client never makes the watch wait."""

    key: Key
    latest: Obj | None = None
    deleted: bool = False
    closed: bool = False  # the server is shutting down
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, obj: Obj | None) -> None:
        if obj is None:
            self.deleted = True
        else:
            self.latest = obj
        self.changed.set()


def _rv(obj: Obj) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


def newer(candidate: Obj, current: Obj | None) -> bool:
    """Whether candidate should replace current. resourceVersions are etcd revisions on every API server
    we know; when one is not a number, the later arrival wins."""
    if current is None:
        return True
    a, b = _rv(candidate), _rv(current)
    return a is None or b is None or a >= b


class JobCache:
    def __init__(self, kube: Kube, metrics: Metrics) -> None:
        self.kube = kube
        self.metrics = metrics
        self.by_namespace: dict[str, dict[str, Obj]] = {}
        self.subscribers: dict[Key, set[Subscription]] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stale_since: float | None = None  # monotonic time the watch broke; None while in sync
        metrics.cache_stale_seconds.set_function(self.stale_seconds)

    # ---- reads ----

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.by_namespace.get(namespace, {}).get(name)

    def in_namespace(self, namespace: str) -> list[Obj]:
        return list(self.by_namespace.get(namespace, {}).values())

    def size(self) -> int:
        return sum(len(v) for v in self.by_namespace.values())

    def stale_seconds(self) -> float:
        """How long the cache has been out of touch with the API server (0 while in sync, or before the first
        sync: until then reads wait instead of answering)."""
        if self._stale_since is None:
            return 0.0
        return max(0.0, time.monotonic() - self._stale_since)

    def _mark_stale(self) -> None:
        if self._stale_since is None and self.synced.is_set():
            self._stale_since = time.monotonic()

    async def wait_synced(self, within: float = 10) -> None:
        if self.synced.is_set():
            return
        try:
            await asyncio.wait_for(self.synced.wait(), within)
        except TimeoutError as exc:
            raise ApiError(503, "not_ready", "the job cache is not synced with the API server yet",
                           headers={"Retry-After": "2"}) from exc

    # ---- updates ----

    def apply(self, obj: Obj) -> None:
        """Fold in an object from the watch or from a write's answer."""
        obj = slim(obj)
        meta = obj["metadata"]
        ns, name = meta.get("namespace"), meta.get("name")
        if not ns or not name:
            return
        jobs = self.by_namespace.setdefault(ns, {})
        if not newer(obj, jobs.get(name)):
            return
        jobs[name] = obj
        self._notify((ns, name), obj)

    def remove(self, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        jobs = self.by_namespace.get(ns)
        if jobs is not None and jobs.pop(name, None) is not None:
            if not jobs:
                del self.by_namespace[ns]
            self._notify((ns, name), None)

    def replace_all(self, items: list[Obj]) -> None:
        """After a (re)list: the new truth; subscribers hear about what changed or vanished."""
        old = self.by_namespace
        self.by_namespace = {}
        for obj in map(slim, items):
            meta = obj["metadata"]
            self.by_namespace.setdefault(meta.get("namespace", ""), {})[meta.get("name", "")] = obj
        for key in list(self.subscribers):
            before, after = old.get(key[0], {}).get(key[1]), self.get(*key)
            if after is None and before is not None:
                self._notify(key, None)
            elif after is not None and after is not before:
                self._notify(key, after)

    def _notify(self, key: Key, obj: Obj | None) -> None:
        for sub in self.subscribers.get(key, ()):
            sub.push(obj)

    # ---- subscriptions (SSE) ----

    def subscriber_count(self, key: Key) -> int:
        return len(self.subscribers.get(key, ()))

    @contextlib.contextmanager
    def subscribe(self, namespace: str, name: str) -> Iterator[Subscription]:
        key = (namespace, name)
        sub = Subscription(key, latest=self.get(namespace, name))
        self.subscribers.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            subs = self.subscribers.get(key)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.subscribers[key]

    def close_subscribers(self) -> None:
        """Graceful shutdown: every event stream ends after its current write."""
        for subs in self.subscribers.values():
            for sub in subs:
                sub.closed = True
                sub.changed.set()

    # ---- the one watch ----

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="transcodejob-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """List, then watch from the list's version until the watch expires (410) or breaks. A broken watch or
        a failed list (the API server restarting: connection refused, 5xx) changes nothing a reader sees but
        `stale_seconds`: the last known state stays, and we retry with capped, jittered backoff. The relist
        that follows brings every subscriber the changes it missed (replace_all)."""
        backoff = 0.5
        while True:
            try:
                items, rv = await self.kube.list_all_jobs()
                self.replace_all(items)
                self.metrics.cached_jobs.set(self.size())
                self.synced.set()
                if self._stale_since is not None:
                    log.info("job cache back in sync", extra={"stale_seconds": round(self.stale_seconds(), 1)})
                self._stale_since = None
                log.info("job cache synced", extra={"jobs": len(items), "resource_version": rv})
                backoff = 0.5
                while True:  # watch until the API server ends it, then resume from the last version seen
                    rv, gone = await self._watch(rv)
                    if gone:
                        self.metrics.watch_restarts.labels("expired").inc()
                        break  # 410: our version is too old, list again
                    self.metrics.watch_restarts.labels("timeout").inc()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep serving the last known state, and retry
                self._mark_stale()
                self.metrics.watch_restarts.labels("error").inc()
                log.warning("job watch failed; retrying", extra={"error": repr(exc)[:500], "backoff": backoff})
                await asyncio.sleep(backoff * (0.5 + random.random()))  # noqa: S311 (jitter, not crypto)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _watch(self, rv: str) -> tuple[str, bool]:
        self.metrics.upstream_watches.inc()
        try:
            async for event in self.kube.watch_jobs(rv, WATCH_TIMEOUT_SECONDS):
                kind = str(event.get("type"))
                obj = event.get("object") or {}
                self.metrics.watch_events.labels(kind.lower()).inc()
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return rv, True
                    raise RuntimeError(f"watch error: {json.dumps(obj)[:300]}")
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED"):
                    self.apply(obj)
                elif kind == "DELETED":
                    self.remove(obj)
                if new_rv:
                    rv = str(new_rv)
                self.metrics.cached_jobs.set(self.size())
            return rv, False
        finally:
            self.metrics.upstream_watches.dec()
