"""Middlewares and the response-prepare hook: request IDs and access logs, the one error shape, CORS,
security headers, authentication and rate limiting."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import ApiError, from_http_status
from .logs import request_id, request_id_var
from .openapi import STALE_HEADER
from .state import AUTH, CACHE, CONFIG, IDENTITY, LIMITER, METRICS, RATE_HEADERS, REQUEST_ID

log = logging.getLogger("transkube_shim.access")
errlog = logging.getLogger("transkube_shim.errors")

API_PREFIX = "/api/"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-API-Key, Idempotency-Key, X-Request-ID, Last-Event-ID"
CORS_EXPOSE_HEADERS = ("X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, "
                       f"Idempotent-Replayed, Location, {STALE_HEADER}")


def error_response(error: ApiError) -> web.Response:
    return web.Response(status=error.status, text=json.dumps(error.body()), content_type="application/json",
                        headers=error.headers)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    origins = request.app[CONFIG].cors_origins
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request ID, CORS preflight, every error into the JSON shape, access log and metrics."""
    rid = request_id(request.headers.get("X-Request-ID"))
    request[REQUEST_ID] = rid
    token = request_id_var.set(rid)
    start = time.perf_counter()
    status = 500
    try:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            if _allowed_origin(request):
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            try:
                response = await handler(request)
            except ApiError as exc:
                response = error_response(exc)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = error_response(from_http_status(exc.status, exc.reason))
                if exc.status == 405 and "Allow" in exc.headers:
                    response.headers["Allow"] = exc.headers["Allow"]
            except (asyncio.CancelledError, ConnectionResetError):
                status = 499
                raise
            except Exception:
                errlog.exception("unhandled error", extra={"path": request.path, "method": request.method})
                response = error_response(ApiError(500, "internal", f"internal error (request {rid})"))
        status = response.status
        return response
    finally:
        elapsed = time.perf_counter() - start
        route = _route_name(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        ident = request.get(IDENTITY)
        if route not in ("/healthz", "/readyz", "/metrics"):
            log.info("request", extra={"method": request.method, "path": request.path, "route": route,
                                       "status": status, "duration_ms": round(elapsed * 1000, 2),
                                       "tenant": ident.tenant if ident else None})
        request_id_var.reset(token)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Everything under /api/ needs an identity, and spends a token of its bucket."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    ident = await request.app[AUTH].identify(request.headers.get("X-API-Key"), request.headers.get("Authorization"))
    request[IDENTITY] = ident
    tier = request.app[CONFIG].tier(ident.tier)
    decision = request.app[LIMITER].take(ident.limiter_key, tier.rate_per_second, tier.burst, time.monotonic())
    request[RATE_HEADERS] = decision.headers()
    if not decision.allowed:
        request.app[METRICS].rate_limited.inc()
        raise ApiError(429, "rate_limited", f"rate limit of {tier.rate_per_second:g} requests/s exceeded",
                       headers=decision.headers())
    return await handler(request)


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs for every response, streamed ones and errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    # Reads answer from the watch-fed cache; while it is out of touch with the API server, say for how long.
    if request.method == "GET" and request.path.startswith(API_PREFIX) and CACHE in request.app \
            and (stale := request.app[CACHE].stale_seconds()) > 0:
        response.headers[STALE_HEADER] = f"{stale:.1f}"
    rid = request.get(REQUEST_ID)
    if rid:
        response.headers["X-Request-ID"] = rid
    for name, value in (request.get(RATE_HEADERS) or {}).items():
        response.headers.setdefault(name, value)
    origin = _allowed_origin(request)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        if origin != "*":
            response.headers.add("Vary", "Origin")
