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
from transkube_shim import auth, cache, confine, errors, handlers, jobs, presets, quotas, sse, storage
from transkube_shim.config import ShimConfig, Tier, pool_capacities
from transkube_shim.models import Job, PresetJobRequest, QueueStats
from transkube_shim.ratelimit import RateLimiter, TokenBucket

Obj = dict[str, Any]
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
            cr("c", "2026-01-01T00:00:03Z", "Failed"), cr("d", "2026-01-01T00:00:04Z", "Queued"),
            cr("e", "2026-01-01T00:00:05Z", "Pending")]
    phases = jobs.parse_status_filter("queued,FAILED")
    assert phases == frozenset({"Queued", "Failed"})
    # a job the operator has not seen yet ("a") waits to be admitted: it is queued, not pending
    assert [o["metadata"]["name"] for o in jobs.paginate(objs, 10, None, phases)[0]] == ["d", "c", "a"]
    assert [o["metadata"]["name"] for o in jobs.paginate(objs, 10, None, jobs.parse_status_filter("pending"))[0]] \
        == ["e"]
    assert jobs.parse_status_filter(None) is None
    with pytest.raises(errors.ApiError) as exc:
        jobs.parse_status_filter("sleeping")
    assert (exc.value.status, exc.value.code, exc.value.field) == (400, "invalid_parameter", "status")
    assert jobs.parse_limit(None, 50, 500) == 50 and jobs.parse_limit("7", 50, 500) == 7
    for bad in ("0", "501", "x"):
        with pytest.raises(errors.ApiError):
            jobs.parse_limit(bad, 50, 500)


def test_failure_category_filter_is_the_dead_letter_view() -> None:
    objs = [cr("t1", "2026-01-01T00:00:01Z", "Failed", failureCategory="Transient"),
            cr("b1", "2026-01-01T00:00:02Z", "Failed", failureCategory="BadInput"),
            cr("t2", "2026-01-01T00:00:03Z", "Failed", failureCategory="Transient"),
            cr("old", "2026-01-01T00:00:04Z", "Failed"),  # failed before categories existed
            cr("r", "2026-01-01T00:00:05Z", "Running")]
    categories = jobs.parse_category_filter("transient")
    assert categories == frozenset({"Transient"})
    failed = jobs.parse_status_filter("failed")
    page, token = jobs.paginate(objs, 1, None, failed, categories)
    assert [o["metadata"]["name"] for o in page] == ["t2"] and token is not None
    page, token = jobs.paginate(objs, 1, jobs.decode_cursor(token), failed, categories)
    assert [o["metadata"]["name"] for o in page] == ["t1"] and token is None
    both = jobs.parse_category_filter("Transient,BadInput")
    assert [o["metadata"]["name"] for o in jobs.paginate(objs, 10, None, None, both)[0]] == ["t2", "b1", "t1"]
    assert jobs.parse_category_filter("") is None and jobs.parse_category_filter(None) is None
    assert set(jobs.FAILURE_CATEGORIES) == {"BadInput", "Unsupported", "Config", "Quality", "Transient",
                                            "Internal", "Stalled", "Timeout", "Quota"}
    with pytest.raises(errors.ApiError) as exc:
        jobs.parse_category_filter("Transient,Flaky")
    assert (exc.value.status, exc.value.code, exc.value.field) == (400, "invalid_parameter", "failureCategory")
    assert "'Flaky'" in exc.value.message and "BadInput" in exc.value.message


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
    (503, {}, (503, "upstream_unavailable")),
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


def test_authenticator_keeps_its_keys_while_the_secret_cannot_be_read() -> None:
    asyncio.run(_keeps_keys())


async def _keeps_keys() -> None:
    _, key = auth.new_key()
    key_id, entry = auth.secret_entry(key, "acme", "premium")
    reads: list[bool] = []
    down = False

    async def load() -> dict[str, str]:
        reads.append(down)
        if down:
            raise errors.upstream_unavailable()
        return {key_id: base64.b64encode(entry.encode()).decode()}

    authn = auth.Authenticator(ShimConfig(api_keys_refresh_seconds=0), load)  # every request would re-read
    await authn.refresh()
    down = True
    for _ in range(3):
        assert (await authn.identify(key, None)).tenant == "acme"
    assert reads == [False, True]  # one failed read, then backing off; the keys stay
    assert authn.last_error and authn.failed_at is not None


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
    # a retry creates no job: only the concurrency quota applies to it
    assert quotas.check_quota(objs, Tier(1, 1, 10, 3), now, daily=False) is None
    err = quotas.check_quota(objs, Tier(1, 1, 3, 3), now, daily=False)
    assert err is not None and "concurrent" in err.message


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
    failed_job = cr("j", "2026-01-01T00:00:00Z", "Failed", reason="InputNotFound")
    assert [e for e, _ in sse.Tracker().initial(failed_job)] == ["state", "failed"]
    # A retry requested: the stream stays open through Failed and follows the same job back to Queued.
    retrying = sse.Tracker()
    pending = {**failed_job, "spec": {**SPEC, "manualRetry": 1}}
    assert [e for e, _ in retrying.initial(pending)] == ["state"] and not retrying.done
    queued = {**pending, "status": {"phase": "Queued", "manualRetries": 1}}
    events = retrying.update(queued)
    assert events == [("phase", {"from": "Failed", "to": "Queued", "reason": None, "message": None})]
    assert sse.encode("x", {"a": 1}, "7") == b'id: 7\nevent: x\ndata: {"a":1}\n\n'


def test_sse_resume_with_last_event_id_never_skips_the_terminal_event() -> None:
    running = cr("j", "2026-01-01T00:00:00Z", "Running", progress={"stage": "Transcoding", "percent": 10.0})
    # The version the client last saw is still current: nothing to repeat, and updates continue from it.
    resumed = sse.Tracker()
    assert resumed.initial(running, last_event_id="1") == []
    assert resumed.update(running) == []
    # It changed meanwhile (a relist after an API server restart, or another replica): the state now.
    assert [e for e, _ in sse.Tracker().initial(running, last_event_id="0")] == ["state"]
    # The job ended: the terminal event always comes, even when the id is current (the connection may have
    # dropped between the state and the terminal event, which share an id).
    done = cr("j", "2026-01-01T00:00:00Z", "Succeeded")
    assert [e for e, _ in sse.Tracker().initial(done, last_event_id="1")] == ["completed"]
    assert [e for e, _ in sse.Tracker().initial(done, last_event_id="0")] == ["state", "completed"]


def test_readiness_survives_the_api_server_once_synced() -> None:
    down = {"kubernetes": "failed: upstream_unavailable", "crd": "failed: timeout", "storage": "ok", "cache": "ok"}
    assert handlers.readiness(down, synced=True) == {
        "kubernetes": "degraded: upstream_unavailable", "crd": "degraded: timeout", "storage": "ok", "cache": "ok"}
    assert handlers.readiness(down, synced=False) == down  # never synced: nothing to serve from
    storage_down = {**down, "storage": "failed: storage_error"}
    assert handlers.readiness(storage_down, synced=True)["storage"] == "failed: storage_error"


# ---- the slim cache ----

def fat_cr() -> Obj:
    obj = cr("j", "2026-01-01T00:00:00Z", "Running", progress={"stage": "Transcoding", "percent": 5.0})
    obj["apiVersion"], obj["kind"] = "media.transkube.dev/v1alpha1", "TranscodeJob"
    obj["metadata"].update({
        "generation": 3, "labels": {jobs.LABEL_TENANT: "acme"}, "finalizers": ["transkube.dev/cleanup"],
        "deletionTimestamp": "2026-01-01T00:01:00Z",
        "annotations": {jobs.ANNOTATION_REQUEST_HASH: "abc",
                        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj),
                        "transkube.dev/last-handled-configuration": json.dumps(obj)},
        "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}}]})
    return obj


def test_slim_keeps_what_reads_use_and_drops_the_rest() -> None:
    obj = fat_cr()
    small = cache.slim(obj)
    assert small == {"metadata": {"name": "j", "namespace": "ns", "uid": "uid-j", "resourceVersion": "1",
                                  "creationTimestamp": "2026-01-01T00:00:00Z",
                                  "deletionTimestamp": "2026-01-01T00:01:00Z",
                                  "annotations": {jobs.ANNOTATION_REQUEST_HASH: "abc"}},
                     "spec": obj["spec"], "status": obj["status"]}
    assert "managedFields" in obj["metadata"]  # pure: the input is untouched
    # Every read path answers the same from the projection.
    assert jobs.job_view(small) == jobs.job_view(obj)
    assert jobs.same_request(small, TranscodeJobSpec.model_validate(SPEC)) == \
        jobs.same_request(obj, TranscodeJobSpec.model_validate(SPEC))
    assert jobs.sort_key(small) == jobs.sort_key(obj) and jobs.phase(small) == jobs.phase(obj)
    assert jobs.queue_stats([small]) == jobs.queue_stats([obj])
    assert jobs.retry_precondition(small) == jobs.retry_precondition(obj)
    assert cache.slim(small) == small
    assert "annotations" not in cache.slim(cr("k", "2026-01-01T00:00:00Z"))["metadata"]


# ---- jobs ----

def test_idempotent_names_and_bodies() -> None:
    assert jobs.idempotent_name("acme", "k1") == jobs.idempotent_name("acme", "k1")
    assert jobs.idempotent_name("acme", "k1") != jobs.idempotent_name("beta", "k1")
    assert len(jobs.idempotent_name("acme", "x" * 255)) <= 63
    with pytest.raises(errors.ApiError):
        jobs.idempotent_name("acme", "")
    spec = TranscodeJobSpec.model_validate({**SPEC, "priority": 10, "pool": "gpu"})
    body = jobs.cr_body("n", "acme", spec, idempotency_key="k")
    assert body["metadata"]["labels"] == {"transkube.dev/tenant": "acme", "transkube.dev/created-by": "shim"}
    assert body["spec"]["priority"] == 10 and body["spec"]["pool"] == "gpu" and body["spec"]["manualRetry"] == 0
    assert jobs.same_request(body, spec)
    other = TranscodeJobSpec.model_validate({**SPEC, "retryLimit": 5})
    assert not jobs.same_request(body, other)
    view = jobs.job_view({**body, "metadata": {**body["metadata"], "uid": "u", "creationTimestamp": "t",
                                               "resourceVersion": "3"}})
    assert view["status"] == {} and view["deleting"] is False and view["retryPending"] is False
    assert "webhooks" not in view and "retryOf" not in view
    Job.model_validate(view)  # the view is what the OpenAPI document says


def failed(name: str = "web", manual_retry: int = 0, manual_retries: int | None = None, **status: Any) -> Obj:
    obj = cr(name, "2026-01-01T00:00:00Z", "Failed", failureCategory="BadInput", reason="InputNotFound", **status)
    obj["spec"] = {**SPEC, "manualRetry": manual_retry}
    if manual_retries is not None:
        obj["status"]["manualRetries"] = manual_retries
    return obj


def test_manual_retry_is_a_guarded_patch_of_the_same_job() -> None:
    job = failed(manual_retry=1, manual_retries=1)  # retried once already, failed again
    assert jobs.retry_refusal(job) is None and not jobs.retry_pending(job) and jobs.is_terminal(job)
    assert jobs.retry_patch(job) == [{"op": "test", "path": "/status/phase", "value": "Failed"},
                                     {"op": "test", "path": "/spec/manualRetry", "value": 1},
                                     {"op": "replace", "path": "/spec/manualRetry", "value": 2}]
    assert jobs.retry_patch(cr("x", "t", "Failed"))[2]["value"] == 1  # manualRetry unset: 0 -> 1
    # Requested, not yet acted on: still Failed, but no longer finished (quotas count it, streams go on).
    pending = failed(manual_retry=2, manual_retries=1)
    assert jobs.retry_pending(pending) and not jobs.is_terminal(pending)
    assert jobs.job_view(pending)["retryPending"] is True
    # only a Failed job waits for a retry: a raise anywhere else never keeps a job looking unfinished
    done = {**pending, "status": {"phase": "Succeeded", "manualRetries": 1}}
    assert not jobs.retry_pending(done) and jobs.is_terminal(done)
    refusal = jobs.retry_refusal(pending)
    assert refusal is not None and (refusal.status, refusal.code) == (409, "retry_pending")
    for phase in ("Queued", "Pending", "Running", "Succeeded", "Cancelled", "Suspended", None):
        refusal = jobs.retry_refusal(cr("x", "t", phase))
        assert refusal is not None and (refusal.status, refusal.code) == (409, "not_failed"), phase
    refusal = jobs.retry_refusal(failed(manual_retry=1000, manual_retries=1000))
    assert refusal is not None and refusal.code == "too_many_retries"
    assert jobs.retry_precondition(job) == ("Failed", 1)
    assert quotas.quota_usage([pending, job], datetime(2026, 1, 1, tzinfo=UTC))[0] == 1


def test_job_view_summarises_webhooks_and_passes_queue_and_history_through() -> None:
    hook = {"name": "notify", "url": "https://hooks.example/t", "events": ["failed"], "secretRef": {"name": "s"}}
    obj = cr("w", "2026-01-01T00:00:00Z", "Failed", failureCategory="Transient", manualRetries=1,
             nextAttemptTime="2026-01-01T00:05:00Z",
             attemptHistory=[{"attempt": 1, "round": 0, "pod": "w-1", "exitCode": 3, "failureClass": "Transient",
                              "counted": True}],
             queue={"pool": "cpu", "priority": 5, "admittedTime": "2026-01-01T00:00:01Z"},
             webhooks=[{"name": "old", "disabled": True, "disabledReason": "Gone"}],
             webhookDeliveries=[
                 {"id": "1", "webhook": "notify", "type": "transcodejob.failed", "eventTime": "t",
                  "state": "Delivered"},
                 {"id": "2", "webhook": "notify", "type": "transcodejob.failed", "eventTime": "t",
                  "state": "Pending"},
                 {"id": "3", "webhook": "notify", "type": "transcodejob.failed", "eventTime": "t",
                  "state": "Delivered"},
                 {"id": "4", "webhook": "old", "type": "transcodejob.failed", "eventTime": "t",
                  "state": "Abandoned"}])
    obj["spec"] = {**SPEC, "priority": 5, "manualRetry": 1,
                   "webhooks": [hook, {**hook, "name": "old"}, {**hook, "name": "quiet"}]}
    view = jobs.job_view(obj)
    assert view["webhooks"] == [
        {"name": "notify", "disabled": False, "pending": 1, "delivered": 2, "failed": 0, "abandoned": 0},
        {"name": "old", "disabled": True, "disabledReason": "Gone", "pending": 0, "delivered": 0, "failed": 0,
         "abandoned": 1},
        {"name": "quiet", "disabled": False, "pending": 0, "delivered": 0, "failed": 0, "abandoned": 0}]
    assert view["spec"]["priority"] == 5 and view["status"]["queue"]["pool"] == "cpu"
    assert view["status"]["attemptHistory"][0]["pod"] == "w-1" and view["status"]["manualRetries"] == 1
    assert view["retryPending"] is False
    typed = Job.model_validate(view)
    assert typed.status.failure_category == "Transient" and typed.webhooks is not None
    assert typed.status.next_attempt_time == "2026-01-01T00:05:00Z"


def test_queue_stats() -> None:
    objs = [cr("a", "2026-01-01T00:00:00Z"),  # not seen by the operator yet: queued
            cr("q", "2026-01-01T00:00:00Z", "Queued", queue={"pool": "gpu", "priority": 0, "position": 1}),
            cr("p", "2026-01-01T00:00:00Z", "Pending", queue={"pool": "cpu", "priority": 0}),
            cr("b", "2026-01-01T00:00:00Z", "Succeeded", startTime="2026-01-01T00:00:10Z",
               completionTime="2026-01-01T00:01:10Z", queue={"pool": "cpu", "priority": 0}),
            cr("c", "2026-01-01T00:00:00Z", "Running", startTime="2026-01-01T00:00:20Z",
               queue={"pool": "cpu", "priority": 0}),
            cr("f1", "2026-01-01T00:00:00Z", "Failed", failureCategory="Transient"),
            cr("f2", "2026-01-01T00:00:00Z", "Failed", failureCategory="Transient"),
            cr("f3", "2026-01-01T00:00:00Z", "Failed", failureCategory="Stalled"),
            cr("f4", "2026-01-01T00:00:00Z", "Failed")]
    stats = jobs.queue_stats(objs)
    assert {k: v for k, v in stats.items() if k not in ("failedByCategory", "pools")} == {
        "queued": 2, "starting": 1, "running": 1, "suspended": 0, "succeeded": 1, "failed": 4, "cancelled": 0,
        "averageWaitSeconds": 15.0, "averageProcessingSeconds": 60.0}
    assert stats["failedByCategory"] == {"BadInput": 0, "Unsupported": 0, "Config": 0, "Quality": 0,
                                         "Transient": 2, "Internal": 0, "Stalled": 1, "Timeout": 0, "Quota": 0}
    assert stats["pools"] == {"cpu": {"queued": 0, "starting": 1, "running": 1},
                              "gpu": {"queued": 1, "starting": 0, "running": 0}}
    with_capacity = jobs.queue_stats(objs, {"cpu": 4, "gpu": 1, "big": 2})
    assert with_capacity["pools"] == {"big": {"queued": 0, "starting": 0, "running": 0, "capacity": 2},
                                      "cpu": {"queued": 0, "starting": 1, "running": 1, "capacity": 4},
                                      "gpu": {"queued": 1, "starting": 0, "running": 0, "capacity": 1}}
    # not admitted yet and not seen by the operator: the pool the spec asked for
    unseen = {**cr("u", "2026-01-01T00:00:00Z"), "spec": {**SPEC, "pool": "gpu"}}
    assert jobs.queue_stats([unseen])["pools"] == {"gpu": {"queued": 1, "starting": 0, "running": 0}}
    QueueStats.model_validate(with_capacity)
    assert jobs.queue_stats([]) == {"queued": 0, "starting": 0, "running": 0, "suspended": 0, "succeeded": 0,
                                    "failed": 0, "cancelled": 0, "pools": {},
                                    "failedByCategory": dict.fromkeys(jobs.FAILURE_CATEGORIES, 0)}


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


def test_preset_jobs_carry_scheduling_retry_and_webhook_fields() -> None:
    hook = {"name": "notify", "url": "https://hooks.example/t", "events": ["succeeded", "failed"],
            "secretRef": {"name": "hook-secret"}}
    request = preset_request(priority=20, pool="gpu", retryBackoffSeconds=[5, 60], stallTimeoutSeconds=120,
                             webhooks=[hook], ttlSecondsAfterFinished=3600)
    spec = presets.build_spec("web-720p", WEB_720P, request).wire()
    assert (spec["priority"], spec["pool"], spec["retryBackoffSeconds"], spec["stallTimeoutSeconds"],
            spec["ttlSecondsAfterFinished"]) == (20, "gpu", [5, 60], 120, 3600)
    assert spec["webhooks"][0]["name"] == "notify" and spec["webhooks"][0]["secretRef"]["key"] == "secret"
    with pytest.raises(ValidationError):
        preset_request(priority=51)


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
    config = ShimConfig(upload_bucket="transkube", upload_prefix="uploads")
    token = storage.encode_upload_id("uploads/acme/x/f.mp4", "s3-id")
    assert storage.decode_upload_id(token) == ("uploads/acme/x/f.mp4", "s3-id")
    confine.confine_upload(config, "acme", "uploads/acme/x/f.mp4", "upload_id")
    with pytest.raises(errors.ApiError) as exc:
        storage.decode_upload_id("!!")
    assert exc.value.status == 404
    # Another tenant's key, a prefix that only starts like ours, a dot segment: 403 uri_forbidden.
    for tenant, key in (("beta", "uploads/acme/x/f.mp4"), ("acme", "uploads/acme-evil/x/f"),
                        ("acme", "uploads/acme/../beta/f"), ("acme", "uploads/acme/%2e%2e/beta/f"),
                        ("acme", "other/acme/x/f")):
        with pytest.raises(errors.ApiError) as exc:
            confine.confine_upload(config, tenant, key, "upload_id")
        assert (exc.value.status, exc.value.code, exc.value.field) == (403, "uri_forbidden", "upload_id"), key


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


def test_pool_capacities_from_the_operators_scheduling_json() -> None:
    raw = json.dumps({"mode": "builtin", "agingSeconds": 60,
                      "pools": {"cpu": {"capacity": 4, "accelerator": "cpu"},
                                "gpu": {"capacity": 1, "accelerator": "nvidia"}}})
    assert ShimConfig.from_env({"TRANSKUBE_SCHEDULING": raw}).pool_capacities == {"cpu": 4, "gpu": 1}
    assert ShimConfig.from_env({}).pool_capacities == {}
    assert pool_capacities(json.dumps({"agingSeconds": 5})) == {}  # the operator's built-in pools: not guessed
    assert pool_capacities(json.dumps({"mode": "kueue", "pools": {"cpu": {"capacity": 4}}})) == {}  # Kueue's
    for bad in ("{not json", json.dumps({"pools": {"cpu": {}}}), json.dumps({"pools": {"cpu": {"capacity": "x"}}}),
                json.dumps([1])):
        with pytest.raises(ValueError, match="TRANSKUBE_SCHEDULING"):
            pool_capacities(bad)


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


def test_the_cache_stores_projections_and_reports_staleness_only_after_a_sync() -> None:
    from typing import cast

    from transkube_shim.kube import Kube
    from transkube_shim.metrics import Metrics

    jc = cache.JobCache(cast(Kube, None), Metrics())  # apply/replace_all/stale_seconds never call the API
    jc.replace_all([fat_cr()])
    assert jc.get("ns", "j") == cache.slim(fat_cr())
    newer = fat_cr()
    newer["metadata"]["resourceVersion"] = "2"
    jc.apply(newer)
    stored = jc.get("ns", "j")
    assert stored is not None and "managedFields" not in stored["metadata"]
    assert stored["metadata"]["resourceVersion"] == "2"
    jc._mark_stale()
    assert jc.stale_seconds() == 0  # never synced: reads wait for the first sync instead
    jc.synced.set()
    jc._mark_stale()
    assert jc.stale_seconds() >= 0 and jc._stale_since is not None
