"""Shim settings, read once from the environment; tests build a ShimConfig directly."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from transkube_api.scope import TENANT_PLACEHOLDER, ScopeEntry, ScopeMap

MIB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MIB  # S3 rejects smaller parts (except the last one)
S3_MAX_PART_SIZE = 5 * 1024 * MIB
S3_MAX_PARTS = 10_000


@dataclass(frozen=True)
class Tier:
    """What one API-key tier may do: request rate (token bucket) and job quotas."""

    rate_per_second: float
    burst: int
    max_concurrent_jobs: int
    max_jobs_per_day: int


DEFAULT_TIERS: dict[str, Tier] = {
    "free": Tier(rate_per_second=2, burst=10, max_concurrent_jobs=2, max_jobs_per_day=20),
    "standard": Tier(rate_per_second=10, burst=40, max_concurrent_jobs=10, max_jobs_per_day=500),
    "premium": Tier(rate_per_second=50, burst=200, max_concurrent_jobs=50, max_jobs_per_day=5000),
}


def pool_capacities(raw: str | None) -> dict[str, int]:
    """TRANSKUBE_SCHEDULING ({"pools": {"cpu": {"capacity": 4, ...}, ...}, ...}) -> {"cpu": 4, ...}. Only pools it
    names: without them the operator falls back to its built-in pools, which the shim does not guess. In kueue
    mode Kueue's ClusterQueues hold the capacity, so there is none to report."""
    if not raw:
        return {}
    try:
        scheduling = json.loads(raw)
        if scheduling.get("mode") == "kueue":
            return {}
        return {str(name): int(pool["capacity"]) for name, pool in (scheduling.get("pools") or {}).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"TRANSKUBE_SCHEDULING is not valid scheduling JSON: {exc}") from exc


def default_scope(bucket: str) -> ScopeEntry:
    """A tenant's own prefix in the upload bucket, when the configuration names no default."""
    return ScopeEntry(prefixes=(f"s3://{bucket}/{TENANT_PLACEHOLDER}/",))


def parse_storage_scope(raw: str | None, bucket: str) -> ScopeMap | None:
    if not raw:
        return None
    try:
        return ScopeMap.from_wire(json.loads(raw), TENANT_PLACEHOLDER, "tenants", default_scope(bucket))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"TRANSKUBE_SHIM_STORAGE_SCOPE is not valid: {exc}") from exc


@dataclass(frozen=True)
class ShimConfig:
    host: str = "0.0.0.0"  # noqa: S104 (a server in a pod listens on all interfaces)
    port: int = 8080
    kubeconfig: str | None = None  # None: in-cluster service account
    # Where the API-key Secret lives (the shim's own namespace) and its name.
    auth_namespace: str = "transkube-system"
    api_keys_secret: str = "transkube-shim-api-keys"  # noqa: S105 (a Secret's name)
    api_keys_refresh_seconds: float = 30.0
    api_keys_miss_refresh_seconds: float = 2.0  # an unknown key id re-reads the Secret at most this often
    # Optional JWT bearer tokens: HS256 with a shared secret and/or RS256 with a PEM public key.
    jwt_hs256_secret: str | None = None
    jwt_rs256_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_tier_claim: str = "tier"
    # Each tenant id maps to exactly one namespace.
    namespace_template: str = "{tenant}"
    tiers: dict[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    default_tier: str = "standard"
    # Storage for presigned URLs (credentials come from the usual AWS_* environment).
    s3_endpoint: str | None = None
    s3_presign_endpoint: str | None = None  # what clients reach, when it differs from s3_endpoint
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None  # None: boto3's usual credential chain
    s3_secret_access_key: str | None = None
    upload_bucket: str = "transkube"
    upload_prefix: str = "uploads"
    upload_part_size: int = 8 * MIB
    upload_url_ttl_seconds: int = 3600
    stale_upload_seconds: int = 24 * 3600
    stale_upload_sweep_seconds: float = 3600.0
    download_url_ttl_seconds: int = 3600
    max_url_ttl_seconds: int = 7 * 24 * 3600  # SigV4's own maximum
    # Server-Sent Events.
    sse_heartbeat_seconds: float = 15.0
    sse_max_per_job: int = 100
    # Requests.
    max_body_bytes: int = 256 * 1024
    cors_origins: tuple[str, ...] = ()
    list_default_limit: int = 50
    list_max_limit: int = 500
    shutdown_timeout_seconds: float = 10.0
    # Which storage each tenant may name (TRANSKUBE_SHIM_STORAGE_SCOPE: {"default": {...}, "tenants": {...}}, see
    # docs/shim.md); None: every tenant only its own s3://<upload bucket>/<tenant>/ (and its upload area).
    storage_scope: ScopeMap | None = None
    # The operator's pools (TRANSKUBE_SCHEDULING, the same JSON the operator reads): name -> capacity, for
    # GET /stats. Empty: capacities are not reported.
    pool_capacities: dict[str, int] = field(default_factory=dict)

    def scopes(self) -> ScopeMap:
        return self.storage_scope or ScopeMap(TENANT_PLACEHOLDER, default_scope(self.upload_bucket))

    def tier(self, name: str | None) -> Tier:
        return self.tiers.get(name or self.default_tier) or self.tiers[self.default_tier]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ShimConfig:
        e = dict(os.environ if env is None else env)
        base = cls()

        def get(name: str, default: str) -> str:
            return e.get(f"TRANSKUBE_SHIM_{name}", default)

        def opt(name: str) -> str | None:
            return e.get(f"TRANSKUBE_SHIM_{name}") or None

        tiers = dict(base.tiers)
        if raw_tiers := opt("TIERS"):
            tiers = {name: Tier(**spec) for name, spec in json.loads(raw_tiers).items()}
        upload_bucket = get("UPLOAD_BUCKET", base.upload_bucket)
        rs256 = opt("JWT_RS256_PUBLIC_KEY")
        if rs256 and not rs256.lstrip().startswith("-----BEGIN"):
            rs256 = Path(rs256).read_text()  # a path to the PEM file
        return cls(
            host=get("HOST", base.host),
            port=int(get("PORT", str(base.port))),
            kubeconfig=e.get("KUBECONFIG") or None,
            auth_namespace=get("AUTH_NAMESPACE", base.auth_namespace),
            api_keys_secret=get("API_KEYS_SECRET", base.api_keys_secret),
            api_keys_refresh_seconds=float(get("API_KEYS_REFRESH_SECONDS", str(base.api_keys_refresh_seconds))),
            jwt_hs256_secret=opt("JWT_HS256_SECRET"),
            jwt_rs256_public_key=rs256,
            jwt_audience=opt("JWT_AUDIENCE"),
            jwt_issuer=opt("JWT_ISSUER"),
            jwt_tenant_claim=get("JWT_TENANT_CLAIM", base.jwt_tenant_claim),
            jwt_tier_claim=get("JWT_TIER_CLAIM", base.jwt_tier_claim),
            namespace_template=get("NAMESPACE_TEMPLATE", base.namespace_template),
            tiers=tiers,
            default_tier=get("DEFAULT_TIER", base.default_tier),
            s3_endpoint=e.get("TRANSKUBE_S3_ENDPOINT") or e.get("AWS_ENDPOINT_URL_S3") or None,
            s3_presign_endpoint=opt("S3_PRESIGN_ENDPOINT"),
            s3_region=e.get("TRANSKUBE_S3_REGION", base.s3_region),
            s3_access_key_id=e.get("AWS_ACCESS_KEY_ID") or None,
            s3_secret_access_key=e.get("AWS_SECRET_ACCESS_KEY") or None,
            upload_bucket=upload_bucket,
            upload_prefix=get("UPLOAD_PREFIX", base.upload_prefix),
            upload_part_size=max(S3_MIN_PART_SIZE, int(get("UPLOAD_PART_SIZE", str(base.upload_part_size)))),
            upload_url_ttl_seconds=int(get("UPLOAD_URL_TTL_SECONDS", str(base.upload_url_ttl_seconds))),
            stale_upload_seconds=int(get("STALE_UPLOAD_SECONDS", str(base.stale_upload_seconds))),
            stale_upload_sweep_seconds=float(get("STALE_UPLOAD_SWEEP_SECONDS",
                                                 str(base.stale_upload_sweep_seconds))),
            download_url_ttl_seconds=int(get("DOWNLOAD_URL_TTL_SECONDS", str(base.download_url_ttl_seconds))),
            sse_heartbeat_seconds=float(get("SSE_HEARTBEAT_SECONDS", str(base.sse_heartbeat_seconds))),
            sse_max_per_job=int(get("SSE_MAX_PER_JOB", str(base.sse_max_per_job))),
            max_body_bytes=int(get("MAX_BODY_BYTES", str(base.max_body_bytes))),
            cors_origins=tuple(o.strip() for o in get("CORS_ORIGINS", "").split(",") if o.strip()),
            shutdown_timeout_seconds=float(get("SHUTDOWN_TIMEOUT_SECONDS", str(base.shutdown_timeout_seconds))),
            pool_capacities=pool_capacities(e.get("TRANSKUBE_SCHEDULING")),
            storage_scope=parse_storage_scope(opt("STORAGE_SCOPE"), upload_bucket),
        )
