"""Who is calling, and which namespace they own.

API keys look like `tk_<id>_<secret>`. Only their SHA-256 is stored, in a Kubernetes Secret (one data entry
per key id, a JSON object {"hash": "sha256:<hex>", "tenant": "<id>", "tier": "<tier>"}), and a presented key
is compared in constant time. Optional JWT bearer tokens (PyJWT, HS256 and/or RS256) carry the tenant in a
claim. Either way an identity has exactly one tenant, and a tenant exactly one namespace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from .config import ShimConfig
from .errors import ApiError

log = logging.getLogger("transkube_shim.auth")

KEY_PREFIX = "tk"
KEY_ID_RE = re.compile(r"^[a-z0-9]{8,32}$")
TENANT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DUMMY_HASH = "sha256:" + "0" * 64
# After a failed read of the key Secret (the API server restarting), keep the keys we have and don't ask again for
# this long: every request would otherwise wait on an API server that is not there.
FAILED_REFRESH_BACKOFF_SECONDS = 5.0


@dataclass(frozen=True)
class Identity:
    kind: Literal["api_key", "jwt"]
    subject: str  # key id, or the JWT's sub: what rate limits are keyed on
    tenant: str
    tier: str
    namespace: str

    @property
    def limiter_key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    hash: str
    tenant: str
    tier: str


def hash_key(key: str) -> str:
    """Keys are 256-bit random, so one SHA-256 (no salt, no stretching) is enough to make the stored form
    useless to a thief while a lookup stays cheap."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """(key id, full key) for a fresh API key."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not KEY_ID_RE.match(parts[1]) or not parts[2]:
        return None
    return parts[1]


def secret_entry(key: str, tenant: str, tier: str) -> tuple[str, str]:
    """The Secret data entry (name, JSON value) that registers key."""
    key_id = key_id_of(key)
    if key_id is None:
        raise ValueError("not a transkube API key")
    return key_id, json.dumps({"hash": hash_key(key), "tenant": tenant, "tier": tier})


def parse_secret(data: dict[str, str]) -> dict[str, KeyRecord]:
    """The Secret's base64 data -> key records; malformed entries are skipped (and logged), not fatal."""
    records: dict[str, KeyRecord] = {}
    for key_id, raw in data.items():
        try:
            entry = json.loads(base64.b64decode(raw))
            record = KeyRecord(key_id, str(entry["hash"]), str(entry["tenant"]), str(entry.get("tier") or ""))
            if not KEY_ID_RE.match(key_id) or not record.hash.startswith("sha256:") or \
                    not TENANT_RE.match(record.tenant):
                raise ValueError("bad entry")
        except (ValueError, KeyError, TypeError, binascii.Error):
            log.warning("skipping malformed API key entry", extra={"key_id": key_id})
            continue
        records[key_id] = record
    return records


def check_key(key: str, records: dict[str, KeyRecord]) -> KeyRecord | None:
    """Constant-time comparison of the key's hash with the stored one; unknown ids still compare."""
    key_id = key_id_of(key)
    record = records.get(key_id) if key_id else None
    expected = record.hash if record else _DUMMY_HASH
    ok = hmac.compare_digest(hash_key(key).encode(), expected.encode())
    return record if ok and record else None


def namespace_for(config: ShimConfig, tenant: str) -> str:
    if not TENANT_RE.match(tenant) or len(tenant) > 63:
        raise ApiError(401, "unauthenticated", "the credentials name an invalid tenant")
    return config.namespace_template.format(tenant=tenant)


def verify_jwt(token: str, config: ShimConfig) -> dict[str, Any]:
    """Verifies signature, exp/nbf (required: exp), and aud/iss when configured."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ApiError(401, "unauthenticated", "malformed bearer token") from exc
    alg = header.get("alg")
    key: str | None = None
    if alg == "HS256":
        key = config.jwt_hs256_secret
    elif alg == "RS256":
        key = config.jwt_rs256_public_key
    if not key:
        raise ApiError(401, "unauthenticated", "bearer token algorithm not accepted")
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[str(alg)], audience=config.jwt_audience, issuer=config.jwt_issuer,
            options={"require": ["exp", "sub"], "verify_aud": config.jwt_audience is not None}, leeway=30)
    except jwt.PyJWTError as exc:
        raise ApiError(401, "unauthenticated", f"invalid bearer token: {exc}") from exc
    return claims


class Authenticator:
    """Resolves a request's credentials to an Identity. The API-key Secret is re-read periodically and,
    rate-limited, when an unknown key id shows up (a key added a moment ago)."""

    def __init__(self, config: ShimConfig, load_secret: Any) -> None:
        self.config = config
        self._load_secret = load_secret  # async () -> dict[str, str] (the Secret's data)
        self.records: dict[str, KeyRecord] = {}
        self.loaded_at = 0.0
        self.failed_at: float | None = None
        self.last_error: str | None = None

    async def refresh(self) -> None:
        try:
            data = await self._load_secret()
        except ApiError as exc:
            if exc.status != 404:
                self.last_error = exc.message
                self.failed_at = time.monotonic()
                log.warning("could not read the API key Secret", extra={"error": exc.message})
                return
            data = {}
        self.records = parse_secret(data)
        self.loaded_at = time.monotonic()
        self.failed_at = None
        self.last_error = None

    async def maybe_refresh(self, unknown_id: bool) -> None:
        now = time.monotonic()
        if self.failed_at is not None and now - self.failed_at < FAILED_REFRESH_BACKOFF_SECONDS:
            return
        age = now - self.loaded_at
        config = self.config
        if age > config.api_keys_refresh_seconds or (unknown_id and age > config.api_keys_miss_refresh_seconds):
            await self.refresh()

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.config.jwt_hs256_secret or self.config.jwt_rs256_public_key)

    async def identify(self, api_key_header: str | None, authorization: str | None) -> Identity:
        token: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise ApiError(401, "unauthenticated", "Authorization must be 'Bearer <token>'")
            token = value.strip()
        key = api_key_header.strip() if api_key_header else None
        if key is None and token is not None and token.startswith(f"{KEY_PREFIX}_"):
            key, token = token, None
        if key is not None:
            return await self._from_key(key)
        if token is not None:
            if not self.jwt_enabled:
                raise ApiError(401, "unauthenticated", "bearer tokens are not accepted; use an API key")
            return self._from_jwt(token)
        raise ApiError(401, "unauthenticated", "send an API key (X-API-Key) or a bearer token")

    async def _from_key(self, key: str) -> Identity:
        key_id = key_id_of(key)
        await self.maybe_refresh(unknown_id=key_id is not None and key_id not in self.records)
        record = check_key(key, self.records)
        if record is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked API key")
        tier = record.tier if record.tier in self.config.tiers else self.config.default_tier
        return Identity("api_key", record.key_id, record.tenant, tier, namespace_for(self.config, record.tenant))

    def _from_jwt(self, token: str) -> Identity:
        claims = verify_jwt(token, self.config)
        tenant = claims.get(self.config.jwt_tenant_claim)
        if not isinstance(tenant, str):
            raise ApiError(401, "unauthenticated", f"bearer token lacks the {self.config.jwt_tenant_claim!r} claim")
        tier = claims.get(self.config.jwt_tier_claim)
        tier = tier if isinstance(tier, str) and tier in self.config.tiers else self.config.default_tier
        return Identity("jwt", str(claims["sub"]), tenant, tier, namespace_for(self.config, tenant))
