"""The two ways to reach TranscodeJobs: the Kubernetes API (kubeconfig, the classic `kubernetes` client, S3 with
the caller's own credentials) and the REST shim (API key; SSE; presigned uploads and downloads). Thin I/O:
every decision is in spec.py and render.py. Jobs are returned in the CR's shape ({metadata, spec, status})."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import boto3
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from transkube_api.constants import GROUP, PLURAL, VERSION

from . import sse
from .render import fold_event, shim_job_to_cr
from .spec import (
    SubmitRequest,
    local_name,
    local_relative,
    retry_patch,
    retry_precondition,
    retry_refusal,
    split_s3_uri,
)

Obj = dict[str, Any]
Progress = Callable[[int], None]  # bytes transferred since the last call

PRESET_PLURAL = "transcodepresets"  # cluster-scoped, same group/version (see transkube_shim/presets.py)
MIB = 1024 * 1024
RETRY_PATCH_ATTEMPTS = 3
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})  # a busy or restarting shim or API server: reconnect later


class CliError(Exception):
    """Something the user should read; `code` is the exit code (render.Exit)."""

    def __init__(self, message: str, code: int = 5) -> None:
        super().__init__(message)
        self.code = code


class NotFound(CliError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 4)


class Backend(Protocol):
    def create(self, request: SubmitRequest) -> Obj: ...
    def get(self, name: str) -> Obj: ...
    def list_jobs(self) -> list[Obj]: ...
    def watch(self, name: str) -> Iterator[Obj | None]: ...
    def set_flag(self, name: str, verb: str) -> Obj: ...
    def retry(self, name: str) -> Obj: ...
    def preset(self, name: str) -> Obj: ...
    def upload(self, path: Path, dest: str | None, part_size: int, progress: Progress) -> str: ...
    def download(self, job: Obj, output: Obj, target: Path, progress: Progress) -> list[Path]: ...


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- direct: the Kubernetes API -------------------------------------------------------------------------


def _kube_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


class KubeBackend:
    """kubeconfig (KUBECONFIG, --kubeconfig, --context) or in-cluster credentials; S3 with boto3's own
    credential chain (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, profiles, ...)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
                 s3_endpoint: str | None = None) -> None:
        from kubernetes import client, config

        self.namespace = namespace or "default"
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            if not namespace:
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                if context:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    active = next((c for c in contexts if c["name"] == context), active)
                self.namespace = (active.get("context") or {}).get("namespace") or "default"
        except config.ConfigException as exc:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise CliError(f"no Kubernetes credentials: {exc} (set KUBECONFIG, or --api-url for the shim)",
                               5) from exc
            if not namespace:
                ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                self.namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
        self.api = client.CustomObjectsApi()
        self.s3_endpoint = s3_endpoint
        self._s3: Any = None

    # -- TranscodeJobs --

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{what}: not found ({_kube_message(exc)})") from exc
            raise CliError(f"{what}: {exc.status} {_kube_message(exc)}") from exc

    def create(self, request: SubmitRequest) -> Obj:
        ns = request.namespace or self.namespace
        body = request.manifest()
        body["metadata"]["namespace"] = ns
        created: Obj = self._call("create", self.api.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                  body)
        return created

    def get(self, name: str) -> Obj:
        obj: Obj = self._call(f"transcodejob {name}", self.api.get_namespaced_custom_object, GROUP, VERSION,
                              self.namespace, PLURAL, name)
        return obj

    def list_jobs(self) -> list[Obj]:
        items: list[Obj] = []
        token: str | None = None
        while True:
            kwargs: Obj = {"limit": 500}
            if token:
                kwargs["_continue"] = token
            page = self._call("list", self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                              PLURAL, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def watch(self, name: str) -> Iterator[Obj | None]:
        """The job now, then every change; None once it is deleted. Relists on 410 Gone."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        obj = self.get(name)
        yield obj
        version = obj["metadata"]["resourceVersion"]
        while True:
            w = watch.Watch()
            try:
                for event in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                      PLURAL, field_selector=f"metadata.name={name}", resource_version=version,
                                      allow_watch_bookmarks=True, timeout_seconds=60):
                    kind, current = event["type"], event["raw_object"]
                    version = current.get("metadata", {}).get("resourceVersion", version)
                    if kind == "DELETED":
                        yield None
                        return
                    if kind in ("ADDED", "MODIFIED"):
                        yield current
            except ApiException as exc:
                if exc.status != 410:
                    raise CliError(f"watch {name}: {exc.status} {_kube_message(exc)}") from exc
                try:
                    obj = self.get(name)
                except NotFound:
                    yield None
                    return
                version = obj["metadata"]["resourceVersion"]
                yield obj
            finally:
                w.stop()

    def set_flag(self, name: str, verb: str) -> Obj:
        patch = {"cancel": {"spec": {"cancel": True}}, "suspend": {"spec": {"suspend": True}},
                 "resume": {"spec": {"suspend": False}}}[verb]
        obj: Obj = self._call(f"{verb} {name}", self.api.patch_namespaced_custom_object, GROUP, VERSION,
                              self.namespace, PLURAL, name, patch)
        return obj

    def _json_patch(self, name: str, ops: list[Obj]) -> Obj:
        """An RFC 6902 patch: the generated patch method always sends a merge patch, so this goes through the
        API client with the content type set. A failed `test` op raises ApiException 422."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{PLURAL}/{{name}}"
        obj: Obj = self.api.api_client.call_api(
            path, "PATCH", path_params={"namespace": self.namespace, "name": name},
            header_params={"Accept": "application/json", "Content-Type": "application/json-patch+json"},
            body=ops, response_type="object", auth_settings=["BearerToken"], _return_http_data_only=True)
        return obj

    def retry(self, name: str) -> Obj:
        """spec.manualRetry + 1 on the same job, guarded like the shim's POST /retry (spec.retry_patch)."""
        from kubernetes.client.exceptions import ApiException

        job = self.get(name)
        for _ in range(RETRY_PATCH_ATTEMPTS):
            if (why := retry_refusal(job)) is not None:
                raise CliError(f"retry {name}: {why}")
            try:
                return self._json_patch(name, retry_patch(job))
            except ApiException as exc:
                if exc.status == 404:
                    raise NotFound(f"retry {name}: not found") from exc
                fresh = self.get(name) if exc.status == 422 else None
                # A failed test op and a CEL rejection are both 422: a fresh read tells a race from a rejection.
                if fresh is None or retry_precondition(fresh) == retry_precondition(job):
                    raise CliError(f"retry {name}: {exc.status} {_kube_message(exc)}") from exc
                job = fresh
        raise CliError(f"retry {name}: the job kept changing; try again")

    def preset(self, name: str) -> Obj:
        obj: Obj = self._call(f"transcodepreset {name}", self.api.get_cluster_custom_object, GROUP, VERSION,
                              PRESET_PLURAL, name)
        return dict(obj.get("spec") or {})

    # -- storage --

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = boto3.client("s3", endpoint_url=self.s3_endpoint or None,
                                    region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                                    or "us-east-1")
        return self._s3

    def upload(self, path: Path, dest: str | None, part_size: int, progress: Progress) -> str:
        if not dest:
            raise CliError("upload needs a destination s3://bucket/key (the shim picks one itself; this is the "
                           "direct backend)", 2)
        bucket, key = split_s3_uri(dest)
        if key.endswith("/"):
            key += path.name
        config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4)
        try:
            self.s3.upload_file(str(path), bucket, key, Config=config, Callback=progress)
        except (BotoCoreError, ClientError) as exc:
            raise CliError(f"upload to s3://{bucket}/{key}: {exc}") from exc
        return f"s3://{bucket}/{key}"

    def download(self, job: Obj, output: Obj, target: Path, progress: Progress) -> list[Path]:
        uri = str(output["uri"])
        bucket, key = split_s3_uri(uri)
        keys = [(key + f, Path(str(output["name"])) / local_relative(f)) for f in output.get("files") or []] \
            if uri.endswith("/") else [(key, Path(local_name(key, str(output["name"]))))]
        written = []
        for k, rel in keys:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.s3.download_file(bucket, k, str(dest), Callback=progress)
            except (BotoCoreError, ClientError) as exc:
                raise CliError(f"download s3://{bucket}/{k}: {exc}") from exc
            written.append(dest)
        return written


# ---- through the REST shim --------------------------------------------------------------------------------


class ShimBackend:
    """The REST shim (docs/shim.md): X-API-Key, jobs in the key's tenant namespace, SSE for watch, presigned
    multipart uploads and presigned downloads (no storage credentials needed on this side)."""

    def __init__(self, url: str, key: str, timeout: float = 30) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"X-API-Key": key, "User-Agent": "transkube-cli"})
        self.timeout = timeout

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, self.url + path, **kwargs)
        except requests.RequestException as exc:
            raise CliError(f"{what}: cannot reach the shim at {self.url}: {exc}") from exc
        return self._check(resp, what)

    @staticmethod
    def _check(resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code >= 400:
            message = resp.text[:500]
            try:
                error = resp.json()["error"]
                message = f"{error['code']}: {error['message']}" + (f" (field {error['field']})"
                                                                    if error.get("field") else "")
            except (ValueError, KeyError, TypeError):
                pass
            if resp.status_code == 404:
                raise NotFound(f"{what}: {message}")
            code = 2 if resp.status_code in (400, 422) else 5
            raise CliError(f"{what}: HTTP {resp.status_code} {message}", code)
        return resp

    def create(self, request: SubmitRequest) -> Obj:
        if request.name:
            raise CliError("the shim names jobs itself: --name (or metadata.name) is not supported with --api-url",
                           2)
        resp = self._request("POST", "/api/v1/jobs", "create", json=request.spec.wire())
        return shim_job_to_cr(resp.json())

    def get(self, name: str) -> Obj:
        return shim_job_to_cr(self._request("GET", f"/api/v1/jobs/{name}", f"transcodejob {name}").json())

    def list_jobs(self) -> list[Obj]:
        items: list[Obj] = []
        params: dict[str, Any] = {"limit": 500}
        while True:
            page = self._request("GET", "/api/v1/jobs", "list", params=params).json()
            items.extend(shim_job_to_cr(v) for v in page.get("items") or [])
            if not page.get("continue"):
                return items
            params["continue"] = page["continue"]

    def watch(self, name: str) -> Iterator[Obj | None]:
        """SSE: the job now, then every change; None once it is deleted. A stream that ends early or breaks (a
        shim replica shutting down, a network blip) is reopened with Last-Event-ID, after a backoff that doubles
        up to sse.RECONNECT_MAX_SECONDS; the shim then sends what changed meanwhile, and always the terminal
        event of a job that ended. Gives up after sse.RECONNECT_GIVE_UP_SECONDS without a connection."""
        job: Obj | None = None
        status: Obj = {}
        last_id: str | None = None
        failures = 0
        last_connected = time.monotonic()
        while True:
            if failures:
                if time.monotonic() - last_connected > sse.RECONNECT_GIVE_UP_SECONDS:
                    raise CliError(f"watch {name}: lost the event stream and could not reconnect for "
                                   f"{sse.RECONNECT_GIVE_UP_SECONDS:.0f} s")
                time.sleep(sse.reconnect_delay(failures))
            failures += 1
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                resp = self.session.get(f"{self.url}/api/v1/jobs/{name}/events", headers=headers, stream=True,
                                        timeout=(10, 120))
            except requests.RequestException:
                continue  # the shim is unreachable for now
            with resp:
                if resp.status_code in RETRYABLE_STATUSES:
                    continue
                self._check(resp, f"watch {name}")
                failures, last_connected = 0, time.monotonic()
                try:
                    for event in sse.events(line for line in resp.iter_lines(decode_unicode=True)):
                        last_id = event.id or last_id
                        if event.name == "heartbeat":
                            continue
                        if event.name == "deleted":
                            yield None
                            return
                        if event.name in ("state", "completed", "failed", "cancelled"):
                            job = shim_job_to_cr(event.data)
                        status = fold_event(status, event.name, event.data)
                        if event.name == "phase" and event.data.get("to") == "Succeeded":
                            continue  # `completed` follows with the whole status (its outputs): show that one
                        if job is not None:
                            yield {**job, "status": status}
                        if event.name in ("completed", "failed", "cancelled"):
                            return
                except requests.RequestException:
                    pass  # the stream broke: reconnect
            failures = max(failures, 1)

    def set_flag(self, name: str, verb: str) -> Obj:
        path = {"cancel": "cancel", "suspend": "pause", "resume": "resume"}[verb]
        return shim_job_to_cr(self._request("POST", f"/api/v1/jobs/{name}/{path}", f"{verb} {name}").json())

    def retry(self, name: str) -> Obj:
        return shim_job_to_cr(self._request("POST", f"/api/v1/jobs/{name}/retry", f"retry {name}").json())

    def preset(self, name: str) -> Obj:
        items = self._request("GET", "/api/v1/presets", "presets").json().get("items") or []
        for item in items:
            if item.get("name") == name:
                return dict(item.get("spec") or {})
        raise CliError(f"no preset named {name!r} (installed: {', '.join(i['name'] for i in items) or 'none'})", 2)

    def upload(self, path: Path, dest: str | None, part_size: int, progress: Progress) -> str:
        if dest:
            raise CliError("with --api-url the shim chooses where uploads go (uploads/<tenant>/...); drop the "
                           "destination, the resulting s3:// URI is printed", 2)
        size = path.stat().st_size
        part_size = max(part_size, 5 * MIB)  # S3's minimum part size
        started = self._request("POST", "/api/v1/uploads", "upload", json={
            "filename": path.name, "size": size, "partSize": part_size}).json()
        upload_id, part_size = started["uploadId"], int(started["partSize"])
        count = max(1, math.ceil(size / part_size))
        parts: list[Obj] = []
        try:
            with path.open("rb") as f:
                for first in range(1, count + 1, 100):
                    numbers = list(range(first, min(first + 100, count + 1)))
                    urls = self._request("POST", f"/api/v1/uploads/{upload_id}/parts", "upload",
                                         json={"partNumbers": numbers}).json()["parts"]
                    for part in urls:
                        chunk = f.read(part_size)
                        try:
                            put = requests.put(part["url"], data=chunk, timeout=300)
                        except requests.RequestException as exc:
                            raise CliError(f"upload part {part['partNumber']}: {exc}") from exc
                        if put.status_code != 200:
                            raise CliError(f"upload part {part['partNumber']}: HTTP {put.status_code} "
                                           f"{put.text[:300]}")
                        parts.append({"partNumber": part["partNumber"], "etag": put.headers["ETag"]})
                        progress(len(chunk))
            done = self._request("POST", f"/api/v1/uploads/{upload_id}/complete", "upload",
                                 json={"parts": parts}).json()
        except BaseException:
            with contextlib.suppress(requests.RequestException):
                self.session.delete(f"{self.url}/api/v1/uploads/{upload_id}", timeout=self.timeout)
            raise
        return str(done["uri"])

    def download(self, job: Obj, output: Obj, target: Path, progress: Progress) -> list[Path]:
        name, out = job["metadata"]["name"], str(output["name"])
        if str(output["uri"]).endswith("/"):
            raise CliError(f"output {out} is a set of objects under {output['uri']}; the shim presigns single "
                           "files only (use the direct backend to download it)", 5)
        link = self._request("GET", f"/api/v1/jobs/{name}/outputs/{out}/url", f"output {out}").json()
        dest = target / local_name(split_s3_uri(str(output["uri"]))[1], out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with requests.get(link["url"], stream=True, timeout=(10, 300)) as resp:
                if resp.status_code != 200:
                    raise CliError(f"download {output['uri']}: HTTP {resp.status_code}")
                with dest.open("wb") as f:
                    for chunk in resp.iter_content(MIB):
                        f.write(chunk)
                        progress(len(chunk))
        except requests.RequestException as exc:
            raise CliError(f"download {output['uri']}: {exc}") from exc
        return [dest]
