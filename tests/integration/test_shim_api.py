"""The REST shim against the real local cluster and MinIO: every endpoint, both auth modes, tenant isolation,
quotas, rate-limit headers, idempotency and the error shape."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from transkube_dev.kube import Kube
from transkube_shim.config import ShimConfig
from transkube_shim.jobs import FAILURE_CATEGORIES

from .conftest import tj_path, wait_for
from .shim_fixtures import *  # noqa: F403 (fixtures)
from .shim_fixtures import BUCKET, JWT_SECRET, ShimServer, Tenant

pytestmark = pytest.mark.integration

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy")


def spec(t: Tenant, input_uri: str | None = None, suspend: bool = True, **extra: Any) -> dict[str, Any]:
    """A job of tenant t, under its own prefix (the shim confines each tenant to it)."""
    prefix = f"outputs/{uuid.uuid4().hex}"
    return {"input": {"uri": input_uri or t.uri("inputs/missing.mp4")}, "suspend": suspend,
            "outputs": [{"name": "web", "uri": t.uri(f"{prefix}/web.mp4"), "container": "mp4",
                         "video": {"codec": "h264", "resolution": "240p", "crf": 30},
                         "audio": {"codec": "aac", "bitrate": "64k"}}], **extra}


def assert_error(resp: requests.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and "Traceback" not in resp.text
    if field is not None:
        assert body["error"]["field"] == field, body
    return dict(body["error"])


def test_operations_endpoints(shim: ShimServer) -> None:
    health = requests.get(shim.url + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = requests.get(shim.url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"kubernetes": "ok", "crd": "ok", "storage": "ok", "cache": "ok"}
    doc = requests.get(shim.url + "/openapi.json", timeout=10).json()
    assert doc["openapi"] == "3.1.0" and "/api/v1/jobs" in doc["paths"]
    page = requests.get(shim.url + "/docs", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from elsewhere
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = requests.get(shim.url + "/docs/app.js", timeout=10)
    assert script.status_code == 200 and "/openapi.json" in script.text and "https://" not in script.text
    metrics = requests.get(shim.url + "/metrics", timeout=10).text
    assert "transkube_shim_upstream_watches 1.0" in metrics
    assert "transkube_shim_requests_total" in metrics


def test_request_id_security_headers_and_json_errors(shim: ShimServer, tenant: Callable[..., Tenant]) -> None:
    t = tenant()
    resp = t.get("/api/v1/jobs", headers={"X-Request-ID": "trace-abc.123"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "trace-abc.123"
    for name in SECURITY_HEADERS:
        assert name in resp.headers, name
    assert t.get("/api/v1/jobs", headers={"X-Request-ID": "bad id\twith junk"}).headers["X-Request-ID"] != ""
    assert_error(t.get("/api/v1/nothing-here"), 404, "not_found")
    err = t.request("PUT", "/api/v1/jobs")
    assert_error(err, 405, "method_not_allowed")
    assert_error(t.post("/api/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"}),
                 400, "invalid_json")
    assert_error(t.post("/api/v1/jobs", json=spec(t, outputs=[{"name": "o", "uri": t.uri("o.mp4"),
                                                            "container": "mp4",
                                                            "video": {"codec": "h264", "crf": 20,
                                                                      "bitrate": "2M"}}])),
                 422, "validation_error", "outputs[0].video")
    assert_error(t.post("/api/v1/jobs", json={**spec(t), "bogus": 1}), 422, "validation_error", "bogus")
    big = {"input": {"uri": "s3://transkube/" + "x" * 400_000}, "outputs": []}
    assert_error(t.post("/api/v1/jobs", json=big), 413, "body_too_large")
    # 404s for unknown routes carry security headers too
    assert "X-Content-Type-Options" in requests.get(shim.url + "/nope", timeout=10).headers


def test_unauthenticated_and_bad_credentials_get_401(shim: ShimServer) -> None:
    for headers in ({}, {"X-API-Key": "tk_0123456789ab_wrong"}, {"X-API-Key": "garbage"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer not.a.jwt"}):
        resp = requests.get(shim.url + "/api/v1/jobs", headers=headers, timeout=10)
        assert_error(resp, 401, "unauthenticated")
    # unknown paths under /api/ are 401 first: nothing about the API leaks without credentials
    assert_error(requests.get(shim.url + "/api/v1/secret-route", timeout=10), 401, "unauthenticated")


def test_create_get_list_pause_resume_cancel_delete(tenant: Callable[..., Tenant], kube: Kube) -> None:
    t = tenant()
    created = t.post("/api/v1/jobs", json=spec(t))
    assert created.status_code == 201, created.text
    job = created.json()
    name = job["name"]
    assert created.headers["Location"] == f"/api/v1/jobs/{name}"
    assert job["spec"]["suspend"] is True and job["spec"]["outputs"][0]["name"] == "web"
    cr = kube.get(tj_path(t.namespace, name))
    assert cr["metadata"]["labels"]["transkube.dev/tenant"] == t.name
    assert cr["metadata"]["labels"]["transkube.dev/created-by"] == "shim"

    got = t.get(f"/api/v1/jobs/{name}")
    assert got.status_code == 200 and got.json()["uid"] == cr["metadata"]["uid"]
    wait_for("Suspended", lambda: t.get(f"/api/v1/jobs/{name}").json()["status"].get("phase") == "Suspended")
    listed = t.get("/api/v1/jobs").json()
    assert [j["name"] for j in listed["items"]] == [name] and "continue" not in listed

    resumed = t.post(f"/api/v1/jobs/{name}/resume")
    assert resumed.status_code == 200 and resumed.json()["spec"]["suspend"] is False
    assert kube.get(tj_path(t.namespace, name))["spec"]["suspend"] is False
    paused = t.post(f"/api/v1/jobs/{name}/pause")
    assert paused.status_code == 200 and paused.json()["spec"]["suspend"] is True

    cancelled = t.post(f"/api/v1/jobs/{name}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["spec"]["cancel"] is True
    wait_for("Cancelled", lambda: t.get(f"/api/v1/jobs/{name}").json()["status"].get("phase") == "Cancelled")
    assert_error(t.post(f"/api/v1/jobs/{name}/pause"), 409, "job_finished")
    assert_error(t.post(f"/api/v1/jobs/{name}/retry"), 409, "not_failed")

    assert t.delete(f"/api/v1/jobs/{name}").status_code == 204
    wait_for("gone", lambda: t.get(f"/api/v1/jobs/{name}").status_code == 404)
    assert_error(t.get(f"/api/v1/jobs/{name}"), 404, "not_found")
    assert_error(t.delete(f"/api/v1/jobs/{name}"), 404, "not_found")


def test_idempotency_key_maps_to_one_cr(tenant: Callable[..., Tenant], kube: Kube) -> None:
    t = tenant()
    body = spec(t)
    key = f"order-{uuid.uuid4()}"
    first = t.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": key})
    second = t.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and second.status_code == 200, (first.text, second.text)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["name"] == second.json()["name"] and first.json()["uid"] == second.json()["uid"]
    assert len(kube.get(tj_path(t.namespace))["items"]) == 1
    assert_error(t.post("/api/v1/jobs", json=spec(t), headers={"Idempotency-Key": key}), 409,
                 "idempotency_key_reused", "Idempotency-Key")
    assert len(kube.get(tj_path(t.namespace))["items"]) == 1
    # another tenant's identical key is another job (its own body: it may not name t's objects)
    other = tenant(fresh=True)
    assert other.post("/api/v1/jobs", json=spec(other), headers={"Idempotency-Key": key}).status_code == 201


def test_tenant_isolation(tenant: Callable[..., Tenant], kube: Kube) -> None:
    owner = tenant()
    intruder = tenant(fresh=True)
    name = owner.post("/api/v1/jobs", json=spec(owner)).json()["name"]
    for method, path in (("GET", f"/api/v1/jobs/{name}"), ("DELETE", f"/api/v1/jobs/{name}"),
                         ("POST", f"/api/v1/jobs/{name}/cancel"), ("POST", f"/api/v1/jobs/{name}/pause"),
                         ("POST", f"/api/v1/jobs/{name}/resume"), ("POST", f"/api/v1/jobs/{name}/retry"),
                         ("GET", f"/api/v1/jobs/{name}/events"), ("GET", f"/api/v1/jobs/{name}/outputs/web/url")):
        assert_error(intruder.request(method, path), 404, "not_found")
    assert intruder.get("/api/v1/jobs").json()["items"] == []
    assert intruder.get("/api/v1/stats").json()["queued"] + intruder.get("/api/v1/stats").json()["suspended"] == 0
    cr = kube.get(tj_path(owner.namespace, name))
    assert cr["spec"]["cancel"] is False and "deletionTimestamp" not in cr["metadata"]
    # uploads: another tenant's upload id names an object outside the intruder's upload area
    upload = owner.post("/api/v1/uploads", json={"filename": "a.mp4"}).json()
    assert_error(intruder.post(f"/api/v1/uploads/{upload['uploadId']}/parts", json={"partNumbers": [1]}),
                 403, "uri_forbidden", "upload_id")
    assert_error(intruder.delete(f"/api/v1/uploads/{upload['uploadId']}"), 403, "uri_forbidden", "upload_id")
    assert owner.delete(f"/api/v1/uploads/{upload['uploadId']}").status_code == 204


def test_list_is_newest_first_with_cursor_pagination_and_status_filter(tenant: Callable[..., Tenant]) -> None:
    t = tenant()
    names = []
    for _ in range(5):
        names.append(t.post("/api/v1/jobs", json=spec(t)).json()["name"])
        time.sleep(1.05)  # creationTimestamp has one-second resolution: make the order observable
    seen: list[str] = []
    token = None
    for _ in range(10):
        resp = t.get("/api/v1/jobs", params={"limit": 2, **({"continue": token} if token else {})}).json()
        seen += [j["name"] for j in resp["items"]]
        token = resp.get("continue")
        if not token:
            break
    assert seen == list(reversed(names))
    wait_for("all suspended", lambda: len(t.get("/api/v1/jobs", params={"status": "suspended"}).json()["items"]) == 5)
    assert t.get("/api/v1/jobs", params={"status": "running,succeeded"}).json()["items"] == []
    assert t.get("/api/v1/jobs", params={"status": "queued,pending"}).json()["items"] == []
    assert_error(t.get("/api/v1/jobs", params={"status": "sleeping"}), 400, "invalid_parameter", "status")
    assert_error(t.get("/api/v1/jobs", params={"limit": 0}), 400, "invalid_parameter", "limit")
    assert_error(t.get("/api/v1/jobs", params={"continue": "!!"}), 400, "invalid_continue", "continue")
    stats = t.get("/api/v1/stats").json()
    assert stats["suspended"] == 5 and stats["running"] == 0 and stats["failed"] == 0


def test_quotas_are_counted_from_the_crs_across_replicas(
        tenant: Callable[..., Tenant], shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> None:
    replica = start_shim(shim_config)
    wait_for("replica ready", lambda: requests.get(replica.url + "/readyz", timeout=10).status_code == 200)
    a = tenant(fresh=True, tier="small")
    b = Tenant(a.name, a.key, replica.url)
    assert a.post("/api/v1/jobs", json=spec(a)).status_code == 201
    assert b.post("/api/v1/jobs", json=spec(b)).status_code == 201
    for t in (a, b):  # two unfinished jobs: the concurrency quota is reached on both replicas
        err = assert_error(t.post("/api/v1/jobs", json=spec(t)), 429, "quota_exceeded")
        assert "concurrent" in err["message"]
    job = a.get("/api/v1/jobs").json()["items"][0]["name"]
    assert a.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
    wait_for("cancelled", lambda: a.get(f"/api/v1/jobs/{job}").json()["status"].get("phase") == "Cancelled")
    assert b.post("/api/v1/jobs", json=spec(b)).status_code == 201  # one slot free again
    err = assert_error(a.post("/api/v1/jobs", json=spec(a)), 429, "quota_exceeded")  # 3 today: daily quota
    assert "daily" in err["message"]


def test_rate_limit_headers_and_429(tenant: Callable[..., Tenant]) -> None:
    t = tenant(tier="tight")  # burst 3, refills one token per 100 s
    remaining = []
    for _ in range(3):
        resp = t.get("/api/v1/jobs")
        assert resp.status_code == 200
        assert resp.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
    assert remaining == [2, 1, 0]
    limited = t.get("/api/v1/jobs")
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["X-RateLimit-Remaining"] == "0"


def _rsa_pair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def test_jwt_bearer_tokens_hs256_and_rs256(
        tenant: Callable[..., Tenant], shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> None:
    private, public = _rsa_pair()
    server = start_shim(shim_config, jwt_rs256_public_key=public, jwt_audience="transkube")
    wait_for("jwt shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200)
    owner = tenant()
    name = owner.post("/api/v1/jobs", json=spec(owner)).json()["name"]
    now = int(time.time())
    claims = {"sub": "user-1", "tenant": owner.name, "aud": "transkube", "exp": now + 300}

    def get(token: str, path: str = f"/api/v1/jobs/{name}") -> requests.Response:
        return requests.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    assert get(jwt.encode(claims, JWT_SECRET, algorithm="HS256")).json()["name"] == name
    assert get(jwt.encode(claims, private, algorithm="RS256")).json()["name"] == name
    assert_error(get(jwt.encode(claims, "another-secret-of-sufficient-len", algorithm="HS256")),
                 401, "unauthenticated")
    assert_error(get(jwt.encode({**claims, "exp": now - 600}, JWT_SECRET, algorithm="HS256")),
                 401, "unauthenticated")
    assert_error(get(jwt.encode({**claims, "aud": "else"}, JWT_SECRET, algorithm="HS256")), 401, "unauthenticated")
    assert_error(get(jwt.encode({k: v for k, v in claims.items() if k != "tenant"}, JWT_SECRET,
                                algorithm="HS256")), 401, "unauthenticated")
    # another tenant's token sees nothing of this one
    stranger = jwt.encode({**claims, "tenant": "t-stranger"}, JWT_SECRET, algorithm="HS256")
    assert_error(get(stranger), 404, "not_found")
    assert get(stranger, "/api/v1/jobs").json()["items"] == []
    # the default shim accepts HS256 but not RS256 (no public key configured)
    rs = jwt.encode(claims, private, algorithm="RS256")
    assert_error(requests.get(owner.url + f"/api/v1/jobs/{name}", headers={"Authorization": f"Bearer {rs}"},
                              timeout=10), 401, "unauthenticated")


def test_new_spec_fields_stats_and_retry_refusals(
        tenant: Callable[..., Tenant], kube: Kube, shim_config: ShimConfig,
        start_shim: Callable[..., ShimServer]) -> None:
    """priority/pool/webhooks go through as spec fields; manualRetry is POST /retry's alone; a job that has not
    failed cannot be retried; GET /stats has per-pool counts with the configured capacities, and every failure
    category. (The retry of a failed job, end to end: test_shim_jobs.py.)"""
    server = start_shim(shim_config, pool_capacities={"cpu": 3, "gpu": 1})
    wait_for("shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200)
    t = tenant(fresh=True, url=server.url)
    stats = t.get("/api/v1/stats").json()
    assert stats["pools"] == {"cpu": {"queued": 0, "starting": 0, "running": 0, "capacity": 3},
                              "gpu": {"queued": 0, "starting": 0, "running": 0, "capacity": 1}}
    assert stats["failedByCategory"] == dict.fromkeys(FAILURE_CATEGORIES, 0) and stats["starting"] == 0

    hook = {"name": "notify", "url": "https://hooks.example.com/transkube", "events": ["succeeded", "failed"],
            "secretRef": {"name": "hook-secret"}}
    signing = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    kube.create(f"/api/v1/namespaces/{t.namespace}/secrets", {  # so the job is valid as it stands (suspended)
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-secret"},
        "stringData": {"secret": signing}})
    created = t.post("/api/v1/jobs", json=spec(t, priority=7, pool="cpu", webhooks=[hook], ttlSecondsAfterFinished=600))
    assert created.status_code == 201, created.text
    job = created.json()
    assert (job["spec"]["priority"], job["spec"]["pool"], job["spec"]["manualRetry"]) == (7, "cpu", 0)
    assert job["retryPending"] is False and "retryOf" not in job
    assert job["webhooks"] == [{"name": "notify", "disabled": False, "pending": 0, "delivered": 0, "failed": 0,
                                "abandoned": 0}]
    cr = kube.get(tj_path(t.namespace, job["name"]))
    assert cr["spec"]["priority"] == 7 and cr["spec"]["webhooks"][0]["secretRef"] == {"name": "hook-secret",
                                                                                       "key": "secret"}
    assert_error(t.post("/api/v1/jobs", json=spec(t, manualRetry=1)), 422, "validation_error", "manualRetry")
    assert_error(t.post("/api/v1/jobs", json=spec(t, priority=51)), 422, "validation_error", "priority")
    assert_error(t.post(f"/api/v1/jobs/{job['name']}/retry"), 409, "not_failed")
    assert kube.get(tj_path(t.namespace, job["name"]))["spec"]["manualRetry"] == 0
    assert_error(t.get("/api/v1/jobs", params={"status": "failed", "failureCategory": "Flaky"}), 400,
                 "invalid_parameter", "failureCategory")
    assert t.get("/api/v1/jobs", params={"status": "failed", "failureCategory": "transient"}).json()["items"] == []


def test_presets_without_the_kind_or_with_an_unknown_name(tenant: Callable[..., Tenant]) -> None:
    t = tenant()
    presets = t.get("/api/v1/presets")
    assert presets.status_code == 200 and isinstance(presets.json()["items"], list)
    body = {"input": {"uri": t.uri("in.mp4")}, "outputUri": t.uri("out.mp4")}
    assert_error(t.post(f"/api/v1/presets/no-such-{uuid.uuid4().hex[:6]}/jobs", json=body), 422,
                 "preset_not_found", "preset")


def test_download_url_errors(tenant: Callable[..., Tenant]) -> None:
    t = tenant()
    name = t.post("/api/v1/jobs", json=spec(t)).json()["name"]
    assert_error(t.get(f"/api/v1/jobs/{name}/outputs/web/url"), 409, "output_not_ready")
    assert_error(t.get(f"/api/v1/jobs/{name}/outputs/other/url"), 404, "not_found")
    assert_error(t.get(f"/api/v1/jobs/{name}/outputs/web/url", params={"expiresIn": 0}), 400, "invalid_parameter")


def test_cors_is_configurable(shim_config: ShimConfig, start_shim: Callable[..., ShimServer],
                              tenant: Callable[..., Tenant], shim: ShimServer) -> None:
    server = start_shim(shim_config, cors_origins=("https://app.example",))
    pre = requests.options(server.url + "/api/v1/jobs", timeout=10, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
    t = tenant()
    resp = requests.get(server.url + "/api/v1/jobs", timeout=10,
                        headers={"Origin": "https://evil.example", "X-API-Key": t.key})
    assert resp.status_code == 200 and "Access-Control-Allow-Origin" not in resp.headers
    resp = requests.get(shim.url + "/api/v1/jobs", timeout=10,
                        headers={"Origin": "https://app.example", "X-API-Key": t.key})
    assert "Access-Control-Allow-Origin" not in resp.headers  # the default shim allows no origin


def test_upload_abort_and_part_size_limits(tenant: Callable[..., Tenant], s3: Any, tmp_path: Path) -> None:
    t = tenant()
    assert_error(t.post("/api/v1/uploads", json={"filename": "a.mp4", "partSize": 1024}), 422, "validation_error",
                 "partSize")
    up = t.post("/api/v1/uploads", json={"filename": "a.mp4", "size": 12 * 1024 * 1024,
                                         "partSize": 5 * 1024 * 1024})
    assert up.status_code == 201 and up.json()["partCount"] == 3
    upload_id = up.json()["uploadId"]
    key = up.json()["uri"].split("/", 3)[3]
    assert key.startswith(f"uploads/{t.name}/")
    assert any(u["Key"] == key for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))
    assert t.delete(f"/api/v1/uploads/{upload_id}").status_code == 204
    assert not any(u["Key"] == key for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))
    assert_error(t.post(f"/api/v1/uploads/{upload_id}/parts", json={"partNumbers": [1]}), 404, "not_found")
