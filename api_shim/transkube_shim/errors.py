"""The one error shape, `{"error": {"code", "message", "field"?}}`, and pure mappings onto it from pydantic
validation errors, Kubernetes API errors and aiohttp's HTTP exceptions."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError


class ApiError(Exception):
    """Raised by handlers and helpers; the error middleware renders it. Never carries a stack trace out."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def field_path(loc: Sequence[int | str]) -> str:
    """pydantic's ('outputs', 0, 'video', 'crf') -> 'outputs[0].video.crf'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def from_validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    first = exc.errors(include_url=False)[0]
    loc = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    path = field_path(loc)
    message = str(first["msg"]).removeprefix("Value error, ")
    if prefix:
        path = f"{prefix}.{path}" if path else prefix
    return ApiError(422, "validation_error", message, path or None)


def upstream_unavailable() -> ApiError:
    """The API server is gone for now (restarting: connection refused, or its own 503). Writes fail with this;
    reads keep answering from the watch-fed cache. Clients retry after Retry-After."""
    return ApiError(503, "upstream_unavailable", "the Kubernetes API server is unavailable; retry shortly",
                    headers={"Retry-After": "2"})


# Kubernetes Status reasons we pass through with our own code.
_KUBE_CODES = {404: (404, "not_found"), 409: (409, "conflict"), 410: (409, "conflict"), 400: (400, "bad_request")}


def from_kube_error(status: int, body: str | bytes | None) -> ApiError:
    """A Kubernetes API error -> the shim's error. The shim's own credentials being refused, the API server
    being overloaded or broken are the shim's problem (5xx), not the client's."""
    parsed: dict[str, Any] = {}
    try:
        loaded = json.loads(body or b"{}")
        if isinstance(loaded, dict):
            parsed = loaded
    except ValueError:
        pass
    message = str(parsed.get("message") or "")
    if status == 422:
        causes = (parsed.get("details") or {}).get("causes") or []
        field = None
        if causes:
            field = str(causes[0].get("field") or "") or None
            message = str(causes[0].get("message") or message)
        if field and field.startswith("spec."):
            field = field.removeprefix("spec.")
        return ApiError(422, "validation_error", message or "invalid", field)
    if status in _KUBE_CODES:
        http, code = _KUBE_CODES[status]
        if status == 409 and parsed.get("reason") == "AlreadyExists":
            code = "already_exists"
        return ApiError(http, code, message or code.replace("_", " "))
    if status == 403 and (denied := _policy_denial(message)) is not None:
        return denied
    if status in (401, 403):
        return ApiError(502, "upstream_unauthorized", "the shim's Kubernetes credentials were refused")
    if status == 503:
        return upstream_unavailable()
    if status == 429:
        return ApiError(503, "upstream_busy", "the Kubernetes API server is busy; retry shortly",
                        headers={"Retry-After": "1"})
    return ApiError(502, "upstream_error", f"the Kubernetes API server answered {status}")


_POLICY_DENIED = re.compile(r"ValidatingAdmissionPolicy '[^']*' with binding '[^']*' denied request: (?P<why>.*)$",
                            re.DOTALL)
_SCOPE_FIELD = re.compile(r"^spec\.(?P<field>[^:\s]+): .* is outside what namespace ")


def _policy_denial(message: str) -> ApiError | None:
    """An admission policy refused the request: the storage-scope policy (the namespace's limits are narrower
    than the tenant's in the shim's own configuration) is a 403 uri_forbidden naming the field, any other
    policy a 403 admission_denied. Not the shim's credentials: those are refused without a policy's name."""
    match = _POLICY_DENIED.search(message)
    if match is None:
        return None
    why = match["why"]
    if (scope := _SCOPE_FIELD.match(why)) is not None:
        return ApiError(403, "uri_forbidden", why.removeprefix("spec."), scope["field"])
    return ApiError(403, "admission_denied", why)


def from_http_status(status: int, reason: str) -> ApiError:
    """aiohttp's own HTTP exceptions (unknown route, wrong method, body too large) in our shape."""
    codes = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
             405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
             429: "rate_limited"}
    code = codes.get(status, "internal" if status >= 500 else "bad_request")
    return ApiError(status, code, reason.lower() if status < 500 else "internal error")
