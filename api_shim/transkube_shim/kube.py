"""Kubernetes access (kubernetes_asyncio): the few calls the shim makes, each mapping API errors onto the
shim's error shape. Reads of TranscodeJobs go through the watch-fed cache (cache.py), not through here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar, cast

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from transkube_api.constants import GROUP, PLURAL, VERSION

from .errors import ApiError, from_kube_error, upstream_unavailable

Obj = dict[str, Any]
T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REQUEST_TIMEOUT = 30
# The generated client would send a dict as application/json-patch+json; a merge patch is what we mean.
_MERGE_PATCH_KWARGS: dict[str, Any] = {"_content_type": MERGE_PATCH, "_request_timeout": REQUEST_TIMEOUT}
_JSON_PATCH_KWARGS: dict[str, Any] = {"_content_type": JSON_PATCH, "_request_timeout": REQUEST_TIMEOUT}


class Kube:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.version = k8s.VersionApi(api_client)

    @classmethod
    async def connect(cls, kubeconfig: str | None) -> Kube:
        configuration = k8s.Configuration()
        if kubeconfig:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = 32
        return cls(k8s.ApiClient(configuration))

    async def close(self) -> None:
        await self.api_client.close()

    @staticmethod
    async def call(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except ApiException as exc:
            raise from_kube_error(int(exc.status or 500), exc.body) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise ApiError(504, "upstream_timeout", "the Kubernetes API server did not answer in time") from exc
        except aiohttp.ClientError as exc:  # connection refused or reset: an API server restart, typically
            raise upstream_unavailable() from exc

    # ---- TranscodeJobs (writes, and consistent reads where a cache would not do) ----

    async def create_job(self, namespace: str, body: Obj) -> Obj:
        return cast(Obj, await self.call(self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT)))

    async def get_job(self, namespace: str, name: str) -> Obj:
        return cast(Obj, await self.call(self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)))

    async def patch_job(self, namespace: str, name: str, patch: Obj) -> Obj:
        return cast(Obj, await self.call(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch, **_MERGE_PATCH_KWARGS)))

    async def json_patch_job(self, namespace: str, name: str, ops: list[Obj]) -> Obj:
        """An RFC 6902 patch; a failed `test` op is a 422 from the API server."""
        return cast(Obj, await self.call(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, ops, **_JSON_PATCH_KWARGS)))

    async def delete_job(self, namespace: str, name: str) -> Obj:
        return cast(Obj, await self.call(self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background",
            _request_timeout=REQUEST_TIMEOUT)))

    async def list_jobs(self, namespace: str, label_selector: str) -> list[Obj]:
        """A quorum read of one tenant's CRs, for quotas: every replica sees the same count."""
        items: list[Obj] = []
        token: str | None = None
        for _ in range(1000):
            kwargs: dict[str, Any] = {"label_selector": label_selector, "limit": 500,
                                      "_request_timeout": REQUEST_TIMEOUT}
            if token:
                kwargs["_continue"] = token
            page = cast(Obj, await self.call(self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kwargs)))
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        return items

    async def list_all_jobs(self) -> tuple[list[Obj], str]:
        """Every TranscodeJob in the cluster and the list's resourceVersion, to start a watch from."""
        items: list[Obj] = []
        token: str | None = None
        rv = ""
        for _ in range(10000):
            kwargs: dict[str, Any] = {"limit": 500, "_request_timeout": 60}
            if token:
                kwargs["_continue"] = token
            page = cast(Obj, await self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs))
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = str(meta.get("resourceVersion") or rv)
            token = meta.get("continue")
            if not token:
                break
        return items, rv

    async def watch_jobs(self, resource_version: str, timeout_seconds: int) -> AsyncIterator[Obj]:
        """Raw watch events of every TranscodeJob from resource_version (bookmarks included)."""
        resp = await self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds, _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=timeout_seconds + 30, sock_read=timeout_seconds + 30))
        response = cast(aiohttp.ClientResponse, resp)
        try:
            if response.status != 200:
                raise ApiException(status=response.status, reason=await response.text())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield cast(Obj, json.loads(line))
        finally:
            response.release()

    # ---- everything else ----

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        secret = await self.call(self.core.read_namespaced_secret(name, namespace, _request_timeout=REQUEST_TIMEOUT))
        return dict(secret.data or {})

    async def server_version(self) -> str:
        info = await self.call(self.version.get_code(_request_timeout=5))
        return str(info.git_version)

    async def api_resources(self, group: str, version: str) -> list[str]:
        """Plural names the API server serves in group/version (discovery); 404 when none."""
        result = await self.call(self.custom.get_api_resources(group, version, _request_timeout=5))
        return [r.name for r in (result.resources or [])]

    async def list_cluster_objects(self, group: str, version: str, plural: str) -> list[Obj]:
        page = cast(Obj, await self.call(self.custom.list_cluster_custom_object(
            group, version, plural, _request_timeout=REQUEST_TIMEOUT)))
        return list(page.get("items") or [])

    async def get_cluster_object(self, group: str, version: str, plural: str, name: str) -> Obj:
        return cast(Obj, await self.call(self.custom.get_cluster_custom_object(
            group, version, plural, name, _request_timeout=REQUEST_TIMEOUT)))

