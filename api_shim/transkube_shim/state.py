"""The typed application keys (web.AppKey) and request keys every module shares."""

from __future__ import annotations

from aiohttp import web

from .auth import Authenticator, Identity
from .cache import JobCache
from .config import ShimConfig
from .kube import Kube
from .metrics import Metrics
from .ratelimit import RateLimiter
from .storage import Storage

CONFIG = web.AppKey("config", ShimConfig)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", RateLimiter)
KUBE = web.AppKey("kube", Kube)
CACHE = web.AppKey("cache", JobCache)
AUTH = web.AppKey("auth", Authenticator)
STORAGE = web.AppKey("storage", Storage)
SHUTTING_DOWN = web.AppKey("shutting_down", list[bool])  # [True] once shutdown began

REQUEST_ID = web.RequestKey("request_id", str)
IDENTITY = web.RequestKey("identity", Identity)
RATE_HEADERS = web.RequestKey("rate_headers", dict[str, str])


def identity(request: web.Request) -> Identity:
    ident: Identity | None = request.get(IDENTITY)
    if ident is None:  # routes under /api/v1 always pass through the auth middleware
        raise RuntimeError("no identity on an authenticated route")
    return ident
