"""The REST shim with real transcodes: Server-Sent Events from queued to succeeded, presigned download of the
output, a presigned multipart upload whose object a job then transcodes, and a failed job retried in place
(spec.manualRetry) until it succeeds."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from transkube_dev.kube import Kube
from transkube_shim.config import ShimConfig
from transkube_shim.jobs import FAILURE_CATEGORIES

from .conftest import tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, ShimServer, Tenant

pytestmark = pytest.mark.integration
MIB = 1024 * 1024


def job_spec(t: Tenant, input_uri: str, **extra: Any) -> dict[str, Any]:
    """A job of tenant t; its output under the tenant's own prefix (the shim confines each tenant to it)."""
    prefix = f"outputs/{uuid.uuid4().hex}"
    return {"input": {"uri": input_uri},
            "outputs": [{"name": "web", "uri": t.uri(f"{prefix}/web.mp4"), "container": "mp4",
                         "video": {"codec": "h264", "resolution": "240p", "crf": 30, "preset": "ultrafast"},
                         "audio": {"codec": "aac", "bitrate": "64k"}}], **extra}


def events(resp: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parses a text/event-stream into (event, data) pairs."""
    name, data = "message", ""
    for raw in resp.iter_lines():
        line = raw.decode() if raw else ""
        if not line:
            if data:
                yield name, json.loads(data)
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


def upload(s3: Any, t: Tenant, path: Path) -> str:
    key = f"{t.name}/inputs/{uuid.uuid4().hex}/{path.name}"
    s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def test_sse_follows_a_real_job_from_queued_to_succeeded_then_download(
        tenant: Callable[..., Tenant], s3: Any, media_files: dict[str, Path], shim: ShimServer) -> None:
    t = tenant()
    created = t.post("/api/v1/jobs", json=job_spec(t, upload(s3, t, media_files["short"])))
    assert created.status_code == 201, created.text
    name = created.json()["name"]
    seen: list[tuple[str, dict[str, Any]]] = []
    with t.get(f"/api/v1/jobs/{name}/events", stream=True, timeout=(10, 60)) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        assert "X-Content-Type-Options" in resp.headers
        for event in events(resp):
            seen.append(event)
            if event[0] in ("completed", "failed", "cancelled", "deleted") or len(seen) > 2000:
                break
    kinds = [e for e, _ in seen]
    assert kinds[0] == "state" and seen[0][1]["name"] == name
    # not started when we connected: unseen or Queued (waiting for its pool), or Pending (admitted, starting)
    assert seen[0][1]["status"].get("phase", "Queued") in ("Queued", "Pending")
    assert kinds[-1] == "completed", kinds
    assert seen[-1][1]["status"]["phase"] == "Succeeded"
    phases = [(d["from"], d["to"]) for e, d in seen if e == "phase"]
    assert phases[0][0] in ("Queued", "Pending") and phases[-1] == ("Running", "Succeeded"), phases
    stages = [d["to"] for e, d in seen if e == "stage"]
    assert "Transcoding" in stages and stages[-1] == "Done", stages
    percents = [d["percent"] for e, d in seen if e == "progress"]
    assert percents and percents == sorted(percents) and percents[-1] == 100, percents

    # The finished job's output, through a presigned URL.
    link = t.get(f"/api/v1/jobs/{name}/outputs/web/url", params={"expiresIn": 600})
    assert link.status_code == 200, link.text
    body = link.json()
    data = requests.get(body["url"], timeout=30)
    assert data.status_code == 200
    (out,) = t.get(f"/api/v1/jobs/{name}").json()["status"]["outputs"]
    assert out["checksum"] == "sha256:" + hashlib.sha256(data.content).hexdigest()
    stats = t.get("/api/v1/stats").json()
    assert stats["succeeded"] == 1 and stats["averageProcessingSeconds"] >= 0 and stats["averageWaitSeconds"] >= 0
    assert stats["queued"] == stats["starting"] == stats["running"] == 0 and stats["failed"] == 0
    assert all(p["queued"] == p["starting"] == p["running"] == 0 for p in stats["pools"].values())


def test_sse_heartbeat_and_per_job_connection_cap(
        tenant: Callable[..., Tenant], shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> None:
    server = start_shim(shim_config, sse_heartbeat_seconds=0.3, sse_max_per_job=2)
    wait_for("shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200)
    t = tenant(url=server.url)
    name = t.post("/api/v1/jobs", json=job_spec(t, t.uri("in.mp4"), suspend=True)).json()["name"]
    first = t.get(f"/api/v1/jobs/{name}/events", stream=True, timeout=(10, 30))
    second = t.get(f"/api/v1/jobs/{name}/events", stream=True, timeout=(10, 30))
    try:
        assert first.status_code == second.status_code == 200
        third = t.get(f"/api/v1/jobs/{name}/events", timeout=10)
        assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_subscribers"
        assert int(third.headers["Retry-After"]) > 0
        kinds = []
        for kind, _ in events(first):
            kinds.append(kind)
            if kinds.count("heartbeat") >= 2:
                break
        assert kinds[0] == "state" and kinds.count("heartbeat") == 2
        # cancel while streaming: the stream says so and ends
        assert t.post(f"/api/v1/jobs/{name}/cancel").status_code == 200
        tail = [kind for kind, _ in events(second)]
        assert tail[0] == "state" and tail[-1] == "cancelled", tail
    finally:
        first.close()
        second.close()
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert "transkube_shim_upstream_watches 1.0" in metrics


def test_presigned_multipart_upload_then_a_job_on_it(
        tenant: Callable[..., Tenant], media_files: dict[str, Path]) -> None:
    t = tenant()
    data = media_files["big"].read_bytes()
    assert len(data) > 10 * MIB, len(data)
    part_size = 5 * MIB
    started = t.post("/api/v1/uploads", json={"filename": "big.mp4", "size": len(data), "partSize": part_size,
                                              "contentType": "video/mp4"})
    assert started.status_code == 201, started.text
    upload_id, uri, count = started.json()["uploadId"], started.json()["uri"], started.json()["partCount"]
    assert count >= 3
    urls = t.post(f"/api/v1/uploads/{upload_id}/parts", json={"partNumbers": list(range(1, count + 1))}).json()
    parts = []
    for part in urls["parts"]:
        n = part["partNumber"]
        chunk = data[(n - 1) * part_size: n * part_size]
        put = requests.put(part["url"], data=chunk, timeout=60)  # straight to S3, no credentials
        assert put.status_code == 200, put.text
        parts.append({"partNumber": n, "etag": put.headers["ETag"]})
    done = t.post(f"/api/v1/uploads/{upload_id}/complete", json={"parts": list(reversed(parts))})
    assert done.status_code == 200, done.text
    assert done.json() == {"uri": uri, "sizeBytes": len(data)}

    name = t.post("/api/v1/jobs", json=job_spec(t, uri)).json()["name"]
    wait_for("Succeeded", lambda: t.get(f"/api/v1/jobs/{name}").json()["status"].get("phase")
             in ("Succeeded", "Failed"), timeout=240)
    status = t.get(f"/api/v1/jobs/{name}").json()["status"]
    assert status["phase"] == "Succeeded", status
    assert status["input"]["sizeBytes"] == len(data)


def test_retry_runs_the_same_job_again_once_the_input_exists(
        tenant: Callable[..., Tenant], s3: Any, kube: Kube, media_files: dict[str, Path]) -> None:
    """A job fails for want of its input; the input is uploaded; POST /retry raises spec.manualRetry and the
    operator runs the SAME job again: Queued/Pending/Running, then Succeeded, with the failed attempt kept in
    status.attemptHistory and status.manualRetries 1. Two retries at once count once."""
    t = tenant()
    key = f"{t.name}/inputs/{uuid.uuid4().hex}/late.mp4"
    name = t.post("/api/v1/jobs", json=job_spec(t, f"s3://{BUCKET}/{key}", retryLimit=0)).json()["name"]
    wait_for("Failed", lambda: t.get(f"/api/v1/jobs/{name}").json()["status"].get("phase") == "Failed", timeout=180)
    failed = t.get(f"/api/v1/jobs/{name}").json()
    reason, category = failed["status"]["reason"], failed["status"]["failureCategory"]
    assert reason == "InputNotFound" and category in FAILURE_CATEGORIES, failed["status"]
    assert failed["retryPending"] is False and failed["spec"]["manualRetry"] == 0
    cr = kube.get(tj_path(t.namespace, name))
    assert cr["metadata"]["labels"]["transkube.dev/failure-category"] == category
    # the dead-letter view: listed under its category, not under another; counted in the stats
    dead = t.get("/api/v1/jobs", params={"status": "failed", "failureCategory": category}).json()["items"]
    assert name in [j["name"] for j in dead]
    other = next(c for c in FAILURE_CATEGORIES if c != category)
    assert name not in [j["name"] for j in t.get("/api/v1/jobs", params={"failureCategory": other}).json()["items"]]
    assert t.get("/api/v1/stats").json()["failedByCategory"][category] >= 1

    s3.upload_file(str(media_files["short"]), BUCKET, key)

    def post_retry(_: int) -> requests.Response:  # own connections: two requests really in flight at once
        return requests.post(f"{t.url}/api/v1/jobs/{name}/retry", headers={"X-API-Key": t.key}, timeout=30)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(post_retry, range(2)))
    assert sorted(a.status_code for a in answers) == [202, 409], [a.text for a in answers]
    accepted = next(a for a in answers if a.status_code == 202).json()
    assert accepted["name"] == name and accepted["spec"]["manualRetry"] == 1
    refused = next(a for a in answers if a.status_code == 409).json()["error"]["code"]
    assert refused in ("retry_pending", "not_failed"), refused  # not_failed: the operator already moved it on
    assert kube.get(tj_path(t.namespace, name))["spec"]["manualRetry"] == 1  # counted once

    # The event stream of a job whose retry is pending does not end at Failed: it follows the job to the end.
    seen: list[tuple[str, dict[str, Any]]] = []
    with t.get(f"/api/v1/jobs/{name}/events", stream=True, timeout=(10, 240)) as resp:
        assert resp.status_code == 200
        for event in events(resp):
            seen.append(event)
            if event[0] in ("completed", "failed", "cancelled", "deleted") or len(seen) > 2000:
                break
    assert seen[-1][0] == "completed", [e for e, _ in seen]
    tos = [d["to"] for e, d in seen if e == "phase"]
    assert tos and tos[-1] == "Succeeded" and "Failed" not in tos, tos

    job = t.get(f"/api/v1/jobs/{name}").json()
    status = job["status"]
    assert job["name"] == name and status["phase"] == "Succeeded" and job["retryPending"] is False
    assert status["manualRetries"] == 1 and len(status["outputs"]) == 1
    history = status["attemptHistory"]
    assert any(a.get("round", 0) == 0 and a.get("reason") == reason for a in history), history
    assert any(a.get("round") == 1 for a in history), history
    # no longer dead-lettered: neither the category nor its label stays on a succeeded job
    assert "failureCategory" not in status
    assert "transkube.dev/failure-category" not in kube.get(tj_path(t.namespace, name))["metadata"].get("labels", {})
    again = t.post(f"/api/v1/jobs/{name}/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_failed"


def test_graceful_shutdown_ends_event_streams(
        tenant: Callable[..., Tenant], shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> None:
    server = start_shim(shim_config)
    wait_for("shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200)
    t = tenant(url=server.url)
    name = t.post("/api/v1/jobs", json=job_spec(t, t.uri("in.mp4"), suspend=True)).json()["name"]
    stream = t.get(f"/api/v1/jobs/{name}/events", stream=True, timeout=(10, 30))
    lines = stream.iter_lines()
    assert next(line for line in lines if line).startswith(b"retry:")
    server.stop()  # what SIGTERM does in `transkube-shim serve`: on_shutdown, then the cleanup contexts
    rest = [line for line in lines if line]  # the stream ends instead of hanging until the read timeout
    assert rest[0] == b"event: state" or b"event: state" in rest
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/healthz", timeout=5)
