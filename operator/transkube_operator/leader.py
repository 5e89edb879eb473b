"""Leader election on a coordination.k8s.io Lease, with client-go's semantics.

Only the leader runs kopf (handlers, watches, admission, webhook delivery); a standby waits in `acquire()`
before kopf starts. Why not kopf's own peering: a kopf peer pauses when it sees a higher-priority peer, but
two peers that start together both run until they see each other's peering object, so it is not mutual
exclusion. A Lease is.

The rules (as client-go's leaderelection package):
- A candidate takes the Lease when it is free (no holder) or when it has seen the same record, unchanged, for
  leaseDurationSeconds *on its own monotonic clock* (client-go's observedTime). renewTime written by another
  machine is never compared with the local wall clock, so clock skew cannot shorten a lease.
- Every write is an update with the resourceVersion it read: of two candidates, one wins and the other gets a
  409 Conflict.
- The leader renews every retryPeriod. If it has not renewed for renewDeadline (< leaseDuration), it fences
  itself: it exits at once, before any standby may take the Lease, and Kubernetes restarts it as a standby.
- On a graceful stop (SIGTERM) it releases the Lease (no holder, duration 1 s), so a standby takes over at once.

The decisions are pure functions below (unit-tested); `Elector` is the thin I/O loop around them.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import LeaderElection

Obj = dict[str, Any]
MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


# ---- pure decisions --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LeaseRecord:
    """The Lease spec fields leader election uses (client-go's LeaderElectionRecord)."""

    holder: str = ""
    duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Obj) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "", duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def spec(self) -> Obj:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time, "leaseTransitions": self.transitions}


@dataclass(frozen=True)
class Observation:
    """The record a candidate last saw, and when (its own monotonic clock) it last saw it change."""

    record: LeaseRecord
    observed_at: float


def observe(previous: Observation | None, record: LeaseRecord, now: float) -> Observation:
    """The observation after reading `record` at monotonic `now`: its clock restarts only when the record changed
    (a renewal changes renewTime), so a lease expires leaseDuration after its last renewal *as seen here*."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def may_acquire(observation: Observation | None, identity: str, now: float) -> bool:
    """Should this candidate try to write itself as holder? Only into a free Lease, one it already holds, or one
    whose holder has not renewed for leaseDuration on this candidate's clock."""
    if observation is None:  # no Lease yet: create it
        return True
    record = observation.record
    if not record.holder or record.holder == identity:
        return True
    return now >= observation.observed_at + record.duration_seconds


def micro_time(wall: dt.datetime) -> str:
    return wall.astimezone(dt.UTC).strftime(MICRO_TIME)


def claimed(current: LeaseRecord | None, identity: str, duration_seconds: int, wall: dt.datetime) -> LeaseRecord:
    """The record to write to acquire or renew: a renewal keeps acquireTime and the transition count; taking the
    Lease from someone else (or from nobody after a release) counts one transition."""
    now = micro_time(wall)
    if current is not None and current.holder == identity:
        return LeaseRecord(identity, duration_seconds, current.acquire_time or now, now, current.transitions)
    transitions = current.transitions + 1 if current is not None else 0
    return LeaseRecord(identity, duration_seconds, now, now, transitions)


def released(current: LeaseRecord, wall: dt.datetime) -> LeaseRecord:
    """What a leader writes when it stops gracefully (client-go's ReleaseOnCancel): no holder, 1 s duration."""
    now = micro_time(wall)
    return LeaseRecord("", 1, now, now, current.transitions)


def must_fence(last_renewed: float | None, now: float, renew_deadline: float) -> bool:
    """A leader that has not renewed for renewDeadline must stop reconciling now: renewDeadline < leaseDuration,
    so it is gone before any standby may take the Lease. last_renewed is when the last successful renewal was
    *sent* (not answered), the conservative end."""
    return last_renewed is not None and now - last_renewed >= renew_deadline


def lease_manifest(name: str, namespace: str, record: LeaseRecord, resource_version: str | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if resource_version:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": record.spec()}


def default_identity(pod_name: str | None = None) -> str:
    """Pod name (unique among live replicas) plus a random suffix (unique across restarts of one pod), as client-go."""
    return f"{pod_name or socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def log_event(event: str, identity: str, **fields: Any) -> None:
    """One JSON line per leadership change, with both clocks (tests order replicas by the monotonic one)."""
    line = {"message": event, "identity": identity, "monotonic": time.monotonic(),
            "timestamp": dt.datetime.now(dt.UTC).isoformat(), **fields}
    print(json.dumps(line), file=sys.stderr, flush=True)


# ---- I/O -------------------------------------------------------------------------------------------------

class LeaseApi:
    """Get / create / replace of one Lease with the official client; the replace carries resourceVersion."""

    def __init__(self, name: str, namespace: str, timeout: float):
        from kubernetes import client

        self.name, self.namespace, self.timeout = name, namespace, timeout
        self.api = client.CoordinationV1Api()

    def get(self) -> tuple[LeaseRecord, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False,
                                                      _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        lease = json.loads(response.data)
        return LeaseRecord.from_lease(lease), str(lease["metadata"]["resourceVersion"])

    def write(self, record: LeaseRecord, resource_version: str | None) -> str:
        """Creates the Lease (no resourceVersion) or replaces the version read; raises ApiException 409 when
        someone else wrote in between. Returns the new resourceVersion."""
        body = lease_manifest(self.name, self.namespace, record, resource_version)
        if resource_version is None:
            response = self.api.create_namespaced_lease(self.namespace, body, _preload_content=False,
                                                        _request_timeout=self.timeout)
        else:
            response = self.api.replace_namespaced_lease(self.name, self.namespace, body, _preload_content=False,
                                                         _request_timeout=self.timeout)
        return str(json.loads(response.data)["metadata"]["resourceVersion"])


class HealthServer:
    """/healthz while standing by, so a standby passes its liveness probe; closed before kopf takes the port.

    On a real cluster every pod has its own network. On the dev cluster pods share the host's, so a surge pod
    may find the port still held by the pod it replaces: it then serves no /healthz while it waits (the dev node
    agent runs no probes) rather than crash or take the port the next leader's kopf needs."""

    def __init__(self, port: int, identity: str):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path.split("?")[0] == "/healthz"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"standby": true}' if ok else b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server: http.server.ThreadingHTTPServer | None = None
        try:
            self.server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 (pod network)
        except OSError as e:
            log_event("leader election: standby /healthz not served", identity, error=str(e))
            return
        threading.Thread(target=self.server.serve_forever, name="standby-healthz", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# Set while this process may write (it holds the Lease, or runs without leader election). The reconcile and
# delivery workers wait for it and check it before every write: fencing without a restart.
LEADING = threading.Event()


class Fenced(RuntimeError):
    """A write was about to happen while this replica does not hold the Lease."""


def check_leading() -> None:
    if not LEADING.is_set():
        raise Fenced("this replica does not hold the leader Lease")


class Elector:
    """Blocks in acquire() until leader; then renews in a thread. When renewal fails for renewDeadline it fences:
    LEADING is cleared (no more writes; reads and watches go on) and it stands by in the same loop, leading again
    the moment it holds the Lease again. An API server restart therefore costs a pause, not a process."""

    def __init__(self, cfg: LeaderElection, identity: str, api: LeaseApi | None = None,
                 on_change: Callable[[bool], Any] | None = None, leading: threading.Event = LEADING):
        self.cfg, self.identity = cfg, identity
        self.api = api or LeaseApi(cfg.lease_name, cfg.lease_namespace, timeout=cfg.retry_period_seconds)
        self.on_change = on_change
        self.leading = leading
        self.observation: Observation | None = None
        self.resource_version: str | None = None
        self.last_renewed: float | None = None  # monotonic, when the last successful write was sent
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def try_write(self) -> bool:
        """One round: read, decide, write. True when this candidate holds the Lease after it."""
        from kubernetes.client.exceptions import ApiException

        now = time.monotonic()
        renewing = self.leading.is_set() and self.resource_version is not None and self.observation is not None \
            and self.observation.record.holder == self.identity
        if not renewing:  # a leader renews from its own last write (a 409 sends it back here): one request a round
            got = self.api.get()
            now = time.monotonic()
            if got is None:
                self.observation, self.resource_version = None, None
            else:
                record, self.resource_version = got
                self.observation = observe(self.observation, record, now)
        if not may_acquire(self.observation, self.identity, now):
            return False
        current = self.observation.record if self.observation else None
        record = claimed(current, self.identity, self.cfg.lease_duration_seconds, dt.datetime.now(dt.UTC))
        sent = time.monotonic()
        try:
            self.resource_version = self.api.write(record, self.resource_version)
        except ApiException as e:
            if e.status == 409:  # someone else wrote first; read again next round
                self.resource_version = None
                return False
            raise
        self.observation = Observation(record, sent)
        self.last_renewed = sent
        return True

    def acquire(self) -> None:
        log_event("leader election: standing by", self.identity,
                  lease=f"{self.cfg.lease_namespace}/{self.cfg.lease_name}")
        while True:
            try:
                if self.try_write():
                    break
            except Exception as e:  # the API server may be away; keep trying
                log_event("leader election: lease not reachable", self.identity, error=str(e)[:200])
            time.sleep(self.cfg.retry_period_seconds)
        self._lead()
        self.threads = [threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True),
                        threading.Thread(target=self._fence_loop, name="lease-fence", daemon=True)]
        for t in self.threads:
            t.start()

    def _renew_loop(self) -> None:
        while not self.stopping.wait(self.cfg.retry_period_seconds):
            try:
                with self.lock:
                    if self.stopping.is_set():
                        return
                    held = self.try_write()
                if held and not self.leading.is_set():
                    self._lead()
                elif not held and self.observation and self.observation.record.holder != self.identity:
                    self._lost(f"the lease is held by {self.observation.record.holder}")
            except Exception as e:  # retried until renewDeadline; the fence loop decides
                log_event("leader election: renew failed", self.identity, error=str(e)[:200])

    def _fence_loop(self) -> None:
        while not self.stopping.wait(0.2):
            if self.leading.is_set() and must_fence(self.last_renewed, time.monotonic(),
                                                    self.cfg.renew_deadline_seconds):
                self._lost(f"not renewed for {self.cfg.renew_deadline_seconds}s")

    def _lead(self) -> None:
        self.leading.set()
        log_event("leader acquired", self.identity, lease=f"{self.cfg.lease_namespace}/{self.cfg.lease_name}",
                  transitions=self.observation.record.transitions if self.observation else 0)
        if self.on_change:
            self.on_change(True)

    def _lost(self, why: str) -> None:
        # Fencing: writes stop before the Lease can expire for anyone else (renewDeadline < leaseDuration).
        if self.stopping.is_set() or not self.leading.is_set():
            return
        self.leading.clear()
        log_event("leader lost", self.identity, reason=why)
        if self.on_change:
            self.on_change(False)

    def release(self) -> None:
        """Graceful stop (after kopf has stopped): hand the Lease over at once."""
        self.stopping.set()
        self.leading.clear()
        with self.lock:
            try:
                got = self.api.get()
                if got is not None and got[0].holder == self.identity:
                    self.api.write(released(got[0], dt.datetime.now(dt.UTC)), got[1])
            except Exception as e:
                log_event("leader election: release failed", self.identity, error=str(e)[:200])
        log_event("leader lost", self.identity, reason="released on shutdown")
