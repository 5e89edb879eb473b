"""The application factory: typed app keys, cleanup contexts for every client and background task,
graceful shutdown (readiness flips, event streams end, the watch stops, clients close)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from . import routes
from .auth import Authenticator
from .cache import JobCache
from .config import ShimConfig
from .kube import Kube
from .metrics import Metrics
from .middleware import add_headers, auth_middleware, context_middleware
from .ratelimit import RateLimiter
from .state import AUTH, CACHE, CONFIG, KUBE, LIMITER, METRICS, SHUTTING_DOWN, STORAGE
from .storage import Storage


async def _kubernetes(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    kube = await Kube.connect(config.kubeconfig)
    app[KUBE] = kube

    async def load_keys() -> dict[str, str]:
        return await kube.read_secret_data(config.auth_namespace, config.api_keys_secret)

    app[AUTH] = Authenticator(config, load_keys)
    await app[AUTH].refresh()
    cache = JobCache(kube, app[METRICS])
    app[CACHE] = cache
    cache.start()
    try:
        yield
    finally:
        await cache.stop()
        await kube.close()


async def _storage(app: web.Application) -> AsyncIterator[None]:
    storage = Storage(app[CONFIG])
    app[STORAGE] = storage
    sweeper = asyncio.create_task(storage.sweep_forever(), name="stale-upload-sweeper")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


async def _on_shutdown(app: web.Application) -> None:
    app[SHUTTING_DOWN].append(True)
    if CACHE in app:
        app[CACHE].close_subscribers()


def create_app(config: ShimConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[context_middleware, auth_middleware])
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app[LIMITER] = RateLimiter()
    app[SHUTTING_DOWN] = []
    app.cleanup_ctx.append(_kubernetes)
    app.cleanup_ctx.append(_storage)
    app.on_response_prepare.append(add_headers)
    app.on_shutdown.append(_on_shutdown)
    routes.setup(app)
    return app
