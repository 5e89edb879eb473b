"""A small JSON client for the Kubernetes API over client-certificate TLS (dev tooling only).

The node agent needs raw objects, merge patches and long watches with a per-node identity; a thin
urllib3 client keeps that explicit. Product code uses kopf and the official client instead.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
import yaml

Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        self.status = status
        self.body = body
        try:
            self.reason = str(json.loads(body).get("reason", ""))
        except ValueError:
            self.reason = ""
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")


class Kube:
    def __init__(self, server: str, ca_file: str, cert_file: str, key_file: str):
        self.server = server.rstrip("/")
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
        self._http = urllib3.PoolManager(ssl_context=ctx, maxsize=8, retries=False)

    @classmethod
    def from_kubeconfig(cls, path: str | Path) -> Kube:
        cfg = yaml.safe_load(Path(path).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        tmp = Path(tempfile.mkdtemp(prefix="transkube-kube-"))
        files = {}
        for key, name in (("certificate-authority-data", "ca.crt"), ("client-certificate-data", "tls.crt"),
                          ("client-key-data", "tls.key")):
            src = cluster if key.startswith("certificate-authority") else user
            (tmp / name).write_bytes(base64.b64decode(src[key]))
            files[name] = str(tmp / name)
        (tmp / "tls.key").chmod(0o600)
        return cls(cluster["server"], files["ca.crt"], files["tls.crt"], files["tls.key"])

    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                content_type: str = "application/json", timeout: float = 30) -> Obj:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        url = self.server + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        resp = self._http.request(method, url, body=data, headers=headers, timeout=timeout)
        if resp.status >= 400:
            raise ApiError(resp.status, resp.data.decode(errors="replace"), method, path)
        return dict(json.loads(resp.data)) if resp.data else {}

    def get(self, path: str, **params: Any) -> Obj:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def put(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body)

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout_seconds: int = 240, **params: Any) -> Iterator[Obj]:
        """Yields watch events ({type, object}); ends when the server closes the stream."""
        fields = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(timeout_seconds), **params}
        resp = self._http.request("GET", self.server + path, fields=fields, preload_content=False,
                                  timeout=urllib3.Timeout(connect=5, read=timeout_seconds + 30))
        try:
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode(errors="replace"), "WATCH", path)
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield dict(json.loads(line))
        finally:
            resp.release_conn()
