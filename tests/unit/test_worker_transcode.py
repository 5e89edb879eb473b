"""Running ffmpeg: failure classification (pure), the bounded stderr tail, stopping, and real short runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transkube_api.constants import ExitCode
from transkube_worker.errors import Terminated, WorkerError
from transkube_worker.progress import ProgressSample
from transkube_worker.transcode import (
    TailBuffer,
    classify_ffmpeg_failure,
    ffmpeg_env,
    run_ffmpeg,
    stop_process,
    tail_lines,
)


@pytest.mark.parametrize(("stderr", "code"), [
    ("Unknown encoder 'av1_nvenc'\n", ExitCode.UNSUPPORTED),
    ("[mov @ 0x1] Could not find tag for codec vp8 in stream #0, codec not currently supported in container\n"
     "Could not write header for output file #0 (incorrect codec parameters ?): Invalid argument\n",
     ExitCode.UNSUPPORTED),
    ("[libopus @ 0x1] Specified sample rate 44100 is not supported\n", ExitCode.UNSUPPORTED),
    ("[h264_nvenc @ 0x1] Cannot load libnvidia-encode.so.1\nError while opening encoder for output stream #0:0\n",
     ExitCode.TRANSIENT),
    ("[hevc_nvenc @ 0x1] OpenEncodeSessionEx failed: out of memory (10)\n", ExitCode.TRANSIENT),
    ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found\nfile:in: Invalid data found when processing input\n",
     ExitCode.INVALID_INPUT),
    ("[h264 @ 0x1] error while decoding MB 10 4, bytestream -5\nError while decoding stream #0:0: "
     "Invalid data found when processing input\n", ExitCode.INVALID_INPUT),
    ("av_interleaved_write_frame(): No space left on device\n", ExitCode.INTERNAL),
    ("something nobody expected\n", ExitCode.INTERNAL),
    ("", ExitCode.INTERNAL),
])
def test_classify_ffmpeg_failure(stderr: str, code: int) -> None:
    assert classify_ffmpeg_failure(1, stderr).exit_code == code


def test_killed_ffmpeg_is_internal_and_says_why() -> None:
    err = classify_ffmpeg_failure(-9, "")
    assert err.exit_code == ExitCode.INTERNAL and "SIGKILL" in err.message
    assert "signal 77" in classify_ffmpeg_failure(-77, "").message


def test_failure_message_carries_the_stderr_tail() -> None:
    stderr = "".join(f"noise line {i}\n" for i in range(500)) + "Unknown encoder 'libfoo'\n"
    err = classify_ffmpeg_failure(1, stderr)
    assert err.message.endswith("Unknown encoder 'libfoo'")
    assert len(err.message) < 700 and "noise line 0 " not in err.message


def test_tail_lines() -> None:
    assert tail_lines("a\n\n  b  \nc\n") == "a | b | c"
    assert tail_lines("[h264 @ 0x55d0c0ffee00] error while decoding MB 1 2") == "[h264] error while decoding MB 1 2"
    assert tail_lines("x" * 2000, limit=100) == "x" * 100
    assert tail_lines("") == ""


def test_tail_buffer_is_bounded_and_keeps_the_end() -> None:
    buf = TailBuffer(limit=100)
    for i in range(1000):
        buf.append(f"line {i}\n")
    text = buf.text()
    assert len(text) <= 100 and text.endswith("line 999\n")


def test_ffmpeg_env_drops_credentials_and_quiets_svt() -> None:
    env = ffmpeg_env({"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "k"})
    assert env == {"PATH": "/bin", "SVT_LOG": "2"}
    assert ffmpeg_env({"SVT_LOG": "4"})["SVT_LOG"] == "4"


def test_stop_process_escalates_to_kill() -> None:
    # A child that ignores SIGTERM must still be gone after the grace period.
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                             "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    started = time.monotonic()
    stop_process(proc, grace=0.3)
    assert proc.returncode == -9 and time.monotonic() - started < 5
    proc.stdout.close()


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def lavfi_argv(out: Path, seconds: float) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=25:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-f", "matroska", f"file:{out}"]


@needs_ffmpeg
def test_run_ffmpeg_streams_progress(tmp_path: Path) -> None:
    samples: list[ProgressSample] = []
    run_ffmpeg(lavfi_argv(tmp_path / "o.mkv", 1), samples.append)
    assert samples and samples[-1].end and samples[-1].frame == 25
    assert (tmp_path / "o.mkv").stat().st_size > 0


@needs_ffmpeg
def test_run_ffmpeg_classifies_failures(tmp_path: Path) -> None:
    argv = lavfi_argv(tmp_path / "o.mkv", 1)
    argv[argv.index("libx264")] = "libdoesnotexist"
    with pytest.raises(WorkerError) as info:
        run_ffmpeg(argv, lambda s: None)
    assert info.value.exit_code == ExitCode.UNSUPPORTED and "libdoesnotexist" in info.value.message

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 4000)  # an MP4 header, then garbage
    with pytest.raises(WorkerError) as info:
        run_ffmpeg(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", f"file:{junk}", "-f", "null", "-"],
                   lambda s: None)
    assert info.value.exit_code == ExitCode.INVALID_INPUT


@needs_ffmpeg
def test_an_exception_in_the_callback_stops_ffmpeg(tmp_path: Path) -> None:
    # What happens on SIGTERM (Terminated raised mid-read) or JobGone from the status writer.
    def explode(sample: ProgressSample) -> None:
        raise Terminated("stopped by SIGTERM")

    started = time.monotonic()
    with pytest.raises(Terminated):
        run_ffmpeg(lavfi_argv(tmp_path / "o.mkv", 600), explode)  # would take minutes if not stopped
    assert time.monotonic() - started < 10
