"""Pure: what the operator keeps in memory of the objects it watches, and how it merges its own writes.

The informers (informer.py) keep slim projections of Jobs, pods and TranscodeJobs (for admission): only the
fields that reconcile.plan(), history and queue.decide() read, made as each object streams in. Memory then grows
with what decisions need, not with whole objects (a Job's pod template is most of its size).

The operator's own writes (a created Job, a status patch) come back in the API server's response before the
watch delivers them; `newest` lets a reconcile see its own writes at once, so it never repeats one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from transkube_api.constants import LABEL_JOB

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, TranscodeJob name)

_META_KEYS = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
              "deletionTimestamp", "labels", "annotations", "ownerReferences")


def _meta(obj: Obj, keys: Iterable[str] = _META_KEYS) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in keys if k in meta}


def slim_job(job: Obj) -> Obj:
    """What plan() reads of a Job: identity, labels, owner, suspend, status (a few conditions and counters)."""
    spec = job.get("spec") or {}
    return {"metadata": _meta(job), "spec": {"suspend": spec.get("suspend")},
            "status": dict(job.get("status") or {})}


def slim_pod(pod: Obj) -> Obj:
    """What plan() and history read of a worker pod: identity, node, phase, conditions, container states."""
    status = pod.get("status") or {}
    return {"metadata": _meta(pod, ("name", "namespace", "uid", "resourceVersion", "creationTimestamp",
                                    "deletionTimestamp", "labels")),
            "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
            "status": {k: status[k] for k in ("phase", "conditions", "startTime", "containerStatuses",
                                              "initContainerStatuses", "reason", "message") if k in status}}


def slim_queue_entry(tj: Obj) -> Obj:
    """What admission (queue.entry_of) reads of a TranscodeJob."""
    spec = tj.get("spec") or {}
    status = tj.get("status") or {}
    return {"metadata": _meta(tj, ("name", "namespace", "uid", "creationTimestamp", "resourceVersion")),
            "spec": {k: spec[k] for k in ("priority", "cancel", "suspend") if k in spec},
            "status": {k: status[k] for k in ("phase", "reason", "failureCategory", "queue") if k in status}}


def strip(body: Obj) -> Obj:
    """A TranscodeJob body as the reconcile keeps it: without managedFields (large, never read)."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def preset_entry(preset: Obj) -> Obj:
    """What a reconcile reads of a TranscodePreset: name, generation and spec."""
    meta = preset.get("metadata") or {}
    return {"metadata": {"name": meta.get("name"), "generation": meta.get("generation")},
            "spec": dict(preset.get("spec") or {})}


@dataclass(frozen=True)
class Packed:
    """A TranscodeJob as its informer hands it over (made on the informer's thread): its key, identity, the
    compact JSON a reconcile decodes, and admission's slim entry."""

    key: Key
    uid: str
    resource_version: int
    data: bytes
    entry: Obj

    @property
    def phase(self) -> str | None:
        return (self.entry.get("status") or {}).get("phase")


def compact(body: Obj) -> bytes:
    """A TranscodeJob body as Bodies keeps it: stripped, compact JSON."""
    return json.dumps(strip(body), separators=(",", ":")).encode()


def pack(tj: Obj) -> Packed:
    meta = tj.get("metadata") or {}
    return Packed((str(meta.get("namespace") or ""), str(meta.get("name") or "")), str(meta.get("uid") or ""),
                  resource_version(tj), compact(tj), slim_queue_entry(tj))


@dataclass
class Bodies:
    """The TranscodeJob bodies the reconcile reads, as compact JSON: a parsed body costs about five times its
    JSON in Python objects, and at 10,000 jobs that difference is most of the operator's memory. Decoded on
    each read (tens of microseconds, once per reconcile). Identity and resourceVersion are kept apart, so the
    watch's echo of our own write is recognised without decoding."""

    _items: dict[Key, tuple[str, int, bytes]] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> Obj | None:
        item = self._items.get(key)
        return None if item is None else dict(json.loads(item[2]))

    def identity(self, key: Key) -> tuple[str, int] | None:
        """(uid, resourceVersion) of the body kept, without decoding it."""
        item = self._items.get(key)
        return None if item is None else (item[0], item[1])

    def __iter__(self) -> Iterator[Key]:
        return iter(list(self._items))

    def put(self, key: Key, body: Obj) -> None:
        self._items[key] = (str((body.get("metadata") or {}).get("uid") or ""), resource_version(body), compact(body))

    def put_packed(self, item: Packed) -> None:
        self._items[item.key] = (item.uid, item.resource_version, item.data)

    def put_newer(self, key: Key, body: Obj) -> None:
        """Keeps `body` if it is the same object as the one kept and at least as new (a write's answer)."""
        held = self.identity(key)
        uid = (body.get("metadata") or {}).get("uid")
        if held is not None and held[0] == uid and resource_version(body) >= held[1]:
            self.put(key, body)

    def pop(self, key: Key) -> None:
        self._items.pop(key, None)


def owner_key(obj: Obj) -> Key | None:
    """The TranscodeJob a Job or worker pod belongs to, from its transkube.dev/job label."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(LABEL_JOB)
    return (str(meta.get("namespace")), str(owner)) if owner and meta.get("namespace") else None


def resource_version(obj: Obj | None) -> int:
    """resourceVersion as a number (etcd revisions); 0 when absent or not numeric."""
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return 0


def newest(a: Obj | None, b: Obj | None) -> Obj | None:
    """The later of two copies of one object (by resourceVersion; `b` wins a tie)."""
    if a is None or b is None:
        return b if b is not None else a
    return a if resource_version(a) > resource_version(b) else b


def merge_children(watched: Iterable[Obj], written: dict[str, Obj]) -> list[Obj]:
    """The children (Jobs or pods) of one TranscodeJob: the watch's copies, overlaid with the newer copies the
    operator's own writes returned. Sorted by name for stable plans."""
    by_name: dict[str, Obj] = {}
    for obj in watched:
        by_name[obj["metadata"]["name"]] = obj
    for name, obj in written.items():
        chosen = newest(by_name.get(name), obj)
        if chosen is not None:
            by_name[name] = chosen
    return [by_name[n] for n in sorted(by_name)]


def stale_writes(watched: Iterable[Obj], written: dict[str, Obj]) -> list[str]:
    """Names of remembered writes the watch has caught up with (it holds the same or a newer version)."""
    seen = {o["metadata"]["name"]: resource_version(o) for o in watched}
    return [n for n, o in written.items() if n in seen and seen[n] >= resource_version(o)]


def queue_view(entry: Obj, pending: Obj | None) -> Obj:
    """A queue entry as admission must see it: with an admission decision that the job's reconcile has not
    written yet (so a slot is never given twice). Keys with None in `pending` are removed."""
    if not pending:
        return entry
    status = dict(entry.get("status") or {})
    queue = {**(status.get("queue") or {}), **pending}
    status["queue"] = {k: v for k, v in queue.items() if v is not None}
    return {**entry, "status": status}


def decision_written(entry: Obj, pending: Obj) -> bool:
    """Whether a job's status already shows an admission decision (or the job no longer waits for one)."""
    status = entry.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed", "Cancelled"):
        return True
    queue = status.get("queue") or {}
    if pending.get("admittedTime"):
        return bool(queue.get("admittedTime"))
    return all(queue.get(k) == v for k, v in pending.items())
