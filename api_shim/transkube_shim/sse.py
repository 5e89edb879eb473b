"""Server-Sent Events for one job: its state on connect, then phase, stage and progress changes, and a final
completed / failed / cancelled / deleted event; a heartbeat while nothing happens. Every subscriber of every
job is fed by the cache's one watch; updates coalesce per subscriber, so a slow client sees fewer progress
events, never stale ones.

Event ids are the job's resourceVersion. A client reconnecting with Last-Event-ID (a dropped connection, a
replica going away) gets the current state unless that id is still current, and always the terminal event of a
job that has ended: a gap in terminal events is never possible, a repeated one is (clients treat it as
idempotent). While the API server is away the stream stays open on heartbeats; the cache's relist brings what
changed meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .cache import JobCache
from .config import ShimConfig
from .errors import ApiError
from .jobs import is_terminal, job_view, phase
from .metrics import Metrics

Obj = dict[str, Any]
Event = tuple[str, Obj]
TERMINAL_EVENTS = {"Succeeded": "completed", "Failed": "failed", "Cancelled": "cancelled"}


def encode(event: str, data: Obj, event_id: str | None = None) -> bytes:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


@dataclass
class Tracker:
    """What this client was last told; turns each new object into the events it implies."""

    phase: str | None = None
    stage: str | None = None
    percent: float | None = None
    done: bool = False
    sent: list[str] = field(default_factory=list)

    def initial(self, obj: Obj, last_event_id: str | None = None) -> list[Event]:
        """The events a new connection starts with. last_event_id is the client's Last-Event-ID on a
        reconnect: when it names the current version, the client already has this state, so only a terminal
        event (which may be what it missed) is sent."""
        self._remember(obj)
        resumed = last_event_id is not None and last_event_id == _rv(obj)
        events: list[Event] = [] if resumed else [("state", job_view(obj))]
        return events + self._terminal(obj)

    def update(self, obj: Obj) -> list[Event]:
        if self.done:
            return []
        status = obj.get("status") or {}
        progress = status.get("progress") or {}
        events: list[Event] = []
        new_phase = phase(obj)
        if new_phase != self.phase:
            events.append(("phase", {"from": self.phase, "to": new_phase, "reason": status.get("reason"),
                                     "message": status.get("message")}))
        stage = progress.get("stage")
        if stage and stage != self.stage:
            events.append(("stage", {"from": self.stage, "to": stage}))
        percent = progress.get("percent")
        if progress and (percent != self.percent or stage != self.stage):
            events.append(("progress", dict(progress)))
        self._remember(obj)
        return events + self._terminal(obj)

    def _remember(self, obj: Obj) -> None:
        progress = (obj.get("status") or {}).get("progress") or {}
        self.phase = phase(obj)
        self.stage = progress.get("stage") or self.stage
        self.percent = progress.get("percent", self.percent)

    def _terminal(self, obj: Obj) -> list[Event]:
        name = TERMINAL_EVENTS.get(phase(obj))
        if name is None or not is_terminal(obj):  # a Failed job with a retry pending goes on: keep streaming
            return []
        self.done = True
        return [(name, job_view(obj))]


async def stream(request: web.Request, cache: JobCache, config: ShimConfig, metrics: Metrics,
                 namespace: str, name: str) -> web.StreamResponse:
    if cache.get(namespace, name) is None:
        raise ApiError(404, "not_found", f"no job named {name!r}")
    if cache.subscriber_count((namespace, name)) >= config.sse_max_per_job:
        raise ApiError(429, "too_many_subscribers",
                       f"this job already has {config.sse_max_per_job} event streams open",
                       headers={"Retry-After": "5"})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    with cache.subscribe(namespace, name) as sub:
        await response.prepare(request)
        metrics.sse_connections.inc()
        try:
            await response.write(b"retry: 3000\n\n")
            sub.changed.clear()
            obj = sub.latest
            if obj is None:  # deleted between the check and the subscription
                await response.write(encode("deleted", {"name": name}))
                return response
            tracker = Tracker()
            for event, data in tracker.initial(obj, last_event_id(request)):
                await response.write(encode(event, data, _rv(obj)))
            while not tracker.done and not sub.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.changed.wait(), config.sse_heartbeat_seconds)
                if not sub.changed.is_set():
                    await response.write(encode("heartbeat", {"time": round(time.time(), 3)}))
                    continue
                sub.changed.clear()
                if sub.deleted:
                    await response.write(encode("deleted", {"name": name}))
                    break
                if sub.latest is not None:
                    for event, data in tracker.update(sub.latest):
                        await response.write(encode(event, data, _rv(sub.latest)))
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away
        finally:
            metrics.sse_connections.dec()
    with contextlib.suppress(ConnectionResetError, ConnectionError):
        await response.write_eof()
    return response


def last_event_id(request: web.Request) -> str | None:
    value = request.headers.get("Last-Event-ID", "").strip()
    return value or None


def _rv(obj: Obj) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None
