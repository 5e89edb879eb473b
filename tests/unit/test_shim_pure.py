"""Pure functions of the REST shim: token bucket, pagination cursors, error mapping, API-key hashing, quota
counting, SSE event derivation, preset merging, stale-upload selection, upload ids, config parsing."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from pydantic import ValidationError
from transkube_api.models import TranscodeJobSpec, TranscodePresetSpec
from transkube_api.presets import resolve_output
from transkube_shim import auth, errors, jobs, presets, quotas, sse, storage
from transkube_shim.config import ShimConfig, Tier
from transkube_shim.models import PresetJobRequest
from transkube_shim.ratelimit import RateLimiter, TokenBucket

SPEC: dict[str, Any] = {"input": {"uri": "s3://transkube/in.mp4"},
        "outputs": [{"name": "web", "uri": "s3://transkube/out.mp4", "container": "mp4",
                     "video": {"codec": "h264", "crf": 23}}]}


def cr(name: str, created: str, phase: str | None = None, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                                        "resourceVersion": "1", "uid": f"uid-{name}"}, "spec": SPEC}
    if phase:
        obj["status"] = {"phase": phase, **status}
    return obj


# ---- rate limiting ----

def test_token_bucket_spends_refills_and_reports() -> None:
    bucket = TokenBucket.full(rate=2, capacity=3, now=0)
    decisions = [bucket.take(0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    denied = decisions[-1]
    assert denied.retry_after == 1 and denied.reset_seconds == 2
    assert denied.headers() == {"X-RateLimit-Limit": "3", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "2",
                                "Retry-After": "1"}
    assert "Retry-After" not in decisions[0].headers()
    assert bucket.take(0.5).allowed  # one token refilled after half a second at 2/s
    assert not bucket.take(0.5).allowed
    assert bucket.take(100).remaining == 2  # capped at capacity


def test_rate_limiter_keys_are_independent_and_pruned() -> None:
    limiter = RateLimiter(max_keys=2)
    assert limiter.take("a", 1, 1, 0).allowed and not limiter.take("a", 1, 1, 0).allowed
    assert limiter.take("b", 1, 1, 0).allowed
    limiter.take("c", 1, 1, 10)  # a and b are full again by now: forgotten
    assert set(limiter.buckets) == {"c"}


# ---- pagination ----

def test_cursor_round_trip_and_rejects_garbage() -> None:
    key = ("2026-01-02T03:04:05Z", "tj-abc")
    assert jobs.decode_cursor(jobs.encode_cursor(key)) == key
    for token in ("!!", "e30", base64.urlsafe_b64encode(b'[2,"a","b"]').decode(), ""):
        with pytest.raises(errors.ApiError) as exc:
            jobs.decode_cursor(token)
        assert exc.value.code == "invalid_continue"


def test_paginate_newest_first_stable_under_inserts() -> None:
    objs = [cr(f"j{i}", f"2026-01-01T00:00:0{i}Z") for i in range(5)] + [cr("a-same", "2026-01-01T00:00:04Z")]
    page, token = jobs.paginate(objs, 2, None)
    assert [o["metadata"]["name"] for o in page] == ["a-same", "j4"]
    assert token is not None
    objs.append(cr("newer", "2026-01-01T00:00:09Z"))  # created meanwhile: sorts before the cursor
    page2, token2 = jobs.paginate(objs, 2, jobs.decode_cursor(token))
    assert [o["metadata"]["name"] for o in page2] == ["j3", "j2"]
    page3, token3 = jobs.paginate(objs, 2, jobs.decode_cursor(token2 or ""))
    assert [o["metadata"]["name"] for o in page3] == ["j1", "j0"] and token3 is None


def test_status_filter_and_limit() -> None:
    objs = [cr("a", "2026-01-01T00:00:01Z"), cr("b", "2026-01-01T00:00:02Z", "Running"),
            cr("c", "2026-01-01T00:00:03Z", "Failed")]
    phases = jobs.parse_status_filter("queued,failed")
    assert phases == frozenset({"Pending", "Failed"})
    assert [o["metadata"]["name"] for o in jobs.paginate(objs, 10, None, phases)[0]] == ["c", "a"]
    assert jobs.parse_status_filter(None) is None
    with pytest.raises(errors.ApiError):
        jobs.parse_status_filter("sleeping")
    assert jobs.parse_limit(None, 50, 500) == 50 and jobs.parse_limit("7", 50, 500) == 7
    for bad in ("0", "501", "x"):
        with pytest.raises(errors.ApiError):
            jobs.parse_limit(bad, 50, 500)


# ---- errors ----

def test_validation_error_names_the_field() -> None:
    bad = {**SPEC, "outputs": [{**SPEC["outputs"][0], "video": {"codec": "h264", "width": 641}}]}
    with pytest.raises(ValidationError) as exc:
        TranscodeJobSpec.model_validate(bad)
    err = errors.from_validation_error(exc.value)
    assert (err.status, err.code, err.field) == (422, "validation_error", "outputs[0].video.width")
    assert err.body() == {"error": {"code": "validation_error", "message": err.message,
                                    "field": "outputs[0].video.width"}}
    assert errors.field_path(["a", 0, "b", 1]) == "a[0].b[1]"


@pytest.mark.parametrize(("status", "body", "expected"), [
    (404, {"message": "not found"}, (404, "not_found")),
    (409, {"reason": "AlreadyExists", "message": "exists"}, (409, "already_exists")),
    (409, {"reason": "Conflict"}, (409, "conflict")),
    (422, {"details": {"causes": [{"field": "spec.outputs[0].video.crf", "message": "crf and bitrate"}]}},
     (422, "validation_error")),
    (403, {}, (502, "upstream_unauthorized")),
    (401, {}, (502, "upstream_unauthorized")),
    (429, {}, (503, "upstream_busy")),
    (500, {}, (502, "upstream_error")),
])
def test_kube_errors_map_onto_the_shape(status: int, body: dict[str, Any], expected: tuple[int, str]) -> None:
    err = errors.from_kube_error(status, json.dumps(body))
    assert (err.status, err.code) == expected
    if status == 422:
        assert err.field == "outputs[0].video.crf" and err.message == "crf and bitrate"
    assert errors.from_kube_error(status, "not json").status == expected[0]


def test_http_errors_and_500s_say_nothing_internal() -> None:
    assert errors.from_http_status(413, "Request Entity Too Large").code == "body_too_large"
    assert errors.from_http_status(503, "whatever leaked").message == "internal error"


# ---- API keys, JWT ----

def test_api_keys_only_hashes_are_stored_and_checked() -> None:
    key_id, key = auth.new_key()
    assert key.startswith(f"tk_{key_id}_") and auth.key_id_of(key) == key_id
    entry_id, entry = auth.secret_entry(key, "acme", "free")
    assert entry_id == key_id and key not in entry and key.split("_", 2)[2] not in entry
    records = auth.parse_secret({entry_id: base64.b64encode(entry.encode()).decode(),
                                 "junk": base64.b64encode(b"{").decode()})
    assert set(records) == {key_id}
    record = auth.check_key(key, records)
    assert record is not None and (record.tenant, record.tier) == ("acme", "free")
    assert auth.check_key(key + "x", records) is None
    assert auth.check_key(f"tk_{key_id}_wrong", records) is None
    assert auth.check_key("tk_000000000000_x", records) is None
    assert auth.key_id_of("nope") is None and auth.key_id_of("tk_ABC_x") is None


def test_authenticator_modes() -> None:
    asyncio.run(_authenticator_modes())


async def _authenticator_modes() -> None:
    _, key = auth.new_key()
    key_id, entry = auth.secret_entry(key, "acme", "premium")

    async def load() -> dict[str, str]:
        return {key_id: base64.b64encode(entry.encode()).decode()}

    config = ShimConfig(jwt_hs256_secret="s" * 32, namespace_template="tenant-{tenant}")
    authn = auth.Authenticator(config, load)
    ident = await authn.identify(key, None)
    assert (ident.kind, ident.tenant, ident.tier, ident.namespace) == ("api_key", "acme", "premium", "tenant-acme")
    assert (await authn.identify(None, f"Bearer {key}")).tenant == "acme"
    token = jwt.encode({"sub": "u", "tenant": "beta", "exp": datetime.now(UTC) + timedelta(minutes=5)}, "s" * 32,
                       algorithm="HS256")
    ident = await authn.identify(None, f"Bearer {token}")
    assert (ident.kind, ident.subject, ident.namespace, ident.tier) == ("jwt", "u", "tenant-beta", "standard")
    none_alg = jwt.encode({"sub": "u", "tenant": "beta", "exp": 9999999999}, "", algorithm="none")
    for api_key, authorization in ((None, None), ("tk_x", None), (None, f"Bearer {none_alg}"),
                                   (None, "Token abc")):
        with pytest.raises(errors.ApiError) as exc:
            await authn.identify(api_key, authorization)
        assert exc.value.status == 401


# ---- quotas ----

def test_quota_usage_counts_active_and_last_24h() -> None:
    now = datetime(2026, 1, 2, 12, tzinfo=UTC)
    objs = [cr("a", "2026-01-02T11:00:00Z"), cr("b", "2026-01-02T10:00:00Z", "Running"),
            cr("c", "2026-01-02T09:00:00Z", "Succeeded"), cr("d", "2026-01-01T11:00:00Z", "Suspended")]
    active, today, frees_in = quotas.quota_usage(objs, now)
    assert (active, today, frees_in) == (3, 3, 86400 - 3 * 3600)
    tier = Tier(rate_per_second=1, burst=1, max_concurrent_jobs=3, max_jobs_per_day=10)
    err = quotas.check_quota(objs, tier, now)
    assert err is not None and err.status == 429 and "concurrent" in err.message
    err = quotas.check_quota(objs, Tier(1, 1, 10, 3), now)
    assert err is not None and "daily" in err.message and int(err.headers["Retry-After"]) == 86400 - 3 * 3600
    assert quotas.check_quota(objs, Tier(1, 1, 10, 10), now) is None


# ---- SSE ----

def test_sse_tracker_derives_phase_stage_progress_and_completion() -> None:
    tracker = sse.Tracker()
    first = tracker.initial(cr("j", "2026-01-01T00:00:00Z"))
    assert [e for e, _ in first] == ["state"]
    running = cr("j", "2026-01-01T00:00:00Z", "Running", progress={"stage": "Transcoding", "percent": 10.0})
    assert [e for e, _ in tracker.update(running)] == ["phase", "stage", "progress"]
    assert tracker.update(running) == []  # nothing new
    more = cr("j", "2026-01-01T00:00:00Z", "Running", progress={"stage": "Transcoding", "percent": 55.5})
    assert tracker.update(more) == [("progress", {"stage": "Transcoding", "percent": 55.5})]
    done = cr("j", "2026-01-01T00:00:00Z", "Succeeded", progress={"stage": "Done", "percent": 100})
    events = tracker.update(done)
    assert [e for e, _ in events] == ["phase", "stage", "progress", "completed"]
    assert events[0][1]["from"] == "Running" and tracker.done
    failed = sse.Tracker().initial(cr("j", "2026-01-01T00:00:00Z", "Failed", reason="InputNotFound"))
    assert [e for e, _ in failed] == ["state", "failed"]
    assert sse.encode("x", {"a": 1}, "7") == b'id: 7\nevent: x\ndata: {"a":1}\n\n'


# ---- jobs ----

def test_idempotent_names_and_bodies() -> None:
    assert jobs.idempotent_name("acme", "k1") == jobs.idempotent_name("acme", "k1")
    assert jobs.idempotent_name("acme", "k1") != jobs.idempotent_name("beta", "k1")
    assert len(jobs.idempotent_name("acme", "x" * 255)) <= 63
    with pytest.raises(errors.ApiError):
        jobs.idempotent_name("acme", "")
    spec = TranscodeJobSpec.model_validate(SPEC)
    body = jobs.cr_body("n", "acme", spec, idempotency_key="k", retry_of="orig")
    assert body["metadata"]["labels"] == {"transkube.dev/tenant": "acme", "transkube.dev/created-by": "shim",
                                          "transkube.dev/retry-of": "orig"}
    assert jobs.same_request(body, spec)
    other = TranscodeJobSpec.model_validate({**SPEC, "retryLimit": 5})
    assert not jobs.same_request(body, other)
    view = jobs.job_view({**body, "metadata": {**body["metadata"], "uid": "u", "creationTimestamp": "t",
                                               "resourceVersion": "3"}})
    assert view["retryOf"] == "orig" and view["status"] == {} and view["deleting"] is False


def test_retry_names_count_from_the_first_job() -> None:
    original = cr("web", "2026-01-01T00:00:00Z", "Failed")
    assert jobs.retry_root(original) == "web" and jobs.retry_name("web", 1) == "web-retry-1"
    retried = {**original, "metadata": {**original["metadata"], "name": "web-retry-1",
                                        "annotations": {"transkube.dev/retry-of": "web"}}}
    assert jobs.retry_root(retried) == "web"
    assert jobs.retry_spec({**original, "spec": {**SPEC, "suspend": True, "cancel": True}}).cancel is False
    assert len(jobs.retry_name("x" * 300, 12)) <= 253


def test_queue_stats() -> None:
    objs = [cr("a", "2026-01-01T00:00:00Z"),
            cr("b", "2026-01-01T00:00:00Z", "Succeeded", startTime="2026-01-01T00:00:10Z",
               completionTime="2026-01-01T00:01:10Z"),
            cr("c", "2026-01-01T00:00:00Z", "Running", startTime="2026-01-01T00:00:20Z")]
    stats = jobs.queue_stats(objs)
    assert stats == {"queued": 1, "running": 1, "suspended": 0, "succeeded": 1, "failed": 0, "cancelled": 0,
                     "averageWaitSeconds": 15.0, "averageProcessingSeconds": 60.0}


# ---- presets ----

WEB_720P: dict[str, Any] = {
    "description": "720p MP4", "type": "file", "container": "mp4",
    "video": {"codec": "h264", "resolution": "720p", "crf": 23, "preset": "medium", "pixelFormat": "yuv420p"},
    "audio": {"codec": "aac", "bitrate": "128k", "channels": 2}}
HLS_DEFAULT: dict[str, Any] = {
    "type": "hls", "streaming": {"segmentSeconds": 4, "codec": "h264", "autoLadder": {"maxRenditions": 4}},
    "audio": {"codec": "aac", "bitrate": "128k", "channels": 2}}
SPRITE: dict[str, Any] = {
    "type": "sprite", "sprite": {"intervalSeconds": 5, "columns": 10, "tileWidth": 160, "format": "jpeg"}}


def preset_request(overrides: dict[str, Any] | None = None, uri: str = "s3://transkube/out.mp4",
                   **extra: Any) -> PresetJobRequest:
    body: dict[str, Any] = {"input": {"uri": "s3://transkube/in.mp4"}, "outputUri": uri, **extra}
    if overrides is not None:
        body["overrides"] = overrides
    return PresetJobRequest.model_validate(body)


def test_preset_job_output_names_the_preset_and_carries_only_given_overrides() -> None:
    request = preset_request({"video": {"codec": "h264", "crf": 30}, "audio": None}, retryLimit=1)
    assert presets.job_output("web-720p", request) == {
        "name": "web-720p", "uri": "s3://transkube/out.mp4", "preset": "web-720p",
        "video": {"codec": "h264", "crf": 30}}
    spec = presets.build_spec("web-720p", WEB_720P, request)
    (output,) = spec.outputs
    assert output.preset == "web-720p" and output.name == "web-720p" and spec.retry_limit == 1
    assert output.video is not None and output.video.crf == 30 and output.container is None
    # What the operator will record in status.resolvedOutputs: its merge rule, crf replaced, the rest inherited.
    resolved = resolve_output(output.wire(), WEB_720P)
    assert resolved["video"] == {**WEB_720P["video"], "crf": 30} and resolved["container"] == "mp4"
    assert "preset" not in resolved and "description" not in resolved
    # The operator's exclusive pairs, not "null removes": a bitrate drops the preset's crf.
    bitrate = resolve_output(presets.job_output("web-720p", preset_request(
        {"video": {"codec": "h264", "bitrate": "2M"}})), WEB_720P)
    assert "crf" not in bitrate["video"] and bitrate["video"]["bitrate"] == "2M"
    assert presets.job_output("web-720p", preset_request(outputName="main"))["name"] == "main"


def test_preset_jobs_for_presets_without_a_container() -> None:
    spec = presets.build_spec("hls-default", HLS_DEFAULT, preset_request(uri="s3://transkube/hls/"))
    assert spec.outputs[0].preset == "hls-default" and spec.outputs[0].container is None
    spec = presets.build_spec("thumbnail-sprite", SPRITE, preset_request(
        {"sprite": {"columns": 5}}, uri="s3://transkube/sprite/"))
    assert resolve_output(spec.outputs[0].wire(), SPRITE)["sprite"]["columns"] == 5


@pytest.mark.parametrize(("preset", "overrides", "uri", "code", "field"), [
    (WEB_720P, {"container": "webm"}, "s3://transkube/o.webm", "validation_error", "overrides.video.codec"),
    (WEB_720P, {"type": "hls"}, "s3://transkube/o/", "validation_error", "overrides.type"),
    (WEB_720P, None, "s3://transkube/prefix/", "validation_error", "outputUri"),
    (HLS_DEFAULT, {"video": {"codec": "h264"}}, "s3://transkube/hls/", "validation_error", "overrides.video"),
    (WEB_720P, {"video": {"codec": "copy"}, "quality": {"metrics": ["psnr"]}}, "s3://transkube/o.mp4",
     "validation_error", "overrides.quality"),
    ({"type": "file"}, None, "s3://transkube/o.mp4", "preset_invalid", "preset"),
])
def test_bad_preset_combinations_are_422_naming_the_field(
        preset: dict[str, Any], overrides: dict[str, Any] | None, uri: str, code: str, field: str) -> None:
    with pytest.raises(errors.ApiError) as exc:
        presets.build_spec("p", preset, preset_request(overrides, uri=uri))
    assert (exc.value.status, exc.value.code, exc.value.field) == (422, code, field), exc.value.message


def test_overrides_are_typed_output_settings() -> None:
    with pytest.raises(ValidationError) as exc:
        preset_request({"video": {"codec": "h264", "crf": "high"}})
    assert errors.from_validation_error(exc.value).field == "overrides.video.crf"
    with pytest.raises(ValidationError):
        preset_request({"name": "x"})  # name/uri/preset are not overrides
    assert presets.request_field(("name",)) == "outputName"
    assert presets.request_field(("video", "crf")) == "overrides.video.crf"
    assert presets.request_field(()) == "overrides"


def test_preset_views_use_the_crd_model() -> None:
    view = presets.preset_view({"metadata": {"name": "thumbnail-sprite"}, "spec": SPRITE})
    assert view is not None and view["name"] == "thumbnail-sprite" and view["spec"]["type"] == "sprite"
    assert TranscodePresetSpec.model_validate(view["spec"]).sprite is not None
    web = presets.preset_view({"metadata": {"name": "w"}, "spec": WEB_720P})
    assert web is not None and web["spec"]["description"] == "720p MP4"
    assert presets.preset_view({"metadata": {"name": "bad"}, "spec": {"container": "avi"}}) is None
    assert presets.preset_view({"metadata": {"name": "bad"}, "spec": {"type": "file"}}) is None  # no container


# ---- storage ----

def test_upload_ids_are_tenant_scoped() -> None:
    token = storage.encode_upload_id("uploads/acme/x/f.mp4", "s3-id")
    assert storage.decode_upload_id(token, "uploads/acme/") == ("uploads/acme/x/f.mp4", "s3-id")
    for bad_token, prefix in ((token, "uploads/beta/"), ("!!", "uploads/acme/"),
                              (storage.encode_upload_id("uploads/acme/../beta/f", "i"), "uploads/acme/")):
        with pytest.raises(errors.ApiError) as exc:
            storage.decode_upload_id(bad_token, prefix)
        assert exc.value.status == 404


def test_part_plan_and_stale_uploads() -> None:
    mib = 1024 * 1024
    assert storage.part_plan(12 * mib, 5 * mib) == 3 and storage.part_plan(None, 5 * mib) is None
    with pytest.raises(errors.ApiError):
        storage.part_plan(10, 4 * mib)
    with pytest.raises(errors.ApiError):
        storage.part_plan(10_001 * 5 * mib, 5 * mib)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    uploads = [{"Key": "old", "UploadId": "1", "Initiated": now - timedelta(hours=25)},
               {"Key": "new", "UploadId": "2", "Initiated": now - timedelta(hours=1)}]
    assert storage.stale_uploads(uploads, now, 24 * 3600) == [("old", "1")]


def test_config_from_env() -> None:
    config = ShimConfig.from_env({
        "TRANSKUBE_SHIM_PORT": "9000", "TRANSKUBE_S3_ENDPOINT": "http://127.0.0.1:9",
        "TRANSKUBE_SHIM_TIERS": json.dumps({"standard": {"rate_per_second": 1, "burst": 2, "max_concurrent_jobs": 3,
                                                         "max_jobs_per_day": 4}}),
        "TRANSKUBE_SHIM_UPLOAD_PART_SIZE": "1", "TRANSKUBE_SHIM_CORS_ORIGINS": "https://a, https://b"})
    assert config.port == 9000 and config.s3_endpoint == "http://127.0.0.1:9"
    assert config.tier("unknown") == Tier(1, 2, 3, 4)
    assert config.upload_part_size == 5 * 1024 * 1024  # never below S3's minimum
    assert config.cors_origins == ("https://a", "https://b")
