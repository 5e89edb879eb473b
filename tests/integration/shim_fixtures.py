"""Fixtures for the REST shim's integration tests: the shim runs in-process (aiohttp's TestServer on
127.0.0.1, in its own event-loop thread) against the session's real cluster and MinIO; tests talk HTTP to it
with plain blocking clients. Import the fixtures from a test module: `from .shim_fixtures import *`."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import TestServer
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import ApiError, Kube
from transkube_shim.app import create_app
from transkube_shim.auth import new_key, secret_entry
from transkube_shim.config import ShimConfig, Tier

from .conftest import InstalledOperator, wait_for

AUTH_NS = "transkube-shim-test"
KEYS_SECRET = "transkube-shim-api-keys"
BUCKET = "transkube"
JWT_SECRET = "integration-test-hs256-secret-of-enough-length"

__all__ = ["BUCKET", "ShimServer", "media_files", "shim", "shim_auth_ns", "shim_config", "start_shim", "tenant"]


class ShimServer:
    """One shim process-equivalent: an app on a TestServer, served from a dedicated event-loop thread."""

    def __init__(self, config: ShimConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="shim", daemon=True)
        self.app: web.Application = create_app(config)
        self.server = TestServer(self.app, host="127.0.0.1")
        self.url = ""

    def start(self) -> ShimServer:
        self.thread.start()
        self.run(self.server.start_server())
        self.url = str(self.server.make_url("")).rstrip("/")
        return self

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        try:
            self.run(self.server.close(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@dataclass
class Tenant:
    """A tenant: its namespace (where jobs run) and an API key for it."""

    name: str
    key: str
    url: str
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def namespace(self) -> str:
        return self.name

    def uri(self, key: str) -> str:
        """s3://<bucket>/<tenant>/<key>: under the tenant's own prefix, where the shim lets it read and write."""
        return f"s3://{BUCKET}/{self.name}/{key}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-API-Key": self.key, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)


def register_key(kube: Kube, tenant: str, tier: str = "standard") -> str:
    """Mints an API key and adds its hash to the shim's key Secret (the only place keys are stored)."""
    _, key = new_key()
    key_id, entry = secret_entry(key, tenant, tier)
    path = f"/api/v1/namespaces/{AUTH_NS}/secrets/{KEYS_SECRET}"
    patch = {"data": {key_id: base64.b64encode(entry.encode()).decode()}}
    try:
        kube.merge_patch(path, patch)
    except ApiError as exc:
        if exc.status != 404:
            raise
        kube.create(f"/api/v1/namespaces/{AUTH_NS}/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEYS_SECRET}, **patch})
    return key


@pytest.fixture(scope="session")
def shim_auth_ns(kube: Kube) -> str:
    try:
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AUTH_NS}})
    except ApiError as exc:
        if exc.status != 409:
            raise
    return AUTH_NS


@pytest.fixture(scope="session")
def shim_config(cluster: ClusterState, shim_auth_ns: str, operator: InstalledOperator) -> ShimConfig:
    assert cluster.s3 is not None
    return ShimConfig(
        kubeconfig=cluster.kubeconfig, auth_namespace=shim_auth_ns, api_keys_secret=KEYS_SECRET,
        api_keys_miss_refresh_seconds=0, s3_endpoint=cluster.s3.endpoint, s3_region=cluster.s3.region,
        s3_access_key_id=cluster.s3.access_key, s3_secret_access_key=cluster.s3.secret_key, upload_bucket=BUCKET,
        jwt_hs256_secret=JWT_SECRET, sse_heartbeat_seconds=15,
        tiers={"standard": Tier(rate_per_second=1000, burst=1000, max_concurrent_jobs=50, max_jobs_per_day=1000),
               "tight": Tier(rate_per_second=0.01, burst=3, max_concurrent_jobs=50, max_jobs_per_day=1000),
               "small": Tier(rate_per_second=1000, burst=1000, max_concurrent_jobs=2, max_jobs_per_day=3)},
    )


@pytest.fixture(scope="session")
def start_shim() -> Iterator[Callable[..., ShimServer]]:
    """Starts extra shims (other configs, or a second replica); all are stopped at the end of the session."""
    started: list[ShimServer] = []

    def start(config: ShimConfig, **changes: Any) -> ShimServer:
        server = ShimServer(dataclasses.replace(config, **changes)).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture(scope="session")
def shim(shim_config: ShimConfig, start_shim: Callable[..., ShimServer]) -> ShimServer:
    server = start_shim(shim_config)
    wait_for("shim ready", lambda: requests.get(server.url + "/readyz", timeout=10).status_code == 200, timeout=60)
    return server


@pytest.fixture
def tenant(tj_namespace: str, kube: Kube, shim: ShimServer) -> Iterator[Callable[..., Tenant]]:
    """tenant() -> the tenant owning tj_namespace (jobs run there); tenant(fresh=True) -> another tenant with a
    namespace of its own; tier= picks the key's tier; url= another shim."""

    fresh_namespaces: list[str] = []

    def make(fresh: bool = False, tier: str = "standard", url: str | None = None, name: str | None = None) -> Tenant:
        ns = name or tj_namespace
        if fresh:
            ns = f"t-{uuid.uuid4().hex[:8]}"
            kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            fresh_namespaces.append(ns)
        return Tenant(ns, register_key(kube, ns, tier), url or shim.url)

    yield make
    for ns in fresh_namespaces:
        try:
            kube.delete(f"/api/v1/namespaces/{ns}")
        except ApiError as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shim-media")
    short = d / "short.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(short)],
                   check=True, timeout=120)
    # High-entropy, nearly lossless: big enough (> 10 MiB) for a multipart upload of three 5 MiB parts.
    big = d / "big.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "3", "-vf", "noise=alls=60:allf=t", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
                    "-c:a", "aac", "-shortest", str(big)], check=True, timeout=120)
    return {"short": short, "big": big}
