"""S3 transfers: download the input, upload outputs (multipart above a threshold), delete on cleanup, and the
mapping of storage failures onto the worker's failure classes.

boto3 reads AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION itself; only
AWS_REGION is passed explicitly (botocore's client config does not read it).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.futures import TransferFuture
from s3transfer.subscribers import BaseSubscriber
from transkube_api.constants import REASON_OUTPUT_BUCKET_NOT_FOUND

# Re-exported: the worker names S3 objects by the one URI rule (transkube_api.s3uri).
from transkube_api.s3uri import S3Location as S3Location
from transkube_api.s3uri import parse_s3_uri as parse_s3_uri

from .errors import InputNotFound, Internal, StorageDenied, Transient, Unsupported, WorkerError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
else:
    S3Client = Any

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
POLL_SECONDS = 0.25

CONTENT_TYPES: dict[str, str] = {"mp4": "video/mp4", "mov": "video/quicktime", "mkv": "video/x-matroska",
                                 "webm": "video/webm", "m4a": "audio/mp4", "mp3": "audio/mpeg", "ogg": "audio/ogg",
                                 "flac": "audio/flac", "jpeg": "image/jpeg", "jpg": "image/jpeg",
                                 "webp": "image/webp", "m3u8": "application/vnd.apple.mpegurl",
                                 "mpd": "application/dash+xml", "m4s": "video/iso.segment", "vtt": "text/vtt"}

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "AllAccessDisabled", "AccountProblem", "InvalidToken", "ExpiredToken"})
RETRYABLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                             "InternalError", "ServiceUnavailable", "503", "500", "XMinioServerNotInitialized"})
NETWORK_ERRORS = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError,
                  IncompleteReadError, ResponseStreamingError, HTTPClientError,
                  RetriesExceededError)  # s3transfer gave up after its own retries of a streaming error


def make_client(env: Mapping[str, str] | None = None) -> S3Client:
    env = os.environ if env is None else env
    config = Config(
        s3={"addressing_style": "path"},  # MinIO and most S3-compatible servers have no virtual-host DNS
        # Standard mode retries throttling, 5xx and connection errors with backoff; AWS_MAX_ATTEMPTS still wins.
        retries={"mode": "standard", "total_max_attempts": int(env.get("AWS_MAX_ATTEMPTS") or 5)},
        connect_timeout=10,
        read_timeout=60,
    )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return boto3.client("s3", region_name=region, config=config)


def transfer_config(multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
                    chunk_size: int = DEFAULT_MULTIPART_THRESHOLD, max_concurrency: int = 8) -> TransferConfig:
    """Single PUT/GET below `multipart_threshold`, parallel parts of `chunk_size` above it."""
    return TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=chunk_size,
                          max_concurrency=max_concurrency, use_threads=True)


# ---- failure classification (pure) --------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: boto3 wraps ClientErrors (e.g. S3UploadFailedError) without `from`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _client_error_parts(exc: ClientError) -> tuple[str, int]:
    response: Mapping[str, Any] = exc.response
    error = response.get("Error") or {}
    meta = response.get("ResponseMetadata") or {}
    return str(error.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0)


def classify_s3_error(exc: BaseException, *, operation: Literal["download", "upload", "delete"],
                      uri: str) -> WorkerError:
    """Map a storage failure to a worker failure class.

    - input missing (404/NoSuchKey/NoSuchBucket on download) -> InputNotFound (permanent)
    - credentials missing or refused (403/AccessDenied/...)  -> StorageDenied (permanent, reason
      StorageAccessDenied; see errors.StorageDenied)
    - output bucket missing on upload                        -> Unsupported, reason OutputBucketNotFound
    - network errors, 5xx, throttling, timeouts              -> Transient
    - full scratch disk, other 4xx, anything else            -> Internal (counted against retryLimit)
    """
    for link in _chain(exc):
        if isinstance(link, WorkerError):
            return link
        if isinstance(link, ClientError):
            code, status = _client_error_parts(link)
            what = f"{operation} {uri}: {code or status}"
            if code in NOT_FOUND_CODES or status == 404:
                if operation == "download":
                    return InputNotFound(f"input {uri} does not exist ({code or status})")
                if code == "NoSuchBucket":
                    return Unsupported(f"the bucket of {uri} does not exist", reason=REASON_OUTPUT_BUCKET_NOT_FOUND)
                return Internal(f"unexpected not-found on {what}")
            if code in DENIED_CODES or status == 403:
                return StorageDenied(f"storage refused {what}; check the credentials Secret")
            if code in RETRYABLE_CODES or status >= 500 or status in (408, 429):
                return Transient(f"storage unavailable on {what}")
            return Internal(f"storage error on {what}")
        if isinstance(link, NoCredentialsError | PartialCredentialsError):
            return StorageDenied(f"no usable storage credentials for {uri}; check the credentials Secret")
        if isinstance(link, NETWORK_ERRORS):
            return Transient(f"storage unreachable on {operation} {uri}: {link}")
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return Internal(f"scratch volume full during {operation} of {uri}")
    if any(isinstance(link, BotoCoreError) for link in _chain(exc)):
        return Transient(f"storage error on {operation} {uri}: {exc}")
    return Internal(f"{operation} {uri} failed: {type(exc).__name__}: {exc}")


# ---- transfers ---------------------------------------------------------------------------------------


class ByteCounter(BaseSubscriber):
    """Counts transferred bytes (callbacks arrive on transfer threads) and, for downloads, hands s3transfer the
    size we already know so it skips its own HEAD request."""

    def __init__(self, size: int | None = None) -> None:
        self._size = size
        self._lock = threading.Lock()
        self.done = 0

    def on_queued(self, future: TransferFuture, **kwargs: Any) -> None:
        if self._size is not None:
            future.meta.provide_transfer_size(self._size)

    def on_progress(self, future: TransferFuture, bytes_transferred: int, **kwargs: Any) -> None:
        with self._lock:
            self.done += bytes_transferred


def wait_all(futures: Sequence[TransferFuture], tick: Callable[[], None], poll: float = POLL_SECONDS) -> None:
    """Wait for transfers while calling `tick` (progress reporting stays on this thread, and signals can
    interrupt the sleep). The first failure is raised at once; leaving the TransferManager's `with` block with
    it cancels the rest and aborts their multipart uploads."""
    pending = list(futures)
    while pending:
        for future in [f for f in pending if f.done()]:
            future.result()  # raises the transfer's exception
            pending.remove(future)
        if pending:
            tick()
            time.sleep(poll)


def head_size(client: S3Client, loc: S3Location) -> int:
    try:
        return int(client.head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])
    except Exception as exc:
        raise classify_s3_error(exc, operation="download", uri=loc.uri) from exc


def download(client: S3Client, loc: S3Location, dest: Path, counter: ByteCounter, config: TransferConfig,
             tick: Callable[[], None], subscribers: Sequence[BaseSubscriber] = ()) -> None:
    """Download one object; `subscribers` see the transfer too (test-only fault injection)."""
    try:
        with create_transfer_manager(client, config) as manager:
            future = manager.download(loc.bucket, loc.key, str(dest), subscribers=[counter, *subscribers])
            wait_all([future], tick)
    except WorkerError:
        raise
    except Exception as exc:
        raise classify_s3_error(exc, operation="download", uri=loc.uri) from exc


@dataclass(frozen=True)
class Upload:
    path: Path
    location: S3Location
    content_type: str


def upload_all(client: S3Client, uploads: Sequence[Upload], counter: ByteCounter, config: TransferConfig,
               tick: Callable[[], None], on_submitted: Callable[[S3Location], None],
               while_uploading: Callable[[], None] = lambda: None,
               subscribers: Sequence[BaseSubscriber] = ()) -> None:
    """Upload every file in parallel. `on_submitted` records each object before its transfer starts, so cleanup
    can remove it whatever happens next; `while_uploading` runs on this thread once all are submitted (the
    checksums are computed there, overlapping the network transfer). `subscribers` see every transfer too
    (test-only fault injection)."""
    current = uploads[0].location.uri if uploads else ""
    try:
        with create_transfer_manager(client, config) as manager:
            futures = []
            for item in uploads:
                current = item.location.uri
                on_submitted(item.location)
                futures.append(manager.upload(str(item.path), item.location.bucket, item.location.key,
                                              extra_args={"ContentType": item.content_type},
                                              subscribers=[counter, *subscribers]))
            current = ", ".join(u.location.uri for u in uploads)
            while_uploading()
            wait_all(futures, tick)
    except WorkerError:
        raise
    except Exception as exc:
        raise classify_s3_error(exc, operation="upload", uri=current) from exc


def delete_objects(client: S3Client, locations: Sequence[S3Location]) -> list[str]:
    """Best-effort delete (cleanup of partial outputs); returns the errors instead of raising."""
    errors = []
    for loc in locations:
        try:
            client.delete_object(Bucket=loc.bucket, Key=loc.key)
        except Exception as exc:  # cleanup must go on with the other objects
            errors.append(f"{loc.uri}: {classify_s3_error(exc, operation='delete', uri=loc.uri).message}")
    return errors


def stale_upload_matches(key: str, target: S3Location) -> bool:
    """Whether an in-progress upload's key belongs to `target`: a prefix target (key ending in '/') owns every
    key under it, a file target only its exact key (never e.g. `web.mp4.bak` next to `web.mp4`)."""
    return key.startswith(target.key) if target.key.endswith("/") else key == target.key


def stale_upload_targets(outputs: Sequence[S3Location], files: Sequence[tuple[S3Location, int]],
                         min_size: int) -> list[S3Location]:
    """Where to look for an earlier attempt's incomplete multipart uploads: each output's key (file) or prefix,
    plus, under prefix outputs, the exact key of each file (with its size) of at least `min_size` bytes. MinIO
    lists multipart uploads only for an exact object name, never by prefix, and only files near the multipart
    threshold can have had one; an earlier attempt of the same spec wrote the same names."""
    targets = list(dict.fromkeys(outputs))
    prefixes = [t for t in targets if t.key.endswith("/")]
    for loc, size in files:
        if size >= min_size and any(loc.bucket == p.bucket and stale_upload_matches(loc.key, p) for p in prefixes):
            targets.append(loc)
    return list(dict.fromkeys(targets))


def abort_stale_uploads(client: S3Client, targets: Sequence[S3Location]) -> int:
    """Abort the incomplete multipart uploads under each target (see stale_upload_matches); returns how many were
    aborted. Run before this attempt uploads anything, so every match is a leftover of a killed earlier attempt.
    Best-effort: a refused listing (not every policy grants s3:ListBucketMultipartUploads) or a failed abort is
    logged and never fails the transcode."""
    aborted = 0
    seen: set[tuple[str, str]] = set()  # a file target may also lie under a prefix target
    for target in targets:
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket, Prefix=target.key)
            for page in pages:
                for upload in page.get("Uploads", []):
                    key, upload_id = upload.get("Key"), upload.get("UploadId")
                    if not key or not upload_id or (key, upload_id) in seen or not stale_upload_matches(key, target):
                        continue
                    seen.add((key, upload_id))
                    try:
                        client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
                    except ClientError as exc:
                        if _client_error_parts(exc)[0] != "NoSuchUpload":  # gone meanwhile: nothing to do
                            raise
                        continue
                    aborted += 1
        except Exception as exc:
            # A signal's Terminated (possibly wrapped by botocore) must still stop the attempt: it is raised once.
            signalled = next((link for link in _chain(exc) if isinstance(link, WorkerError)), None)
            if signalled is exc:
                raise
            if signalled is not None:
                raise signalled from exc
            log.warning("cannot abort stale multipart uploads", extra={"fields": {
                "uri": target.uri, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}})
    return aborted


def sha256_file(path: Path, chunk_size: int = MiB) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
