"""Which storage a tenant may name: its scope (transkube_api.scope, the rule the operator and the admission policy
apply per namespace) plus its own upload area. Anything else is a 403 `uri_forbidden` naming the field, so a
tenant can neither read another tenant's objects, nor overwrite them, nor have the shim presign them. Pure."""

from __future__ import annotations

from collections.abc import Callable

from transkube_api.models import TranscodeJobSpec
from transkube_api.scope import Access, StorageScope, check_spec, refusal

from .config import ShimConfig
from .errors import ApiError
from .storage import tenant_prefix

FORBIDDEN = "uri_forbidden"


def upload_area(config: ShimConfig, tenant: str) -> str:
    """Where the tenant's presigned uploads go: s3://<upload bucket>/<upload prefix>/<tenant>/."""
    return f"s3://{config.upload_bucket}/{tenant_prefix(config, tenant)}"


def tenant_scope(config: ShimConfig, tenant: str) -> StorageScope | None:
    """The tenant's configured scope plus its upload area; None if the configuration leaves it unconfined."""
    scope = config.scopes().scope_for(tenant)
    return None if scope is None else scope | StorageScope(read_write=(upload_area(config, tenant),))


def _forbidden(message: str, field: str) -> ApiError:
    return ApiError(403, FORBIDDEN, message, field)


def confine_spec(config: ShimConfig, tenant: str, spec: TranscodeJobSpec,
                 request_field: Callable[[str], str] = lambda f: f) -> None:
    """403 for the first URI of the spec outside the tenant's scope. `request_field` maps a spec field
    (outputs[0].uri) to the request's (outputUri) when the body is not a spec."""
    found = check_spec(spec, tenant_scope(config, tenant), f"tenant {tenant}")
    if found is not None:
        field = request_field(found.field)
        raise _forbidden(field + found.message[len(found.field):], field)


def confine_uri(config: ShimConfig, tenant: str, uri: str, field: str, access: Access) -> None:
    scope = tenant_scope(config, tenant)
    if scope is not None and (found := refusal(uri, field, access, scope, f"tenant {tenant}")) is not None:
        raise _forbidden(found.message, field)


def confine_upload(config: ShimConfig, tenant: str, key: str, field: str) -> None:
    """An upload id's key must lie in the tenant's own upload area (whatever else its scope allows: the shim
    only signs uploads there)."""
    uri = f"s3://{config.upload_bucket}/{key}"
    found = refusal(uri, field, "write", StorageScope(read_write=(upload_area(config, tenant),)),
                    f"tenant {tenant}'s uploads")
    if found is not None:
        raise _forbidden(found.message, field)
