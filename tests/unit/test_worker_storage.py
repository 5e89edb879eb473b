"""The pure parts of storage: failure classification (constructed botocore errors), checksums."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import Any

import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.exceptions import RetriesExceededError
from transkube_api.constants import ExitCode
from transkube_worker.errors import Terminated
from transkube_worker.storage import (
    S3Location,
    abort_stale_uploads,
    classify_s3_error,
    make_client,
    sha256_file,
    stale_upload_matches,
    stale_upload_targets,
    transfer_config,
)


def client_error(code: str, status: int, operation: str = "GetObject") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)


def _class(exc: BaseException, operation: str = "download") -> tuple[int, str]:
    err = classify_s3_error(exc, operation=operation, uri="s3://b/k")  # type: ignore[arg-type]
    return err.exit_code, err.reason


@pytest.mark.parametrize("exc", [client_error("NoSuchKey", 404), client_error("404", 404, "HeadObject"),
                                 client_error("NoSuchBucket", 404), client_error("", 404)])
def test_missing_input_is_input_not_found(exc: ClientError) -> None:
    assert _class(exc) == (ExitCode.INPUT_NOT_FOUND, "InputNotFound")


@pytest.mark.parametrize("exc", [client_error("AccessDenied", 403), client_error("403", 403, "HeadObject"),
                                 client_error("InvalidAccessKeyId", 403), client_error("SignatureDoesNotMatch", 403),
                                 NoCredentialsError()])
@pytest.mark.parametrize("operation", ["download", "upload"])
def test_denied_is_permanent_storage_access_denied(exc: BaseException, operation: str) -> None:
    assert _class(exc, operation) == (ExitCode.UNSUPPORTED, "StorageAccessDenied")
    assert ExitCode.UNSUPPORTED in ExitCode.PERMANENT


@pytest.mark.parametrize("exc", [
    client_error("SlowDown", 503), client_error("InternalError", 500), client_error("ServiceUnavailable", 503),
    client_error("RequestTimeout", 400), client_error("", 502), client_error("Whatever", 429),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ConnectTimeoutError(endpoint_url="http://x"), ReadTimeoutError(endpoint_url="http://x"),
    RetriesExceededError(last_exception=ValueError("stream")),
])
@pytest.mark.parametrize("operation", ["download", "upload"])
def test_network_5xx_throttling_are_transient(exc: BaseException, operation: str) -> None:
    assert _class(exc, operation) == (ExitCode.TRANSIENT, "TransientError")


def test_output_bucket_missing_is_permanent() -> None:
    assert _class(client_error("NoSuchBucket", 404, "PutObject"), "upload") == (ExitCode.UNSUPPORTED,
                                                                                 "OutputBucketNotFound")


def test_other_errors_are_internal() -> None:
    assert _class(client_error("InvalidArgument", 400)) == (ExitCode.INTERNAL, "InternalError")
    assert _class(ValueError("boom")) == (ExitCode.INTERNAL, "InternalError")
    full = OSError(errno.ENOSPC, "No space left on device")
    assert _class(full) == (ExitCode.INTERNAL, "InternalError")
    assert "full" in classify_s3_error(full, operation="download", uri="s3://b/k").message


def test_wrapped_client_errors_are_found_through_the_exception_chain() -> None:
    # boto3's upload wrapper raises S3UploadFailedError inside `except ClientError` (implicit __context__).
    try:
        try:
            raise client_error("AccessDenied", 403, "PutObject")
        except ClientError as inner:
            raise S3UploadFailedError(f"Failed to upload: {inner}")  # noqa: B904 - what boto3 itself does
    except S3UploadFailedError as outer:
        assert _class(outer, "upload") == (ExitCode.UNSUPPORTED, "StorageAccessDenied")


def test_a_signal_during_a_transfer_stays_terminated() -> None:
    err = Terminated("stopped by SIGTERM")
    assert classify_s3_error(err, operation="upload", uri="s3://b/k") is err


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = b"x" * (3 * 1024 * 1024 + 5)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1024 * 1024) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_transfer_config_thresholds() -> None:
    config = transfer_config()
    assert config.multipart_threshold == 16 * 1024 * 1024
    assert transfer_config(multipart_threshold=5 * 1024 * 1024).multipart_threshold == 5 * 1024 * 1024


def test_client_uses_path_style_and_env_region() -> None:
    client = make_client({"AWS_REGION": "eu-west-3", "AWS_MAX_ATTEMPTS": "2"})
    assert client.meta.region_name == "eu-west-3"
    config: Any = client.meta.config
    assert config.s3 == {"addressing_style": "path"}
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}


# ---- stale multipart uploads of earlier attempts ----------------------------------------------------------


def test_stale_upload_matches_exact_key_or_prefix() -> None:
    file_target = S3Location("b", "out/web.mp4")
    assert stale_upload_matches("out/web.mp4", file_target)
    assert not stale_upload_matches("out/web.mp4.bak", file_target)  # what a Prefix=out/web.mp4 listing returns too
    assert not stale_upload_matches("out/web", file_target)
    prefix_target = S3Location("b", "out/hls/")
    assert stale_upload_matches("out/hls/seg_0.m4s", prefix_target)
    assert stale_upload_matches("out/hls/v/deep.m4s", prefix_target)
    assert not stale_upload_matches("out/hls-old/seg_0.m4s", prefix_target)
    assert not stale_upload_matches("out/hls", prefix_target)


def test_stale_upload_targets_add_large_files_under_prefixes() -> None:
    mib = 1024 * 1024
    outputs = [S3Location("b", "web.mp4"), S3Location("b", "hls/"), S3Location("b", "web.mp4")]
    files = [(S3Location("b", "web.mp4"), 100 * mib),  # a file output: already its own target
             (S3Location("b", "hls/master.m3u8"), 1000),  # too small to have gone multipart
             (S3Location("b", "hls/seg_1.m4s"), 20 * mib),
             (S3Location("other", "hls/seg_2.m4s"), 20 * mib)]  # another bucket: not under the prefix
    assert stale_upload_targets(outputs, files, 8 * mib) == [
        S3Location("b", "web.mp4"), S3Location("b", "hls/"), S3Location("b", "hls/seg_1.m4s")]
    assert stale_upload_targets([], files, 0) == []


def test_abort_stale_uploads_never_fails_the_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    client = make_client({"AWS_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"})
    assert abort_stale_uploads(client, [S3Location("bucket", "web.mp4"), S3Location("bucket", "hls/")]) == 0
