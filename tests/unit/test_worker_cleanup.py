"""`transkube-worker cleanup`: what it selects for deletion/abort (pure), its configuration and its exit contract.
The S3 I/O itself runs against a real MinIO in the integration tests; nothing here mocks S3."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from transkube_api.constants import ExitCode
from transkube_api.models import TranscodeJobSpec
from transkube_worker.cleanup import (
    CleanupConfig,
    CleanupResult,
    batches,
    cleanup_targets,
    objects_to_delete,
    parse_since,
    protected_objects,
    run_cleanup,
    uploads_to_abort,
)
from transkube_worker.errors import Internal
from transkube_worker.main import main
from transkube_worker.storage import S3Location

UTC = dt.UTC
SINCE = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BEFORE = SINCE - dt.timedelta(seconds=1)
AFTER = SINCE + dt.timedelta(minutes=5)

INPUT = S3Location("out-bucket", "hls/in.mp4")
FILE = S3Location("out-bucket", "web.mp4")
PREFIX = S3Location("out-bucket", "hls/")

SPEC = {"input": {"uri": "s3://in-bucket/videos/in.mp4"},
        "outputs": [{"name": "web", "uri": "s3://out-bucket/web.mp4", "container": "mp4",
                     "filters": {"watermark": {"uri": "s3://out-bucket/thumbs/logo.png"}}},
                    {"name": "hls", "type": "hls", "uri": "s3://out-bucket/hls/"},
                    {"name": "thumbs", "type": "thumbnails", "uri": "s3://out-bucket/thumbs/",
                     "thumbnails": {"intervalSeconds": 10}}]}


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TRANSKUBE_JOB_NAMESPACE": "ns", "TRANSKUBE_JOB_NAME": "job", "TRANSKUBE_SPEC": json.dumps(SPEC),
            "TRANSKUBE_CLEANUP_SINCE": "2024-05-01T12:00:00Z",
            "TRANSKUBE_TERMINATION_LOG": str(tmp_path / "termination-log"), **extra}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """run_cleanup() installs JSON logging; later tests must not inherit it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# ---- selection -------------------------------------------------------------------------------------------


def test_a_file_output_deletes_only_its_own_key_written_since() -> None:
    listing = [{"Key": "web.mp4", "LastModified": AFTER}, {"Key": "web.mp4.bak", "LastModified": AFTER},
               {"Key": "other.mp4", "LastModified": AFTER}]
    assert objects_to_delete(listing, FILE, SINCE) == ["web.mp4"]
    assert objects_to_delete([{"Key": "web.mp4", "LastModified": BEFORE}], FILE, SINCE) == []
    assert objects_to_delete([{"Key": "web.mp4", "LastModified": SINCE}], FILE, SINCE) == ["web.mp4"]  # inclusive


def test_a_prefix_output_deletes_what_was_written_under_it_since() -> None:
    listing = [{"Key": "hls/master.m3u8", "LastModified": AFTER},
               {"Key": "hls/seg/0001.m4s", "LastModified": AFTER},
               {"Key": "hls/old.m3u8", "LastModified": BEFORE},  # an earlier job's: never deleted
               {"Key": "hlsx/a.m4s", "LastModified": AFTER},  # a sibling prefix is not under hls/
               {"Key": "hls/master.m3u8", "LastModified": AFTER}]  # listed twice: deleted once
    assert objects_to_delete(listing, PREFIX, SINCE) == ["hls/master.m3u8", "hls/seg/0001.m4s"]


def test_protected_objects_and_undatable_entries_are_never_deleted() -> None:
    listing = [{"Key": "hls/in.mp4", "LastModified": AFTER}, {"Key": "hls/a.ts"},
               {"Key": "hls/b.ts", "LastModified": "2024-05-02T00:00:00Z"},  # not a datetime
               {"Key": "hls/c.ts", "LastModified": dt.datetime(2030, 1, 1)},  # no zone
               {"LastModified": AFTER}, {"Key": "", "LastModified": AFTER}, {"Key": "hls/d.ts", "LastModified": AFTER}]
    assert objects_to_delete(listing, PREFIX, SINCE, {INPUT}) == ["hls/d.ts"]
    # Protection is per bucket: the same key in another bucket is not the input.
    other = S3Location("in-bucket", "hls/in.mp4")
    assert objects_to_delete([{"Key": "hls/in.mp4", "LastModified": AFTER}], PREFIX, SINCE, {other}) == ["hls/in.mp4"]


def test_times_compare_across_offsets() -> None:
    later_elsewhere = dt.datetime(2024, 5, 1, 14, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 12:00:01Z
    assert objects_to_delete([{"Key": "web.mp4", "LastModified": later_elsewhere}], FILE, SINCE) == ["web.mp4"]


def test_uploads_to_abort_are_the_targets_own_and_recent() -> None:
    listing = [{"Key": "web.mp4", "UploadId": "u1", "Initiated": AFTER},
               {"Key": "web.mp4", "UploadId": "u0", "Initiated": BEFORE},  # somebody else's, maybe still going
               {"Key": "web.mp4", "UploadId": "u2", "Initiated": AFTER},
               {"Key": "web.mp4.part", "UploadId": "u3", "Initiated": AFTER},
               {"Key": "web.mp4", "Initiated": AFTER}, {"Key": "web.mp4", "UploadId": "", "Initiated": AFTER},
               {"Key": "web.mp4", "UploadId": "u1", "Initiated": AFTER}]
    assert uploads_to_abort(listing, FILE, SINCE) == [("web.mp4", "u1"), ("web.mp4", "u2")]
    under = [{"Key": "hls/stream_720p.mp4", "UploadId": "a", "Initiated": AFTER},
             {"Key": "hls/in.mp4", "UploadId": "b", "Initiated": AFTER}]
    assert uploads_to_abort(under, PREFIX, SINCE, {INPUT}) == [("hls/stream_720p.mp4", "a")]


def test_batches_fit_delete_objects() -> None:
    keys = [f"k{i}" for i in range(2501)]
    chunks = batches(keys)
    assert [len(c) for c in chunks] == [1000, 1000, 501] and [k for c in chunks for k in c] == keys
    assert batches([]) == []


def test_targets_and_protected_objects_come_from_the_spec() -> None:
    spec = TranscodeJobSpec.model_validate(SPEC)
    assert cleanup_targets(spec) == [FILE, PREFIX, S3Location("out-bucket", "thumbs/")]
    assert protected_objects(spec) == {S3Location("in-bucket", "videos/in.mp4"),
                                       S3Location("out-bucket", "thumbs/logo.png")}


def test_result_message() -> None:
    doc = json.loads((CleanupResult(1, 2) + CleanupResult(0, 3)).message())
    assert doc == {"reason": "Cleaned", "message": "aborted 1 multipart upload(s), deleted 5 object(s)",
                   "aborted": 1, "deleted": 5}


# ---- configuration and exit contract ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("2024-05-01T12:00:00Z", SINCE),
    ("2024-05-01t12:00:00z", SINCE),
    ("2024-05-01T14:00:00+02:00", SINCE),
    ("2024-05-01T12:00:00.250Z", SINCE + dt.timedelta(milliseconds=250)),
])
def test_parse_since(raw: str, expected: dt.datetime) -> None:
    assert parse_since(raw) == expected


@pytest.mark.parametrize("raw", ["", "yesterday", "2024-05-01T12:00:00", "1714564800"])
def test_parse_since_rejects(raw: str) -> None:
    with pytest.raises(Internal, match="TRANSKUBE_CLEANUP_SINCE"):
        parse_since(raw)


def test_config_from_env(tmp_path: Path) -> None:
    cfg = CleanupConfig.from_env(base_env(tmp_path))
    assert (cfg.namespace, cfg.name, cfg.since) == ("ns", "job", SINCE)
    assert cfg.termination_log == tmp_path / "termination-log" and len(cfg.spec.outputs) == 3


@pytest.mark.parametrize(("change", "code", "reason"), [
    ({"TRANSKUBE_CLEANUP_SINCE": ""}, ExitCode.INTERNAL, "InternalError"),
    ({"TRANSKUBE_SPEC": '{"outputs": []}'}, ExitCode.UNSUPPORTED, "Unsupported"),
])
def test_bad_configuration_fails_with_a_termination_message(tmp_path: Path, change: dict[str, str], code: int,
                                                            reason: str) -> None:
    assert run_cleanup(base_env(tmp_path, **change)) == code
    assert json.loads((tmp_path / "termination-log").read_text())["reason"] == reason


def test_unreachable_storage_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for name, value in base_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["cleanup"]) == ExitCode.TRANSIENT  # through the subcommand, as the Job runs it
    doc = json.loads((tmp_path / "termination-log").read_text())
    assert doc["reason"] == "TransientError" and "s3://out-bucket/web.mp4" in doc["message"]
    assert capsys.readouterr().out == ""  # stdout carries only the success summary
