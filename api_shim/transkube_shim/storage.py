"""Presigned S3 URLs: downloads of a job's outputs, and multipart uploads of inputs (initiate -> part URLs ->
complete/abort), plus the sweep that aborts uploads left unfinished. The shim holds no upload state: the
upload id it hands out encodes the object key and S3's UploadId, and the key's prefix names the tenant."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from transkube_api.s3uri import S3UriError, parse_s3_uri

from .config import S3_MAX_PARTS, S3_MIN_PART_SIZE, ShimConfig
from .errors import ApiError

log = logging.getLogger("transkube_shim.storage")


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tenant_prefix(config: ShimConfig, tenant: str) -> str:
    return f"{config.upload_prefix.strip('/')}/{tenant}/"


def encode_upload_id(key: str, s3_upload_id: str) -> str:
    raw = json.dumps({"k": key, "u": s3_upload_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_upload_id(token: str) -> tuple[str, str]:
    """-> (key, S3 UploadId); 404 for a token that is not one; whose key it is the caller checks
    (confine.confine_upload), and S3 itself checks the pair."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key, upload_id = raw["k"], raw["u"]
        if not isinstance(key, str) or not isinstance(upload_id, str):
            raise ValueError(token)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ApiError(404, "not_found", "no such upload") from exc
    return key, upload_id


def part_plan(size: int | None, part_size: int) -> int | None:
    """How many parts a file of size bytes takes; 422 when S3's 10,000-part limit cannot hold it."""
    if part_size < S3_MIN_PART_SIZE:
        raise ApiError(422, "validation_error", "partSize must be at least 5 MiB", "partSize")
    if size is None:
        return None
    count = max(1, math.ceil(size / part_size))
    if count > S3_MAX_PARTS:
        raise ApiError(422, "validation_error", f"{size} bytes need more than {S3_MAX_PARTS} parts of {part_size} "
                                                "bytes; send a larger partSize", "partSize")
    return count


def stale_uploads(uploads: Iterable[dict[str, Any]], now: datetime, max_age_seconds: int) -> list[tuple[str, str]]:
    """(Key, UploadId) of multipart uploads initiated more than max_age_seconds ago."""
    cutoff = now - timedelta(seconds=max_age_seconds)
    out = []
    for upload in uploads:
        initiated = upload.get("Initiated")
        if isinstance(initiated, datetime) and initiated.astimezone(UTC) < cutoff:
            out.append((str(upload["Key"]), str(upload["UploadId"])))
    return out


def _s3_error(exc: Exception) -> ApiError:
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchUpload", "NoSuchKey", "404"):
            return ApiError(404, "not_found", "no such upload")
        if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"):
            return ApiError(422, "invalid_parts", f"S3 refused the parts: {code}", "parts")
    return ApiError(502, "storage_error", "the object store refused or did not answer")


class Storage:
    def __init__(self, config: ShimConfig) -> None:
        self.config = config
        boto_config = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                             retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        self.client = boto3.client("s3", endpoint_url=config.s3_endpoint, region_name=config.s3_region,
                                   config=boto_config, aws_access_key_id=config.s3_access_key_id,
                                   aws_secret_access_key=config.s3_secret_access_key)
        # Presigned URLs are signed for the host clients use, which may differ from the one the shim uses.
        self.presigner = self.client if not config.s3_presign_endpoint else boto3.client(
            "s3", endpoint_url=config.s3_presign_endpoint, region_name=config.s3_region, config=boto_config,
            aws_access_key_id=config.s3_access_key_id, aws_secret_access_key=config.s3_secret_access_key)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc) from exc

    def ttl(self, requested: int | None, default: int) -> int:
        ttl = default if requested is None else requested
        if not 1 <= ttl <= self.config.max_url_ttl_seconds:
            raise ApiError(400, "invalid_parameter",
                           f"expiresIn must be 1-{self.config.max_url_ttl_seconds} seconds", "expiresIn")
        return ttl

    def download_url(self, uri: str, ttl: int) -> tuple[str, str]:
        """A presigned GET of the object; the key goes to S3 exactly as written (boto3 encodes it)."""
        try:
            loc = parse_s3_uri(uri)
        except S3UriError as exc:
            raise ApiError(422, "invalid_uri", f"{uri!r}: {exc}") from exc
        url = self.presigner.generate_presigned_url("get_object", Params={"Bucket": loc.bucket, "Key": loc.key},
                                                    ExpiresIn=ttl)
        return url, iso(datetime.now(UTC) + timedelta(seconds=ttl))

    async def initiate(self, tenant: str, filename: str, content_type: str | None) -> tuple[str, str, str]:
        """-> (upload id, uri, expiresAt of the unfinished upload)."""
        key = f"{tenant_prefix(self.config, tenant)}{uuid.uuid4().hex}/{filename}"
        kwargs: dict[str, Any] = {"Bucket": self.config.upload_bucket, "Key": key}
        if content_type:
            kwargs["ContentType"] = content_type
        answer = await self._call("create_multipart_upload", **kwargs)
        expires = iso(datetime.now(UTC) + timedelta(seconds=self.config.stale_upload_seconds))
        return encode_upload_id(key, answer["UploadId"]), f"s3://{self.config.upload_bucket}/{key}", expires

    def part_urls(self, key: str, upload_id: str, numbers: list[int]) -> tuple[list[tuple[int, str]], str]:
        ttl = self.config.upload_url_ttl_seconds
        urls = [(n, self.presigner.generate_presigned_url(
            "upload_part", Params={"Bucket": self.config.upload_bucket, "Key": key, "UploadId": upload_id,
                                   "PartNumber": n}, ExpiresIn=ttl)) for n in sorted(set(numbers))]
        return urls, iso(datetime.now(UTC) + timedelta(seconds=ttl))

    async def exists_upload(self, key: str, upload_id: str) -> None:
        await self._call("list_parts", Bucket=self.config.upload_bucket, Key=key, UploadId=upload_id, MaxParts=1)

    async def complete(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> int | None:
        ordered = [{"PartNumber": n, "ETag": etag if etag.startswith('"') else f'"{etag}"'}
                   for n, etag in sorted(parts)]
        await self._call("complete_multipart_upload", Bucket=self.config.upload_bucket, Key=key, UploadId=upload_id,
                         MultipartUpload={"Parts": ordered})
        head = await self._call("head_object", Bucket=self.config.upload_bucket, Key=key)
        size = head.get("ContentLength")
        return int(size) if size is not None else None

    async def abort(self, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=self.config.upload_bucket, Key=key, UploadId=upload_id)

    async def reachable(self) -> None:
        await self._call("head_bucket", Bucket=self.config.upload_bucket)

    async def sweep_stale(self) -> int:
        """Aborts uploads under the upload prefix older than stale_upload_seconds; returns how many."""
        prefix = self.config.upload_prefix.strip("/") + "/"
        aborted = 0
        kwargs: dict[str, Any] = {"Bucket": self.config.upload_bucket, "Prefix": prefix}
        for _ in range(1000):
            page = await self._call("list_multipart_uploads", **kwargs)
            for key, upload_id in stale_uploads(page.get("Uploads") or [], datetime.now(UTC),
                                                self.config.stale_upload_seconds):
                try:
                    await self.abort(key, upload_id)
                    aborted += 1
                except ApiError as exc:
                    log.warning("could not abort a stale upload", extra={"key": key, "error": exc.message})
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker")
        return aborted

    async def sweep_forever(self) -> None:
        while True:
            try:
                aborted = await self.sweep_stale()
                if aborted:
                    log.info("aborted stale uploads", extra={"count": aborted})
            except ApiError as exc:
                log.warning("stale upload sweep failed", extra={"error": exc.message})
            await asyncio.sleep(self.config.stale_upload_sweep_seconds)
