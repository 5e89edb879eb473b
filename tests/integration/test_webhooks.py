"""Webhook deliveries end to end on the local cluster: a TranscodeJob's spec.webhooks[] subscriptions, the operator
pod's outbox in status.webhookDeliveries, and a real HTTP receiver in this test process.

The operator pod runs as a process on this machine, so a receiver on 127.0.0.1 is reachable from it; the chart is
installed with webhooks.allowedCidrs=["127.0.0.0/8"], allowHttp=true and retrySchedule=[0,1,2,3,600] (conftest).
Every request is checked with the Standard Webhooks reference implementation (the `standardwebhooks` package).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from transkube_dev.kube import Kube, Obj

from .conftest import OPERATOR_NS, tj_path, wait_for
from .test_transcodejob import get_tj, slow_output, tj, upload, wait_phase

ALL_PHASES = ("Succeeded", "Failed", "Cancelled")
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
SECRET_NAME = "whsec"  # the Secret (its key: "secret") most tests sign with


# ---- the receiver ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answered: int
    at: float = field(default_factory=time.monotonic)  # when it arrived


class Receiver:
    """A local HTTP server recording every request; per path, a programmable sequence of response statuses
    (then 200 once it is used up)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._plans: dict[str, list[int]] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._record(self.command, self.path,
                                          {k.lower(): v for k, v in self.headers.items()}, body)
                payload = b"gone for good" if status == 410 else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_cls = type("Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        self._server: ThreadingHTTPServer = server_cls((host, 0), Handler)
        self.port = int(self._server.server_address[1])
        self.base = f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()

    def _record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            plan = self._plans.get(path) or []
            status = plan.pop(0) if plan else 200
            self._requests.append(Received(method, path, headers, body, status))
            return status

    def respond(self, path: str, *statuses: int) -> None:
        """Answer the next requests to `path` with these statuses, in order."""
        with self._lock:
            self._plans[path] = list(statuses)

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# ---- media, secrets, subscriptions -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short clip (a few seconds of work) and a long one (long enough to act on the job while it runs)."""
    d = tmp_path_factory.mktemp("webhook-media")

    def make(name: str, seconds: int, size: str) -> Path:
        path = d / name
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                        "-shortest", str(path)], check=True, timeout=300)
        return path

    return {"short": make("short.mp4", 4, "640x360"), "long": make("long.mp4", 20, "1280x720")}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def create_secret(kube: Kube, ns: str, name: str, value: str) -> None:
    kube.create(f"/api/v1/namespaces/{ns}/secrets", {"apiVersion": "v1", "kind": "Secret",
                                                     "metadata": {"name": name}, "stringData": {"secret": value}})


def hook(name: str, url: str, events: list[str], secret_name: str = SECRET_NAME, **extra: Any) -> Obj:
    return {"name": name, "url": url, "events": events, "secretRef": {"name": secret_name, "key": "secret"}, **extra}


def deliveries(kube: Kube, ns: str, name: str) -> list[Obj]:
    return list((get_tj(kube, ns, name).get("status") or {}).get("webhookDeliveries") or [])


def settled(kube: Kube, ns: str, name: str, timeout: float = 120) -> list[Obj]:
    """The outbox once it holds entries and none is Pending."""
    return list(wait_for(f"{name}'s webhook deliveries settled", lambda: (
        (d := deliveries(kube, ns, name)) and all(e["state"] != "Pending" for e in d) and d), timeout=timeout))


def attempted_all(kube: Kube, ns: str, name: str, subscriptions: int) -> list[Obj]:
    """The outbox once every subscription's entry has had at least one attempt."""
    return list(wait_for(f"{name}: an attempt on every subscription", lambda: (
        (d := deliveries(kube, ns, name)) and len(d) == subscriptions and all(e["attempts"] >= 1 for e in d)
        and d), timeout=120))


def verify(secret: str, req: Received) -> Obj:
    """The payload, once the reference implementation accepts the signature and timestamp."""
    assert req.method == "POST" and req.headers["content-type"] == "application/json"
    payload = Webhook(secret).verify(req.body, req.headers)
    assert isinstance(payload, dict)
    assert set(payload) == {"type", "timestamp", "data"}, payload
    return payload


def event_type(req: Received) -> str:
    return str(json.loads(req.body)["type"]).removeprefix("transcodejob.")


def operator_pods(kube: Kube) -> list[Obj]:
    return list(kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods", labelSelector=OPERATOR_SELECTOR)["items"])


# ---- tests -------------------------------------------------------------------------------------------------------


def test_all_events_are_delivered_signed_and_in_order(kube: Kube, tj_namespace: str, s3: Any,
                                                       clips: dict[str, Path], receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, SECRET_NAME, secret)
    events = ["queued", "started", "progress", "succeeded"]
    kube.create(tj_path(ns), tj("hooked", upload(s3, clips["short"]), webhooks=[
        hook("all", f"{receiver.base}/all", events, progressIntervalSeconds=5)]))
    obj = wait_phase(kube, ns, "hooked", ALL_PHASES)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    outbox = settled(kube, ns, "hooked")
    assert all(e["state"] == "Delivered" and e["attempts"] == 1 and e["responseStatus"] == 200 for e in outbox), outbox
    assert obj["status"]["webhooks"][0]["name"] == "all" and not obj["status"]["webhooks"][0].get("disabled")

    reqs = receiver.requests("/all")
    assert len(reqs) == len(outbox), (reqs, outbox)
    payloads = [verify(secret, r) for r in reqs]
    types = [p["type"].removeprefix("transcodejob.") for p in payloads]
    # Arrival order is event order: queued, started, any progress, succeeded.
    assert types[:2] == ["queued", "started"] and types[-1] == "succeeded", types
    assert set(types[2:-1]) <= {"progress"}, types
    stamps = [p["timestamp"] for p in payloads]
    assert stamps == sorted(stamps), stamps
    ids = [r.headers["webhook-id"] for r in reqs]
    assert len(set(ids)) == len(ids), ids
    assert sorted(ids) == sorted(e["id"] for e in outbox)
    expected_phase = {"queued": "Queued", "started": "Running", "progress": "Running", "succeeded": "Succeeded"}
    by_id = {e["id"]: e for e in outbox}
    for req, payload, kind in zip(reqs, payloads, types, strict=True):
        data = payload["data"]
        assert (data["name"], data["namespace"], data["phase"]) == ("hooked", ns, expected_phase[kind]), payload
        entry = by_id[req.headers["webhook-id"]]
        assert entry["type"] == payload["type"] and entry["eventTime"] == payload["timestamp"]
        assert entry["data"] == data
        assert req.headers["user-agent"].startswith("transkube-webhooks/")
    succeeded = payloads[-1]["data"]
    assert [o["name"] for o in succeeded["outputs"]] == ["web"]
    assert succeeded["uid"] == obj["metadata"]["uid"]
    for p in payloads:
        if p["type"] == "transcodejob.progress":
            assert 0 <= p["data"]["percent"] <= 100


def test_receiver_errors_are_retried_with_the_same_id(kube: Kube, tj_namespace: str, s3: Any,
                                                      clips: dict[str, Path], receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, SECRET_NAME, secret)
    receiver.respond("/flaky", 500, 500, 200)
    kube.create(tj_path(ns), tj("retried", upload(s3, clips["short"]), webhooks=[
        hook("flaky", f"{receiver.base}/flaky", ["succeeded"])]))
    assert wait_phase(kube, ns, "retried", ALL_PHASES)["status"]["phase"] == "Succeeded"
    (entry,) = settled(kube, ns, "retried")
    assert (entry["state"], entry["attempts"], entry["responseStatus"]) == ("Delivered", 3, 200), entry
    assert "lastError" not in entry
    reqs = receiver.requests("/flaky")
    assert [r.answered for r in reqs] == [500, 500, 200]
    assert {r.headers["webhook-id"] for r in reqs} == {entry["id"]}
    # The body is byte-identical on every attempt; each attempt is signed with its own (valid) timestamp.
    assert len({r.body for r in reqs}) == 1
    assert all(verify(secret, r)["type"] == "transcodejob.succeeded" for r in reqs)


def test_410_gone_disables_the_subscription(kube: Kube, tj_namespace: str, s3: Any, clips: dict[str, Path],
                                            receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, SECRET_NAME, secret)
    receiver.respond("/gone", 410)
    kube.create(tj_path(ns), tj("gone", upload(s3, clips["short"]), webhooks=[
        hook("gone", f"{receiver.base}/gone", ["started", "succeeded"])]))
    obj = wait_phase(kube, ns, "gone", ALL_PHASES)
    assert obj["status"]["phase"] == "Succeeded"
    (state,) = obj["status"]["webhooks"]
    assert state["disabled"] is True and "410" in state["disabledReason"], state
    outbox = settled(kube, ns, "gone")
    started = [e for e in outbox if e["type"] == "transcodejob.started"]
    assert len(started) == 1 and started[0]["state"] == "Abandoned", outbox
    assert started[0]["attempts"] == 1 and started[0]["responseStatus"] == 410
    assert started[0]["lastError"].startswith("Gone"), started[0]
    # Later events of a disabled subscription are never sent: not queued at all, or abandoned.
    assert all(e["state"] == "Abandoned" for e in outbox), outbox
    (req,) = receiver.requests()
    assert event_type(req) == "started" and req.answered == 410
    verify(secret, req)


def test_each_event_is_delivered_once_across_an_operator_restart(kube: Kube, tj_namespace: str, s3: Any,
                                                                 clips: dict[str, Path], receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, SECRET_NAME, secret)
    events = ["started", "progress", "succeeded", "failed", "cancelled"]
    kube.create(tj_path(ns), tj("restart", upload(s3, clips["long"]), slow_output(uuid.uuid4().hex), webhooks=[
        hook("once", f"{receiver.base}/once", events, progressIntervalSeconds=5)]))
    # Mid-job: started delivered, at least one progress event delivered too.
    wait_for("started and a progress event delivered", lambda: {"started", "progress"} <= {
        event_type(r) for r in receiver.requests()}, timeout=180)
    assert get_tj(kube, ns, "restart")["status"]["phase"] == "Running"
    (old,) = operator_pods(kube)
    kube.delete(f"/api/v1/namespaces/{OPERATOR_NS}/pods/{old['metadata']['name']}")
    wait_for("a new operator pod running", lambda: any(
        p["metadata"]["uid"] != old["metadata"]["uid"] and p["status"].get("phase") == "Running"
        for p in operator_pods(kube)), timeout=120)
    obj = wait_phase(kube, ns, "restart", ALL_PHASES, timeout=400)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    outbox = settled(kube, ns, "restart")
    assert all(e["state"] == "Delivered" for e in outbox), outbox

    reqs = receiver.requests("/once")
    ids = Counter(r.headers["webhook-id"] for r in reqs)
    assert all(n == 1 for n in ids.values()), f"webhook-ids POSTed more than once: {ids}"
    assert {e["id"] for e in outbox} <= set(ids)  # (old finished entries may have been trimmed from status)
    kinds = Counter(verify(secret, r)["type"].removeprefix("transcodejob.") for r in reqs)
    assert kinds["started"] == 1 and kinds["succeeded"] == 1, kinds
    assert kinds["failed"] == 0 and kinds["cancelled"] == 0 and kinds["progress"] >= 1, kinds


def test_internal_addresses_are_refused(kube: Kube, tj_namespace: str, s3: Any, clips: dict[str, Path],
                                        receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    create_secret(kube, ns, SECRET_NAME, secret)
    # A receiver on IPv6 loopback: reachable if the guard let [::1] through (127.0.0.0/8 does not cover it).
    try:
        v6: Receiver | None = Receiver("::1")
    except OSError:  # no IPv6 loopback here: the URL still must be refused, just nothing would listen
        v6 = None
    try:
        v6_url = f"{v6.base}/v6" if v6 else "http://[::1]:9/v6"
        urls = {"metadata": "http://169.254.169.254/latest/meta-data", "private": "http://10.0.0.1/hook",
                "loopback6": v6_url, "linklocal6": "http://[fe80::1]/", "gcp": "http://metadata.google.internal/"}
        # Spellings of the metadata address that only the resolver turns into it: decimal, mapped IPv6, octal.
        tricks = {"decimal": "http://2852039166/", "mapped": "http://[::ffff:169.254.169.254]/",
                  "octal": "http://0251.0376.0251.0376/", "nat64": "http://[64:ff9b::a9fe:a9fe]/",
                  "sixtofour": "http://[2002:a9fe:a9fe::1]/"}
        for name, table in (("refused", urls), ("tricks", tricks)):
            kube.create(tj_path(ns), tj(name, upload(s3, clips["short"]), webhooks=[
                hook(sub, url, ["succeeded"]) for sub, url in table.items()]))
        for name, table in (("refused", urls), ("tricks", tricks)):
            assert wait_phase(kube, ns, name, ALL_PHASES)["status"]["phase"] == "Succeeded"
            # Each refused attempt is recorded; after 4 (0+1+2+3 s) the next is 10 min away, so no final state.
            for entry in attempted_all(kube, ns, name, len(table)):
                assert entry["state"] != "Delivered" and "responseStatus" not in entry, entry
                allowed = {"AddressNotAllowed"} | ({"ResolveFailed"} if entry["webhook"] == "gcp" else set())
                assert entry["lastError"].split(":")[0] in allowed, entry
        assert receiver.requests() == []
        assert v6 is None or v6.requests() == []
    finally:
        if v6:
            v6.close()


def test_missing_secret_is_retried_until_it_exists(kube: Kube, tj_namespace: str, s3: Any, clips: dict[str, Path],
                                                   receiver: Receiver) -> None:
    ns, secret = tj_namespace, new_secret()
    # The queued event fires as soon as the job exists, before any transcoding.
    kube.create(tj_path(ns), tj("nosecret", upload(s3, clips["short"]), webhooks=[
        hook("late", f"{receiver.base}/late", ["queued"], secret_name="late-secret")]))
    first = wait_for("a SecretNotFound attempt", lambda: next(
        (e for e in deliveries(kube, ns, "nosecret") if e.get("attempts", 0) >= 1), None), timeout=60, interval=0.1)
    create_secret(kube, ns, "late-secret", secret)
    assert first["state"] == "Pending" and first["lastError"].startswith("SecretNotFound"), first
    assert "late-secret" in first["lastError"]
    assert receiver.requests() == [], "nothing is POSTed without a signing secret"
    # Retries come 1, 2 and 3 s apart, then 10 min: the Secret must exist before the 4th failure.
    at_creation = deliveries(kube, ns, "nosecret")[0]
    assert at_creation["state"] == "Delivered" or at_creation["attempts"] < 4, \
        f"the Secret came too late to observe the short retries: {at_creation}"
    (entry,) = settled(kube, ns, "nosecret", timeout=60)
    assert entry["state"] == "Delivered" and entry["attempts"] >= 2 and entry["responseStatus"] == 200, entry
    (req,) = receiver.requests("/late")
    assert req.headers["webhook-id"] == entry["id"]
    payload = verify(secret, req)
    assert payload["type"] == "transcodejob.queued" and payload["data"]["name"] == "nosecret"
