"""`transkube-worker cleanup`: remove what a killed attempt left behind.

The operator runs this as a short Job after a TranscodeJob ended Failed or Cancelled while its last attempt died
without the worker's own cleanup (SIGKILL, OOM, a lost node). For every output it aborts the incomplete multipart
uploads and deletes the objects written since the job began; nothing else is ever touched.

Environment (as for `run`, plus one):
- TRANSKUBE_SPEC: the resolved spec as JSON; TRANSKUBE_JOB_NAMESPACE/NAME: only to tag the log lines.
- AWS_* / AWS_ENDPOINT_URL_S3: the storage credentials and endpoint (storage.make_client).
- TRANSKUBE_CLEANUP_SINCE: RFC 3339 time the job began. Objects (and uploads) older than that were not written by
  this job and are never deleted (or aborted).
- TRANSKUBE_TERMINATION_LOG: optional, the termination message's path (default /dev/termination-log).

Outcome: exit 0 with {"reason": "Cleaned", "message", "aborted", "deleted"} as termination message and on stdout;
on a storage failure the failure class's reason and exit code (TransientError/20 for network trouble, 5xx and
throttling, so the Job retries; StorageAccessDenied/12 when the credentials are refused). A missing bucket or
object is nothing to clean, not an error. Every step is idempotent, so a retried Job simply finishes the work.

The selection (`objects_to_delete`, `uploads_to_abort`) is pure; the rest is the S3 I/O around it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from transkube_api.constants import ExitCode
from transkube_api.models import TranscodeJobSpec

from .config import spec_from_env, termination_log_from_env
from .errors import Internal, WorkerError, termination_message
from .logs import configure_logging
from .storage import S3Location, classify_s3_error, make_client, parse_s3_uri, stale_upload_matches

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

CLEANUP_SINCE_ENV = "TRANSKUBE_CLEANUP_SINCE"
REASON_CLEANED = "Cleaned"
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request

MISSING_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "404"})
# Not every policy grants s3:ListBucketMultipartUploads (nor does every S3-compatible store implement it): the
# objects still get deleted, and the run path tolerates the same refusal.
LISTING_REFUSED_CODES = frozenset({"AccessDenied", "403", "NotImplemented", "501"})


@dataclass(frozen=True)
class CleanupConfig:
    namespace: str
    name: str
    spec: TranscodeJobSpec
    since: dt.datetime
    termination_log: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CleanupConfig:
        """Raises Internal for a malformed environment (an operator bug), Unsupported for an unreadable spec."""
        return cls(namespace=env.get("TRANSKUBE_JOB_NAMESPACE", ""), name=env.get("TRANSKUBE_JOB_NAME", ""),
                   spec=spec_from_env(env), since=parse_since(env.get(CLEANUP_SINCE_ENV, "")),
                   termination_log=termination_log_from_env(env))


@dataclass(frozen=True)
class CleanupResult:
    aborted: int = 0
    deleted: int = 0

    def __add__(self, other: CleanupResult) -> CleanupResult:
        return CleanupResult(self.aborted + other.aborted, self.deleted + other.deleted)

    def message(self) -> str:
        return json.dumps({"reason": REASON_CLEANED,
                           "message": f"aborted {self.aborted} multipart upload(s), deleted {self.deleted} object(s)",
                           "aborted": self.aborted, "deleted": self.deleted})


# ---- decisions (pure) ----------------------------------------------------------------------------------


def parse_since(raw: str) -> dt.datetime:
    """An RFC 3339 time with an offset (Kubernetes writes `2024-05-01T12:00:00Z`)."""
    try:
        since = dt.datetime.fromisoformat(raw.strip().upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        raise Internal(f"{CLEANUP_SINCE_ENV} is not an RFC 3339 time: {raw!r}") from None
    if since.tzinfo is None:  # comparing with S3's UTC times needs an offset; guessing one could delete too much
        raise Internal(f"{CLEANUP_SINCE_ENV} has no UTC offset: {raw!r}")
    return since


def cleanup_targets(spec: TranscodeJobSpec) -> list[S3Location]:
    """Each output's object key, or its prefix (a key ending in '/') for hls, dash, thumbnails and sprite."""
    return list(dict.fromkeys(parse_s3_uri(o.uri) for o in spec.outputs))


def protected_objects(spec: TranscodeJobSpec) -> frozenset[S3Location]:
    """Objects the job reads: the input and any watermark image. The API keeps the input out of every output,
    but not the watermarks, and a cleanup must never destroy a source."""
    uris = [spec.input.uri] + [o.filters.watermark.uri for o in spec.outputs if o.filters and o.filters.watermark]
    return frozenset(parse_s3_uri(u) for u in uris)


def _owned(key: object, target: S3Location, protected: Collection[S3Location]) -> bool:
    return (isinstance(key, str) and bool(key) and stale_upload_matches(key, target)
            and S3Location(target.bucket, key) not in protected)


def _written_since(when: object, since: dt.datetime) -> bool:
    # A missing or zone-less time cannot be compared safely: never delete what cannot be dated.
    return isinstance(when, dt.datetime) and when.tzinfo is not None and when >= since


def objects_to_delete(listing: Iterable[Mapping[str, object]], target: S3Location, since: dt.datetime,
                      protected: Collection[S3Location] = ()) -> list[str]:
    """The keys of `listing` (list_objects_v2 Contents entries, or a head_object made into one) to delete: the
    target's own key (or keys under its prefix), written at or after `since`, never a protected object."""
    keys = [entry.get("Key") for entry in listing
            if _owned(entry.get("Key"), target, protected) and _written_since(entry.get("LastModified"), since)]
    return list(dict.fromkeys(k for k in keys if isinstance(k, str)))


def uploads_to_abort(listing: Iterable[Mapping[str, object]], target: S3Location, since: dt.datetime,
                     protected: Collection[S3Location] = ()) -> list[tuple[str, str]]:
    """(key, upload id) of the list_multipart_uploads entries to abort: the target's, initiated since `since`
    (an older upload is somebody else's, possibly still in progress)."""
    chosen: list[tuple[str, str]] = []
    for entry in listing:
        key, upload_id = entry.get("Key"), entry.get("UploadId")
        if (isinstance(key, str) and isinstance(upload_id, str) and upload_id and _owned(key, target, protected)
                and _written_since(entry.get("Initiated"), since)):
            chosen.append((key, upload_id))
    return list(dict.fromkeys(chosen))


def batches(keys: Sequence[str], size: int = DELETE_BATCH) -> list[list[str]]:
    return [list(keys[i:i + size]) for i in range(0, len(keys), size)]


# ---- S3 I/O --------------------------------------------------------------------------------------------


def _error_code(exc: BaseException) -> tuple[str, int]:
    if not isinstance(exc, ClientError):
        return "", 0
    response: Mapping[str, Any] = exc.response
    return (str((response.get("Error") or {}).get("Code") or ""),
            int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0))


def _missing(exc: BaseException) -> bool:
    code, status = _error_code(exc)
    return code in MISSING_CODES or status == 404


def abort_uploads(client: S3Client, target: S3Location, since: dt.datetime,
                  protected: Collection[S3Location] = ()) -> int:
    """Abort the target's incomplete multipart uploads; returns how many. Listed with Prefix=the target's key:
    S3 matches it as a prefix; MinIO only for an exact object name, so on MinIO a prefix output's uploads are
    not found (there the bucket's lifecycle rule for incomplete uploads remains the safety net)."""
    listing: list[Mapping[str, object]] = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=target.bucket,
                                                                            Prefix=target.key):
            listing += page.get("Uploads", [])
    except ClientError as exc:
        if _missing(exc):
            return 0
        code, status = _error_code(exc)
        if code in LISTING_REFUSED_CODES or status in (403, 501):
            log.warning("cannot list multipart uploads: only objects are removed", extra={"fields": {
                "uri": target.uri, "error": code or status}})
            return 0
        raise
    aborted = 0
    for key, upload_id in uploads_to_abort(listing, target, since, protected):
        try:
            client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc)[0] == "NoSuchUpload" or _missing(exc):  # gone meanwhile: nothing to do
                continue
            raise
        aborted += 1
    return aborted


def _listing(client: S3Client, target: S3Location) -> list[Mapping[str, object]]:
    try:
        if not target.key.endswith("/"):
            head = client.head_object(Bucket=target.bucket, Key=target.key)
            return [{"Key": target.key, "LastModified": head.get("LastModified")}]
        entries: list[Mapping[str, object]] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket, Prefix=target.key):
            entries += page.get("Contents", [])
        return entries
    except ClientError as exc:
        if _missing(exc):
            return []
        raise


def delete_written(client: S3Client, target: S3Location, since: dt.datetime,
                   protected: Collection[S3Location] = ()) -> int:
    """Delete the target's objects written since `since`; returns how many."""
    deleted = 0
    for batch in batches(objects_to_delete(_listing(client, target), target, since, protected)):
        try:
            response = client.delete_objects(Bucket=target.bucket,
                                             Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        except ClientError as exc:
            if _missing(exc):
                return deleted
            raise
        errors = [e for e in response.get("Errors", []) if e.get("Code") not in MISSING_CODES]
        if errors:
            first = errors[0]
            # Raised as a ClientError so that it is classified like any other storage failure.
            raise ClientError({"Error": {"Code": first.get("Code", ""), "Message": first.get("Message", "")}},
                              "DeleteObjects")
        deleted += len(batch)
    return deleted


def clean(client: S3Client, spec: TranscodeJobSpec, since: dt.datetime) -> CleanupResult:
    """Abort, then delete, output by output. Raises the storage failure's WorkerError."""
    protected = protected_objects(spec)
    total = CleanupResult()
    for target in cleanup_targets(spec):
        try:
            # Uploads first: an in-progress upload's parts are invisible to the object listing.
            done = CleanupResult(abort_uploads(client, target, since, protected),
                                 delete_written(client, target, since, protected))
        except WorkerError:
            raise
        except Exception as exc:
            raise classify_s3_error(exc, operation="delete", uri=target.uri) from exc
        log.info("output cleaned", extra={"fields": {"uri": target.uri, "aborted": done.aborted,
                                                     "deleted": done.deleted}})
        total += done
    return total


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as exc:  # e.g. no /dev/termination-log outside a pod: the log line still has it
        log.warning("cannot write termination log", extra={"fields": {"path": str(path), "error": str(exc)}})


def run_cleanup(env: Mapping[str, str]) -> int:
    configure_logging(env.get("TRANSKUBE_JOB_NAMESPACE", ""), env.get("TRANSKUBE_JOB_NAME", ""))
    try:
        cfg = CleanupConfig.from_env(env)
    except WorkerError as exc:
        log.error("bad configuration", extra={"fields": {"reason": exc.reason, "error": exc.message}})
        _write(termination_log_from_env(env), termination_message(exc.reason, exc.message))
        return exc.exit_code
    log.info("cleaning up", extra={"fields": {"since": cfg.since.isoformat(),
                                              "targets": [t.uri for t in cleanup_targets(cfg.spec)]}})
    try:
        result = clean(make_client(env), cfg.spec, cfg.since)
    except Exception as exc:
        error = exc if isinstance(exc, WorkerError) else Internal(f"unexpected {type(exc).__name__}: {exc}")
        log.error("cleanup failed", exc_info=not isinstance(exc, WorkerError), extra={"fields": {
            "reason": error.reason, "exitCode": error.exit_code, "error": error.message}})
        _write(cfg.termination_log, termination_message(error.reason, error.message))
        return error.exit_code
    text = result.message()
    log.info("cleaned", extra={"fields": {"aborted": result.aborted, "deleted": result.deleted}})
    _write(cfg.termination_log, text)
    print(text, flush=True)
    return ExitCode.OK
