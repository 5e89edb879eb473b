"""Informers for everything the operator reads: client-go's list+watch, with its transform.

A paged LIST, then a WATCH from the list's resourceVersion, resumed from the last version seen when the API
server ends it, and a fresh LIST when that version has expired (410). Each object is transformed (slimmed,
or packed as compact JSON) the moment it is parsed, so the process holds one whole object at a time.

Why not kopf's watches and indexes, as before: kopf parks each object's whole body until every index holds its
initial listing. After a restart with 10,000 TranscodeJobs and their 10,000 Jobs the heap grew to hold them
all at once (539 MB), and pymalloc could not give that space back around the slim projections that outlived
them (212 arenas for 80 MB of live data at 3,300 objects). kopf also kept a per-object record of its own.

The HTTP work runs on a thread per stream (the Kubernetes client is synchronous). A sink takes the results on
the event loop, through call_soon_threadsafe, in the order the watch delivered, so readers need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from transkube_api.constants import GROUP, PLURAL, PRESET_PLURAL, VERSION

from . import metrics
from .cache import Key, Obj, owner_key

log = logging.getLogger("transkube.operator")

PAGE_SIZE = 500  # objects per LIST page: one page of Jobs is a few MB of JSON, parsed and transformed at once
WATCH_TIMEOUT_SECONDS = 270  # the API server ends each watch after this; we resume from the last version
MAX_BACKOFF_SECONDS = 10.0  # between attempts while the API server is unreachable (a restart takes seconds)


# ---- the store: pure, on the event loop -------------------------------------------------------------------

def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _rv(obj: Obj) -> str:
    """resourceVersion as the API server wrote it (opaque: compared for equality only)."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class Store:
    """Slim objects grouped by the TranscodeJob they belong to (their transkube.dev/transcodejob label)."""

    _by_owner: dict[Key, dict[str, Obj]] = field(default_factory=dict)
    _count: int = 0

    def children(self, key: Key) -> list[Obj]:
        return list((self._by_owner.get(key) or {}).values())

    def __len__(self) -> int:
        return self._count

    def upsert(self, obj: Obj) -> Key | None:
        key = owner_key(obj)
        if key is not None:
            children = self._by_owner.setdefault(key, {})
            name = _name(obj)
            self._count += name not in children
            children[name] = obj
        return key

    def delete(self, obj: Obj) -> Key | None:
        key = owner_key(obj)
        children = self._by_owner.get(key) if key is not None else None
        if children is not None:
            self._count -= children.pop(_name(obj), None) is not None
            if not children:
                del self._by_owner[key]  # type: ignore[arg-type]
        return key

    def replace(self, objs: Iterable[Obj], namespace: str | None = None) -> set[Key]:
        """A fresh listing (of one namespace, or of everything): keeps exactly `objs` there; returns the owners
        whose children were added, changed or removed."""
        fresh: dict[Key, dict[str, Obj]] = {}
        for obj in objs:
            key = owner_key(obj)
            if key is not None:
                fresh.setdefault(key, {})[_name(obj)] = obj
        stale = [k for k in self._by_owner if namespace is None or k[0] == namespace]
        changed = {k for k in stale if k not in fresh}
        for key, children in fresh.items():
            old = self._by_owner.get(key) or {}
            if {n: _rv(o) for n, o in old.items()} != {n: _rv(o) for n, o in children.items()}:
                changed.add(key)
        for key in stale:
            self._count -= len(self._by_owner.pop(key))
        for key, children in fresh.items():
            self._count += len(children) - len(self._by_owner.get(key) or {})
            self._by_owner[key] = children
        return changed


class Children:
    """The sink of Jobs or worker pods: a Store of slim objects; `on_change(key)` for each TranscodeJob whose
    children changed."""

    def __init__(self, resource: str, on_change: Callable[[Key], None]) -> None:
        self.resource = resource
        self.store = Store()
        self.on_change = on_change

    def listed(self, namespace: str, objs: list[Obj]) -> None:
        for key in self.store.replace(objs, namespace or None):
            self.on_change(key)
        metrics.CACHED_OBJECTS.labels(self.resource).set(len(self.store))

    def event(self, kind: str, obj: Obj) -> None:
        key = self.store.delete(obj) if kind == "DELETED" else self.store.upsert(obj)
        if key is not None:
            self.on_change(key)
        metrics.CACHED_OBJECTS.labels(self.resource).set(len(self.store))


class Named(dict[str, Obj]):
    """The sink of a cluster-scoped kind read by name (presets): name -> transformed object."""

    def listed(self, namespace: str, objs: list[Obj]) -> None:
        self.clear()
        self.update({o["metadata"]["name"]: o for o in objs})

    def event(self, kind: str, obj: Obj) -> None:
        if kind == "DELETED":
            self.pop(obj["metadata"]["name"], None)
        else:
            self[obj["metadata"]["name"]] = obj


# ---- the streams: a thread each, feeding the loop ----------------------------------------------------------

T = TypeVar("T")
Lister = Callable[..., Any]  # a generated client's list_* method (namespaced or for all namespaces)


class Sink(Protocol[T]):
    """Takes an informer's results on the event loop: a whole listing (of one namespace, or "" for all), then
    each watch event (ADDED, MODIFIED or DELETED)."""

    def listed(self, namespace: str, items: list[T]) -> None: ...

    def event(self, kind: str, item: T) -> None: ...


@dataclass
class Informer(Generic[T]):
    """One kind (`resource`: jobs, pods, transcodejobs, transcodepresets) with `selector`, in `namespaces`
    (empty: the whole cluster); `transform` runs on the thread, `sink` on the loop."""

    resource: str
    transform: Callable[[Obj], T]
    sink: Sink[T]
    selector: str = ""
    namespaces: list[str] = field(default_factory=list)
    synced: asyncio.Event = field(default_factory=asyncio.Event)  # every stream has listed once
    _listed: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self, api: client.ApiClient) -> None:
        self._loop = asyncio.get_running_loop()
        for namespace in self.namespaces or [""]:
            lister = _lister(api, self.resource, namespace)
            thread = threading.Thread(target=self._run, args=(namespace, lister), daemon=True,
                                      name=f"informer-{self.resource}-{namespace or 'all'}")
            thread.start()

    def stop(self) -> None:
        """The threads end at their next event or watch timeout; they are daemons, so exit never waits."""
        self._stop.set()

    def _listed_all(self, namespace: str, items: list[T]) -> None:  # on the loop
        self.sink.listed(namespace, items)
        self._listed.add(namespace)
        if len(self._listed) >= len(self.namespaces or [""]):
            self.synced.set()

    # -- on the thread --

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop has closed: we are shutting down
            self._loop.call_soon_threadsafe(fn, *args)

    def _run(self, namespace: str, lister: Lister) -> None:
        """List, then watch from the list's version until the API server ends the watch; resume from the last
        version seen, and list again when it has expired. While the API server is away the store keeps its last
        known state (reconciles read it; their writes fail and are retried) and we retry with jittered backoff."""
        rv = ""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list(namespace, lister)
                started = time.monotonic()
                rv = self._watch(lister, rv)
                if time.monotonic() - started < 1.0:  # ended at once: do not hammer the API server
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                else:
                    backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    rv = ""
                    metrics.WATCH_RESTARTS.labels(self.resource, "expired").inc()
                    continue
                backoff = self._retry_after(backoff, exc)
            except Exception as exc:  # connection refused or reset, timeouts: the API server restarting
                backoff = self._retry_after(backoff, exc)

    def _retry_after(self, backoff: float, exc: BaseException) -> float:
        """Waits out `backoff` (jittered) after a failure; returns the next one."""
        metrics.WATCH_RESTARTS.labels(self.resource, "error").inc()
        log.warning("%s watch failed (%s: %s); retrying", self.resource, type(exc).__name__, str(exc)[:300])
        self._stop.wait(backoff * (0.5 + random.random()))  # noqa: S311 (jitter, not crypto)
        return min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _list(self, namespace: str, lister: Lister) -> str:
        items: list[T] = []
        token: str | None = None
        rv = ""
        while True:
            kwargs: dict[str, Any] = {"label_selector": self.selector, "limit": PAGE_SIZE, "_request_timeout": 60,
                                      "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            page = json.loads(lister(**kwargs).data)
            items.extend(self.transform(o) for o in page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            token = meta.get("continue")
            del page
            if not token:
                break
        self._post(self._listed_all, namespace, items)
        log.info("%s listed: %d", self.resource, len(items), extra={"resource_version": rv})
        return rv

    def _watch(self, lister: Lister, rv: str) -> str:
        """Returns the last version seen (the watch ended normally); raises ApiException(410) when expired."""
        resp = lister(label_selector=self.selector, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                      timeout_seconds=WATCH_TIMEOUT_SECONDS, _preload_content=False,
                      _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30))
        try:
            for kind, obj in parse_events(iter_resp_lines(resp)):
                if self._stop.is_set():
                    break
                if kind == "ERROR":
                    raise ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("message")))
                rv = _rv(obj) or rv
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._post(self.sink.event, kind, self.transform(obj))
        finally:
            resp.release_conn()
        return rv


def parse_events(lines: Iterable[str | bytes]) -> Iterator[tuple[str, Obj]]:
    """(type, object) of each line of a watch stream."""
    for line in lines:
        event = json.loads(line)
        yield str(event.get("type")), event.get("object") or {}


def _lister(api: client.ApiClient, resource: str, namespace: str) -> Lister:
    if resource == "jobs":
        batch = client.BatchV1Api(api)
        if namespace:
            return lambda **kw: batch.list_namespaced_job(namespace, **kw)
        return cast(Lister, batch.list_job_for_all_namespaces)
    if resource == "pods":
        core = client.CoreV1Api(api)
        if namespace:
            return lambda **kw: core.list_namespaced_pod(namespace, **kw)
        return cast(Lister, core.list_pod_for_all_namespaces)
    custom = client.CustomObjectsApi(api)
    if resource == PLURAL:
        if namespace:
            return lambda **kw: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kw)
        return lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)
    if resource == PRESET_PLURAL:  # cluster-scoped: one stream whatever the namespaces
        return lambda **kw: custom.list_cluster_custom_object(GROUP, VERSION, PRESET_PLURAL, **kw)
    raise ValueError(f"no informer for {resource}")
