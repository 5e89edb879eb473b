"""The worker's entry point, configuration, termination messages and signal handling (no cluster, no S3)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import REASON_BY_EXIT_CODE, ExitCode
from transkube_api.models import InputFacts, Progress, TranscodeJobSpec
from transkube_worker import __version__
from transkube_worker.config import WorkerConfig
from transkube_worker.errors import (
    InputNotFound,
    Internal,
    InvalidInput,
    JobGone,
    StorageDenied,
    Terminated,
    Transient,
    Unsupported,
    termination_message,
)
from transkube_worker.ffmpeg_args import output_paths
from transkube_worker.main import main, run, transcode_step
from transkube_worker.progress import ProgressReporter
from transkube_worker.signals import SignalGuard

SPEC = {"input": {"uri": "s3://in-bucket/videos/in.mp4"},
        "outputs": [{"name": "web", "uri": "s3://out-bucket/web.mp4", "container": "mp4",
                     "video": {"codec": "h264", "crf": 30, "preset": "ultrafast", "height": 120}}]}


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"TRANSKUBE_JOB_NAMESPACE": "ns", "TRANSKUBE_JOB_NAME": "job", "TRANSKUBE_SPEC": json.dumps(SPEC),
            "TRANSKUBE_SCRATCH_DIR": str(tmp_path / "scratch"),
            "TRANSKUBE_TERMINATION_LOG": str(tmp_path / "termination-log"), **extra}


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """run() installs signal handlers and JSON logging; later tests must not inherit them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    root.handlers[:] = handlers
    root.setLevel(level)


# ---- errors ----------------------------------------------------------------------------------------------


def test_error_classes_map_to_exit_codes_and_reasons() -> None:
    cases = [(InvalidInput, 10, "InvalidInput"), (InputNotFound, 11, "InputNotFound"),
             (Unsupported, 12, "Unsupported"), (Transient, 20, "TransientError"), (Internal, 30, "InternalError"),
             (Terminated, 20, "Terminated"), (JobGone, 20, "TranscodeJobDeleted"),
             (StorageDenied, 12, "StorageAccessDenied")]
    for cls, code, reason in cases:
        err = cls("m")
        assert (err.exit_code, err.reason) == (code, reason)
    for code, reason in REASON_BY_EXIT_CODE.items():
        assert code != ExitCode.OK and reason
    assert Unsupported("m", reason="OutputBucketNotFound").reason == "OutputBucketNotFound"


def test_termination_message_is_bounded_json_keeping_the_tail() -> None:
    assert json.loads(termination_message("InvalidInput", "short")) == {"reason": "InvalidInput", "message": "short"}
    long = "head " + "x" * 5000 + " the actual error"
    text = termination_message("InternalError", long)
    assert len(text.encode()) <= 1024
    doc = json.loads(text)
    assert doc["reason"] == "InternalError" and doc["message"].endswith("the actual error")
    assert doc["message"].startswith("…")
    wide = "é" * 3000  # multi-byte characters: the limit is in bytes
    assert len(termination_message("R", wide).encode()) <= 1024


# ---- config ----------------------------------------------------------------------------------------------


def test_config_from_env(tmp_path: Path) -> None:
    cfg = WorkerConfig.from_env(base_env(tmp_path, TRANSKUBE_ACCELERATOR="nvidia", TRANSKUBE_PROGRESS_INTERVAL="0.5"))
    assert (cfg.namespace, cfg.name, cfg.accelerator, cfg.progress_interval) == ("ns", "job", "nvidia", 0.5)
    assert cfg.spec == TranscodeJobSpec.model_validate(SPEC)
    assert cfg.status_writes and cfg.scratch_dir == tmp_path / "scratch"


def test_config_defaults() -> None:
    cfg = WorkerConfig.from_env({"TRANSKUBE_SPEC": json.dumps(SPEC), "TRANSKUBE_STATUS_WRITES": "false",
                                 "TMPDIR": "/var/tmp"})
    assert cfg.accelerator == "cpu" and cfg.progress_interval == 2.0 and not cfg.status_writes
    assert cfg.scratch_dir == Path("/var/tmp") and cfg.termination_log == Path("/dev/termination-log")
    assert WorkerConfig.from_env({"TRANSKUBE_SPEC": json.dumps(SPEC), "TRANSKUBE_STATUS_WRITES": "false"}
                                 ).scratch_dir == Path("/tmp")


def test_config_accepts_the_operators_wire_form() -> None:
    # The operator sends model_dump_json(by_alias=True, exclude_none=True): camelCase.
    spec = TranscodeJobSpec.model_validate({**SPEC, "retryLimit": 1, "accelerator": {"type": "nvidia",
                                                                                      "fallbackAfterSeconds": 60}})
    wire = spec.model_dump_json(by_alias=True, exclude_none=True)
    cfg = WorkerConfig.from_env({"TRANSKUBE_SPEC": wire, "TRANSKUBE_STATUS_WRITES": "false"})
    assert cfg.spec == spec


@pytest.mark.parametrize(("change", "code"), [
    ({"TRANSKUBE_SPEC": '{"input": {}}'}, ExitCode.UNSUPPORTED),
    ({"TRANSKUBE_SPEC": json.dumps({**SPEC, "newField": 1})}, ExitCode.UNSUPPORTED),
    ({"TRANSKUBE_SPEC": ""}, ExitCode.INTERNAL),
    ({"TRANSKUBE_ACCELERATOR": "tpu"}, ExitCode.INTERNAL),
    ({"TRANSKUBE_PROGRESS_INTERVAL": "soon"}, ExitCode.INTERNAL),
    ({"TRANSKUBE_PROGRESS_INTERVAL": "-1"}, ExitCode.INTERNAL),
    ({"TRANSKUBE_STATUS_WRITES": "maybe"}, ExitCode.INTERNAL),
    ({"TRANSKUBE_JOB_NAME": ""}, ExitCode.INTERNAL),
])
def test_config_errors(tmp_path: Path, change: dict[str, str], code: int) -> None:
    with pytest.raises(Exception) as info:
        WorkerConfig.from_env(base_env(tmp_path, **change))
    assert getattr(info.value, "exit_code", None) == code


# ---- entry point -----------------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out


def test_without_a_command_prints_help() -> None:
    assert main([]) == 2


def test_bad_spec_fails_permanently_with_a_termination_message(tmp_path: Path) -> None:
    env = base_env(tmp_path, TRANSKUBE_SPEC='{"outputs": []}')
    assert run(env) == ExitCode.UNSUPPORTED
    doc = json.loads((tmp_path / "termination-log").read_text())
    assert doc["reason"] == "Unsupported" and "TRANSKUBE_SPEC" in doc["message"]


def test_unreachable_storage_is_transient_and_scratch_is_removed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    env = base_env(tmp_path, TRANSKUBE_STATUS_WRITES="false")
    assert run(env) == ExitCode.TRANSIENT
    doc = json.loads((tmp_path / "termination-log").read_text())
    assert doc["reason"] == "TransientError" and "s3://in-bucket/videos/in.mp4" in doc["message"]
    assert list((tmp_path / "scratch").iterdir()) == []


# ---- signals ---------------------------------------------------------------------------------------------


def test_first_signal_raises_inside_armed_block_only() -> None:
    guard = SignalGuard()
    guard.install()
    with pytest.raises(Terminated, match="SIGTERM"), guard.armed():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs (and raises) right after kill returns
    os.kill(os.getpid(), signal.SIGINT)  # a second signal, outside: only recorded
    assert guard.received == "SIGTERM"


def test_signal_before_arming_raises_on_entry() -> None:
    guard = SignalGuard()
    guard.install()
    os.kill(os.getpid(), signal.SIGINT)
    assert guard.received == "SIGINT"
    with pytest.raises(Terminated, match="SIGINT"), guard.armed():
        pass


# ---- the transcode step (also what the benchmark runs) -----------------------------------------------------


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_transcode_step_on_local_files(tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25", "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
                   check=True)
    spec = TranscodeJobSpec.model_validate(SPEC)
    written: list[Progress] = []
    reporter = ProgressReporter(written.append, min_interval=0.0)
    outputs = output_paths(spec, tmp_path)
    facts = InputFacts(duration_seconds=2.0, width=160, height=120, video_codec="h264")
    argv: list[Any] = transcode_step(spec, clip, outputs, facts, "cpu", reporter)
    assert argv[0] == "ffmpeg" and outputs["web"].stat().st_size > 0
    assert written[0].stage == "Transcoding" and written[0].percent == 5.0
    assert written[-1].percent == 95.0
