"""The operator's I/O against the Kubernetes API (official client); no decisions here."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from transkube_api.constants import (
    API_VERSION,
    GROUP,
    KIND,
    MANAGED_BY,
    PLURAL,
    PRESET_PLURAL,
    VERSION,
)

from . import metrics
from .reconcile import Action, CreateJob, DeleteJob, DeletePod, DeleteTranscodeJob, Event

log = logging.getLogger("transkube.operator")
Obj = dict[str, Any]
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_labels(method: str, url: str, query: Any = None) -> tuple[str, str]:
    """(verb, resource) of one API request, named as the API server's apiserver_request_total names them:
    GET of a collection is list (watch with ?watch), of one object get; a subresource is resource/sub."""
    path = url.split("://", 1)[-1]
    path = "/" + path.split("/", 1)[1] if "/" in path else "/"
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) != 2:
        parts = parts[2:]  # namespaces/<ns>/<resource>...; a Namespace itself is namespaces/<name>
    resource = parts[0] if parts else ""
    if len(parts) >= 3:
        resource = f"{resource}/{parts[2]}"
    method = method.upper()
    if method == "GET":
        watching = "watch=true" in url or any(k == "watch" for k, _ in (query or []))
        verb = "watch" if watching else ("list" if len(parts) == 1 else "get")
    else:
        verb = _VERBS.get(method, method.lower())
    return verb, resource


class CountingApiClient(client.ApiClient):  # type: ignore[misc]
    """The official client, counting every request it makes by verb, resource and response code
    (transkube_operator_api_requests_total): the operator's own share of the API server's load."""

    def request(self, method: str, url: str, query_params: Any = None, *args: Any, **kwargs: Any) -> Any:
        verb, resource = request_labels(method, url, query_params)
        try:
            response = super().request(method, url, query_params, *args, **kwargs)
        except ApiException as e:
            metrics.API_REQUESTS.labels(verb, resource, str(e.status)).inc()
            raise
        except Exception:
            metrics.API_REQUESTS.labels(verb, resource, "error").inc()
            raise
        metrics.API_REQUESTS.labels(verb, resource, str(getattr(response, "status", 200))).inc()
        return response


def api_client(connections: int) -> CountingApiClient:
    """A client from the loaded kubeconfig with a connection pool for `connections` threads at once (the default,
    five per CPU, makes the threads beyond it open and close a connection per request)."""
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = connections
    return CountingApiClient(configuration)


class Kube:
    def __init__(self, api: client.ApiClient | None = None):
        self.api = api or CountingApiClient()
        self.custom = client.CustomObjectsApi(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)

    @staticmethod
    def _raw(response: Any) -> Obj:
        """The API server's own JSON (RFC 3339 strings stay strings), from a _preload_content=False call."""
        return dict(json.loads(response.data))

    def get_tj(self, namespace: str, name: str) -> Obj | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def get_preset(self, name: str) -> Obj | None:
        """A cluster-scoped TranscodePreset; None when it (or its CRD) does not exist."""
        try:
            return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, PRESET_PLURAL, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patches status; returns the object as the API server now has it."""
        return dict(self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                                      {"status": patch}))

    def patch_labels(self, namespace: str, name: str, labels: dict[str, str | None]) -> Obj:
        return dict(self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                               {"metadata": {"labels": labels}}))

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key is missing."""
        try:
            secret = self._raw(self.core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        raw = (secret.get("data") or {}).get(key)
        return base64.b64decode(raw).decode().strip() if raw else None

    def apply(self, namespace: str, owner_uid: str, action: Action, tj_name: str = "") -> Obj | None:
        """Carries out one action; returns the Job as the API server answered for a create or suspend."""
        if isinstance(action, DeletePod):
            try:
                self.core.delete_namespaced_pod(action.name, namespace)
                log.info("deleted stalled pod %s/%s", namespace, action.name)
            except ApiException as e:
                if e.status != 404:
                    raise
            return None
        if isinstance(action, DeleteTranscodeJob):
            try:
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, tj_name,
                    body={"preconditions": {"uid": owner_uid}, "propagationPolicy": "Background"})
                log.info("deleted finished TranscodeJob %s/%s (retention)", namespace, tj_name)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
            return None
        if isinstance(action, CreateJob):
            return self.create_job(namespace, owner_uid, action.manifest)
        if isinstance(action, DeleteJob):
            try:
                # Foreground: the Job goes only after its pods, so a cancel really stops the work.
                self.batch.delete_namespaced_job(action.name, namespace, propagation_policy="Foreground")
                log.info("deleted Job %s/%s", namespace, action.name)
            except ApiException as e:
                if e.status != 404:
                    raise
            return None
        # This client sends PATCH bodies as JSON Patch by default.
        return self._raw(self.batch.patch_namespaced_job(
            action.name, namespace, [{"op": "replace", "path": "/spec/suspend", "value": action.suspend}],
            _preload_content=False))

    def create_job(self, namespace: str, owner_uid: str, manifest: Obj) -> Obj:
        name = manifest["metadata"]["name"]
        try:
            created = self._raw(self.batch.create_namespaced_job(namespace, manifest, _preload_content=False))
            log.info("created Job %s/%s", namespace, name)
            return created
        except ApiException as e:
            if e.status != 409:
                raise
            # Already there (a retried reconcile, or an operator restart): adopt it if it is ours.
            existing = self._raw(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
            refs = existing["metadata"].get("ownerReferences") or []
            if not any(r.get("uid") == owner_uid for r in refs):
                raise RuntimeError(f"Job {namespace}/{name} exists but is not owned by this TranscodeJob") from e
            return existing

    def ensure_worker_rbac(self, objects: list[Obj]) -> None:
        """Creates what is missing; never overwrites what a platform team put there."""
        for obj in objects:
            ns = obj["metadata"]["namespace"]
            try:
                if obj["kind"] == "ServiceAccount":
                    self.core.create_namespaced_service_account(ns, obj)
                elif obj["kind"] == "Role":
                    self.rbac.create_namespaced_role(ns, obj)
                else:
                    self.rbac.create_namespaced_role_binding(ns, obj)
            except ApiException as e:
                if e.status != 409:
                    raise

    def post_event(self, tj: Obj, event: Event) -> None:
        meta = tj["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion")},
            "reason": event.reason, "message": event.message[:1024], "type": event.type,
            "source": {"component": MANAGED_BY}, "reportingComponent": MANAGED_BY,
            "reportingInstance": MANAGED_BY, "action": event.reason,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as e:  # events are best effort
            log.warning("could not post event %s: %s", event.reason, e.reason)
