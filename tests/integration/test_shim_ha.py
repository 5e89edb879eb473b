"""The shim through an API server restart: kube-apiserver is stopped for ~10 s while a job is followed over SSE.
Reads keep answering from the watch-fed cache (with X-Cache-Stale-Seconds), readiness holds, writes fail with
503 upstream_unavailable, event streams stay open on heartbeats; once the API server is back the job runs to
completion and both the open stream and the CLI's (reconnected with Last-Event-ID) deliver the terminal event.
Bounded: about a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from transkube_cli.backends import ShimBackend
from transkube_dev.cluster import ClusterState, LocalCluster
from transkube_shim.config import ShimConfig
from transkube_shim.openapi import STALE_HEADER
from transkube_shim.state import CACHE

from .conftest import wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import ShimServer, Tenant
from .test_shim_jobs import job_spec, upload

pytestmark = pytest.mark.integration
OUTAGE_SECONDS = 10
TERMINAL = ("completed", "failed", "cancelled", "deleted")
Event = tuple[str, dict[str, Any], str | None]  # (event, data, id)


def sse_events(resp: requests.Response) -> Iterator[Event]:
    """(event, data, id) of a text/event-stream, through the CLI's parser (ids persist across events)."""
    from transkube_cli import sse

    for event in sse.events(line for line in resp.iter_lines(decode_unicode=True)):
        yield event.name, event.data, event.id


class Reader(threading.Thread):
    """Reads one SSE connection to its end, recording (event, data, id, monotonic time received)."""

    def __init__(self, resp: requests.Response) -> None:
        super().__init__(daemon=True)
        self.resp = resp
        self.seen: list[tuple[str, dict[str, Any], str | None, float]] = []

    def run(self) -> None:
        with self.resp:
            for name, data, event_id in sse_events(self.resp):
                self.seen.append((name, data, event_id, time.monotonic()))
                if name in TERMINAL:
                    return

    def kinds(self) -> list[str]:
        return [e[0] for e in self.seen]


def test_reads_and_event_streams_survive_an_api_server_restart(
        tenant: Callable[..., Tenant], s3: Any, media_files: dict[str, Path], cluster: ClusterState,
        shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> None:
    server = start_shim(shim_config, sse_heartbeat_seconds=1)
    wait_for("shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200)
    t = tenant(url=server.url)
    # Suspended, so nothing happens until we resume it after the restart (a write the outage must refuse).
    created = t.post("/api/v1/jobs", json=job_spec(t, upload(s3, t, media_files["short"]), suspend=True))
    assert created.status_code == 201, created.text
    name = created.json()["name"]
    job_url = f"/api/v1/jobs/{name}"

    settled = wait_for("the operator to settle the job", lambda: _settled(t, job_url), timeout=60)

    # The CLI follows the job; its stream is dropped once (the server ends it) and it comes back with
    # Last-Event-ID: the version it had is still current, so the shim repeats nothing.
    cli = ShimBackend(server.url, t.key)
    sent_ids: list[str | None] = []
    cli.session.hooks["response"].append(
        lambda r, *_, **__: sent_ids.append(r.request.headers.get("Last-Event-ID")) if "/events" in r.url else None)
    cli_seen: list[dict[str, Any] | None] = []
    cli_thread = threading.Thread(target=lambda: cli_seen.extend(cli.watch(name)), daemon=True)
    cli_thread.start()
    wait_for("the CLI's first state", lambda: cli_seen, timeout=30)
    cache = server.app[CACHE]
    server.loop.call_soon_threadsafe(cache.close_subscribers)
    wait_for("the CLI to reconnect", lambda: len(sent_ids) >= 2 and _subscribers(server, t.namespace, name) == 1,
             timeout=30)
    assert sent_ids[0] is None and sent_ids[1] == settled
    assert len(cli_seen) == 1  # nothing repeated on the resumed stream

    reader = Reader(t.get(f"{job_url}/events", stream=True, timeout=(10, 60)))
    reader.start()
    wait_for("the first event", lambda: reader.seen, timeout=30)
    assert reader.kinds()[0] == "state"

    local = LocalCluster(Path(cluster.dir))
    local.stop_component("kube-apiserver")
    stopped = time.monotonic()
    try:
        wait_for("the API server to be gone", lambda: _refused(cluster.server), timeout=30)
        # Reads answer from the cache, and say how stale it is once the watch noticed.
        stale = wait_for("a stale read", lambda: (r := t.get(job_url, timeout=10)).status_code == 200
                         and STALE_HEADER in r.headers and r, timeout=OUTAGE_SECONDS)
        assert stale.json()["name"] == name and float(stale.headers[STALE_HEADER]) >= 0
        listed = t.get("/api/v1/jobs", timeout=10)
        assert listed.status_code == 200, listed.text
        assert name in [j["name"] for j in listed.json()["items"]]
        assert t.get("/api/v1/stats", timeout=10).status_code == 200
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["kubernetes"].startswith("degraded") and ready.json()["cacheStaleSeconds"] >= 0
        # Writes can't be served from a cache: a clear 503 with a code and Retry-After.
        refused = t.post(f"{job_url}/resume", timeout=30)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "upstream_unavailable" and refused.headers["Retry-After"]
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        # The stream stayed open: heartbeats all through the outage.
        during = [e for e in reader.seen if e[3] > stopped + 2]
        assert reader.is_alive() and sum(1 for e in during if e[0] == "heartbeat") >= 3, reader.kinds()
        assert cli_thread.is_alive()
    finally:
        local.start_component("kube-apiserver")

    # Back in sync: the staleness header goes away; the job can be resumed and runs to completion.
    wait_for("the cache back in sync", lambda: STALE_HEADER not in t.get(job_url, timeout=10).headers, timeout=60)
    resumed = wait_for("resume accepted", lambda: (r := t.post(f"{job_url}/resume", timeout=30)).status_code == 200
                       and r, timeout=30)
    assert resumed.json()["spec"]["suspend"] is False
    reader.join(90)
    cli_thread.join(30)
    assert not reader.is_alive() and reader.kinds()[-1] == "completed", reader.kinds()
    assert reader.seen[-1][1]["status"]["phase"] == "Succeeded"
    assert not cli_thread.is_alive() and cli_seen[-1] is not None
    assert cli_seen[-1]["status"]["phase"] == "Succeeded"

    # A client that reconnects later with the last id it got hears how the job ended; with an older id it
    # gets the current state first.
    final_id = reader.seen[-1][2]
    assert final_id is not None
    for last_id, expected in ((final_id, ["completed"]), (reader.seen[0][2], ["state", "completed"])):
        again = Reader(t.get(f"{job_url}/events", headers={"Last-Event-ID": str(last_id)}, stream=True,
                             timeout=(10, 30)))
        again.run()
        assert again.kinds() == expected


def _subscribers(server: ShimServer, namespace: str, name: str) -> int:
    return server.app[CACHE].subscriber_count((namespace, name))


def _settled(t: Tenant, job_url: str) -> str | None:
    """The job's resourceVersion once it is Suspended and stays unchanged for a second (the operator is done
    with it until it is resumed); None before."""
    first = t.get(job_url, timeout=10).json()
    if first["status"].get("phase") != "Suspended":
        return None
    time.sleep(1)
    rv = str(first["resourceVersion"])
    return rv if str(t.get(job_url, timeout=10).json()["resourceVersion"]) == rv else None


def _refused(url: str) -> bool:
    try:
        requests.get(url + "/readyz", timeout=2, verify=False)  # noqa: S501 (only: is anything listening?)
    except requests.ConnectionError:
        return True
    return False
