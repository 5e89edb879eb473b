"""Request handlers: parse, call the pure functions and the one client each concern has, answer JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from transkube_api.constants import GROUP, PLURAL, VERSION
from transkube_api.models import TranscodeJobSpec

from . import jobs, presets, quotas, sse
from .auth import Identity
from .confine import confine_spec, confine_upload, confine_uri
from .docs_page import DOCS_CSP, DOCS_HTML, DOCS_JS
from .errors import ApiError, from_validation_error
from .jobs import Obj
from .metrics import CONTENT_TYPE_LATEST
from .models import (
    CompleteUploadRequest,
    PartUrlsRequest,
    PresetJobRequest,
    UploadRequest,
)
from .openapi import document
from .state import CACHE, CONFIG, KUBE, METRICS, SHUTTING_DOWN, STORAGE, identity
from .storage import decode_upload_id, part_plan

M = TypeVar("M", bound=BaseModel)
RETRY_PATCH_ATTEMPTS = 3  # re-reads after a stale cached copy made the guarded patch's test fail


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                        content_type="application/json", headers=headers)


async def read_model(request: web.Request, model: type[M]) -> M:
    raw = await request.read()  # enforces client_max_size (413)
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(422, "validation_error", "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


async def visible_job(request: web.Request, ident: Identity, name: str) -> Obj:
    """The job, if it is in the caller's namespace; 404 otherwise (never 403: others' names stay secret)."""
    cache = request.app[CACHE]
    await cache.wait_synced()
    obj = cache.get(ident.namespace, name)
    if obj is None:
        raise ApiError(404, "not_found", f"no job named {name!r}")
    return obj


def job_path(name: str) -> str:
    return f"/api/v1/jobs/{name}"


# ---- jobs -------------------------------------------------------------------------------------------------

async def create_job(request: web.Request) -> web.Response:
    spec = await read_model(request, TranscodeJobSpec)
    if spec.manual_retry:  # a retry count only POST /retry may raise; the operator would read it as one pending
        raise ApiError(422, "validation_error", "manualRetry must be 0 at creation; use POST /jobs/{name}/retry",
                       "manualRetry")
    ident = identity(request)
    confine_spec(request.app[CONFIG], ident.tenant, spec)
    return await _create(request, ident, spec, via="spec")


async def create_job_from_preset(request: web.Request) -> web.Response:
    body = await read_model(request, PresetJobRequest)
    ident = identity(request)
    name = request.match_info["preset"]
    spec = presets.build_spec(name, await presets.get_preset(request.app[KUBE], name), body)
    confine_spec(request.app[CONFIG], ident.tenant, spec, presets.request_path)
    return await _create(request, ident, spec, via="preset")


def _replay(existing: Obj, spec: TranscodeJobSpec) -> web.Response:
    if not jobs.same_request(existing, spec):
        raise ApiError(409, "idempotency_key_reused",
                       "this Idempotency-Key was already used for a different request", "Idempotency-Key")
    name = existing["metadata"]["name"]
    return json_response(jobs.job_view(existing), 200,
                         headers={"Idempotent-Replayed": "true", "Location": job_path(name)})


async def _create(request: web.Request, ident: Identity, spec: TranscodeJobSpec, via: str) -> web.Response:
    kube, cache, config = request.app[KUBE], request.app[CACHE], request.app[CONFIG]
    key = request.headers.get("Idempotency-Key")
    name = jobs.idempotent_name(ident.tenant, key) if key is not None else jobs.random_name()
    if key is not None and (existing := cache.get(ident.namespace, name)) is not None:
        return _replay(existing, spec)  # a replay costs no quota
    await quotas.enforce(kube, ident.namespace, ident.tenant, config.tier(ident.tier), request.app[METRICS])
    body = jobs.cr_body(name, ident.tenant, spec, idempotency_key=key)
    try:
        obj = await kube.create_job(ident.namespace, body)
    except ApiError as exc:
        if exc.code == "already_exists" and key is not None:
            return _replay(await kube.get_job(ident.namespace, name), spec)
        if exc.status == 404:
            raise ApiError(403, "tenant_not_provisioned", "your tenant has no namespace in this cluster") from exc
        raise
    cache.apply(obj)
    request.app[METRICS].jobs_created.labels(via).inc()
    return json_response(jobs.job_view(obj), 201, headers={"Location": job_path(name)})


async def get_job(request: web.Request) -> web.Response:
    obj = await visible_job(request, identity(request), request.match_info["name"])
    return json_response(jobs.job_view(obj))


async def list_jobs(request: web.Request) -> web.Response:
    ident, config, cache = identity(request), request.app[CONFIG], request.app[CACHE]
    phases = jobs.parse_status_filter(request.query.get("status"))
    categories = jobs.parse_category_filter(request.query.get("failureCategory"))
    limit = jobs.parse_limit(request.query.get("limit"), config.list_default_limit, config.list_max_limit)
    token = request.query.get("continue")
    cursor = jobs.decode_cursor(token) if token else None
    await cache.wait_synced()
    page, next_token = jobs.paginate(cache.in_namespace(ident.namespace), limit, cursor, phases, categories)
    body: Obj = {"items": [jobs.job_view(o) for o in page]}
    if next_token:
        body["continue"] = next_token
    return json_response(body)


async def delete_job(request: web.Request) -> web.Response:
    ident = identity(request)
    name = request.match_info["name"]
    await visible_job(request, ident, name)
    answer = await request.app[KUBE].delete_job(ident.namespace, name)
    if answer.get("kind") != "Status" and answer.get("metadata", {}).get("deletionTimestamp"):
        request.app[CACHE].apply(answer)  # finalizers still to run: show it as deleting
    return web.Response(status=204)


async def _patch_spec(request: web.Request, patch: Obj, verb: str) -> web.Response:
    ident = identity(request)
    name = request.match_info["name"]
    obj = await visible_job(request, ident, name)
    if jobs.phase(obj) in jobs.TERMINAL_PHASES:  # also while a retry is pending: the operator has not restarted it
        raise ApiError(409, "job_finished", f"cannot {verb} a job that is {jobs.phase(obj)}")
    answer = await request.app[KUBE].patch_job(ident.namespace, name, {"spec": patch})
    request.app[CACHE].apply(answer)
    return json_response(jobs.job_view(answer))


async def cancel_job(request: web.Request) -> web.Response:
    return await _patch_spec(request, {"cancel": True}, "cancel")


async def pause_job(request: web.Request) -> web.Response:
    return await _patch_spec(request, {"suspend": True}, "pause")


async def resume_job(request: web.Request) -> web.Response:
    return await _patch_spec(request, {"suspend": False}, "resume")


async def retry_job(request: web.Request) -> web.Response:
    """Raises the same TranscodeJob's spec.manualRetry by one: the operator starts a fresh Job and keeps the
    attempt history. The patch is conditional (jobs.retry_patch), so concurrent retries count once."""
    ident = identity(request)
    name = request.match_info["name"]
    kube, cache, config = request.app[KUBE], request.app[CACHE], request.app[CONFIG]
    obj = await visible_job(request, ident, name)
    if (refusal := jobs.retry_refusal(obj)) is not None:
        raise refusal
    # The job becomes unfinished again: the concurrency quota applies (no new job, so not the daily one).
    await quotas.enforce(kube, ident.namespace, ident.tenant, config.tier(ident.tier), request.app[METRICS],
                         daily=False)
    for _ in range(RETRY_PATCH_ATTEMPTS):
        try:
            answer = await kube.json_patch_job(ident.namespace, name, jobs.retry_patch(obj))
        except ApiError as exc:
            if exc.status != 422:
                raise
            # A failed test op and a CEL rejection are both 422: a fresh read tells a race from a rejection.
            fresh = await kube.get_job(ident.namespace, name)
            cache.apply(fresh)
            if jobs.retry_precondition(fresh) == jobs.retry_precondition(obj):
                raise
            obj = fresh
            if (refusal := jobs.retry_refusal(obj)) is not None:
                raise refusal from exc
            continue
        cache.apply(answer)
        request.app[METRICS].job_retries.inc()
        return json_response(jobs.job_view(answer), 202, headers={"Location": job_path(name)})
    raise ApiError(409, "conflict", "the job kept changing while being retried; try again")


async def job_events(request: web.Request) -> web.StreamResponse:
    ident = identity(request)
    cache = request.app[CACHE]
    await cache.wait_synced()
    return await sse.stream(request, cache, request.app[CONFIG], request.app[METRICS], ident.namespace,
                            request.match_info["name"])


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", name) from exc


async def output_url(request: web.Request) -> web.Response:
    ident = identity(request)
    obj = await visible_job(request, ident, request.match_info["name"])
    output = request.match_info["output"]
    storage = request.app[STORAGE]
    ttl = storage.ttl(_int_param(request, "expiresIn"), request.app[CONFIG].download_url_ttl_seconds)
    written = {o.get("name"): o for o in (obj.get("status") or {}).get("outputs") or []}
    asked = {o.get("name"): o for o in (obj.get("spec") or {}).get("outputs") or []}
    # Confinement first, from the spec: the answer must not depend on whether the status has been seen yet.
    if asked.get(output, {}).get("uri"):
        confine_uri(request.app[CONFIG], ident.tenant, str(asked[output]["uri"]), "output", "read")
    if output not in written:
        if output in asked:
            raise ApiError(409, "output_not_ready", f"output {output!r} has not been written yet")
        raise ApiError(404, "not_found", f"job has no output named {output!r}")
    uri = str(written[output]["uri"])
    # Also a job someone created in the tenant's namespace with kubectl: the shim presigns only the tenant's own.
    confine_uri(request.app[CONFIG], ident.tenant, uri, "output", "read")
    if uri.endswith("/"):
        raise ApiError(422, "output_is_prefix", f"output {output!r} is a set of objects under {uri}, not one file")
    url, expires = storage.download_url(uri, ttl)
    return json_response({"output": output, "uri": uri, "url": url, "expiresAt": expires})


# ---- uploads ----------------------------------------------------------------------------------------------

def _upload(request: web.Request, ident: Identity) -> tuple[str, str]:
    key, upload_id = decode_upload_id(request.match_info["upload_id"])
    confine_upload(request.app[CONFIG], ident.tenant, key, "upload_id")
    return key, upload_id


async def create_upload(request: web.Request) -> web.Response:
    ident = identity(request)
    body = await read_model(request, UploadRequest)
    part_size = body.part_size or request.app[CONFIG].upload_part_size
    count = part_plan(body.size, part_size)
    upload_id, uri, expires = await request.app[STORAGE].initiate(ident.tenant, body.filename, body.content_type)
    data: Obj = {"uploadId": upload_id, "uri": uri, "partSize": part_size, "expiresAt": expires}
    if count is not None:
        data["partCount"] = count
    return json_response(data, 201)


async def upload_part_urls(request: web.Request) -> web.Response:
    ident = identity(request)
    key, upload_id = _upload(request, ident)
    body = await read_model(request, PartUrlsRequest)
    storage = request.app[STORAGE]
    await storage.exists_upload(key, upload_id)
    urls, expires = storage.part_urls(key, upload_id, body.part_numbers)
    return json_response({"parts": [{"partNumber": n, "url": u} for n, u in urls], "expiresAt": expires})


async def complete_upload(request: web.Request) -> web.Response:
    ident = identity(request)
    key, upload_id = _upload(request, ident)
    body = await read_model(request, CompleteUploadRequest)
    storage = request.app[STORAGE]
    size = await storage.complete(key, upload_id, [(p.part_number, p.etag) for p in body.parts])
    data: Obj = {"uri": f"s3://{request.app[CONFIG].upload_bucket}/{key}"}
    if size is not None:
        data["sizeBytes"] = size
    return json_response(data)


async def abort_upload(request: web.Request) -> web.Response:
    ident = identity(request)
    key, upload_id = _upload(request, ident)
    await request.app[STORAGE].abort(key, upload_id)
    return web.Response(status=204)


# ---- presets, stats ---------------------------------------------------------------------------------------

async def list_presets(request: web.Request) -> web.Response:
    identity(request)
    return json_response({"items": await presets.list_presets(request.app[KUBE])})


async def queue_stats(request: web.Request) -> web.Response:
    ident = identity(request)
    cache = request.app[CACHE]
    await cache.wait_synced()
    return json_response(jobs.queue_stats(cache.in_namespace(ident.namespace),
                                          request.app[CONFIG].pool_capacities))


# ---- operations -------------------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok", "checks": {}})


async def _check(coro: Any, seconds: float = 3) -> str:
    try:
        await asyncio.wait_for(coro, seconds)
    except ApiError as exc:
        return f"failed: {exc.code}"
    except TimeoutError:
        return "failed: timeout"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    kube = app[KUBE]

    async def crd() -> None:
        if PLURAL not in await kube.api_resources(GROUP, VERSION):
            raise ApiError(503, "crd_missing", "TranscodeJob CRD not installed")

    async def synced() -> None:
        await app[CACHE].wait_synced(within=3)

    names = ("kubernetes", "crd", "storage", "cache")
    results = await asyncio.gather(_check(kube.server_version()), _check(crd()), _check(app[STORAGE].reachable()),
                                   _check(synced()))
    checks = readiness(dict(zip(names, results, strict=True)), app[CACHE].synced.is_set())
    if app[SHUTTING_DOWN]:
        checks["shutdown"] = "failed: shutting down"
    ok = not any(v.startswith("failed") for v in checks.values())
    body: Obj = {"status": "ok" if ok else "unavailable", "checks": checks}
    if stale := app[CACHE].stale_seconds():
        body["cacheStaleSeconds"] = round(stale, 1)
    return json_response(body, 200 if ok else 503)


UPSTREAM_CHECKS = ("kubernetes", "crd")


def readiness(checks: dict[str, str], synced: bool) -> dict[str, str]:
    """Once the cache has synced, the API server being unreachable does not make a replica unready: reads keep
    answering from the cache (every replica would flip at once, leaving no one to serve them). Such a check
    reads `degraded: ...` instead of `failed: ...`."""
    if not synced:
        return checks
    return {name: value.replace("failed", "degraded", 1) if name in UPSTREAM_CHECKS else value
            for name, value in checks.items()}


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(document())


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})


async def docs_js(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_JS, content_type="application/javascript")
