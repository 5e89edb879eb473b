"""The test-only fault injection hook (faults.py) and stopping a SIGSTOPped ffmpeg (transcode.stop_process)."""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from transkube_api.constants import GROUP, PLURAL, VERSION, ExitCode
from transkube_api.models import InputFacts, TranscodeJobSpec
from transkube_worker.errors import Terminated
from transkube_worker.faults import (
    ANNOTATION_FAULT,
    ANNOTATION_FAULT_ATTEMPTS,
    FAULT_INJECTION_ENV,
    SLOW_TRANSFER_PART,
    Fault,
    Stall,
    Throttle,
    UploadHold,
    fault_for,
    finished_attempts,
    lookup_fault,
    slow_transfer_config,
    throttle_delay,
)
from transkube_worker.ffmpeg_args import output_paths
from transkube_worker.main import transcode_step
from transkube_worker.progress import ProgressReporter
from transkube_worker.transcode import stop_process

ALLOWED = {FAULT_INJECTION_ENV: "allowed"}


def tj(annotations: dict[str, str] | None = None, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TranscodeJob",
                           "metadata": {"name": "job", "namespace": "ns"}, "spec": {}}
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    if history is not None:
        obj["status"] = {"attemptHistory": history}
    return obj


def attempt(n: int, *, finished: bool = True) -> dict[str, Any]:
    entry: dict[str, Any] = {"attempt": n, "pod": f"job-{n}", "startTime": "2025-01-01T00:00:00Z"}
    if finished:
        entry |= {"finishTime": "2025-01-01T00:01:00Z", "exitCode": 20}
    return entry


# ---- fault_for (pure) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["stall", "stall-upload", "exit-transient", "exit-internal"])
def test_fault_only_when_the_environment_allows_it(value: str) -> None:
    obj = tj({ANNOTATION_FAULT: value})
    assert fault_for(obj, ALLOWED) == Fault(value)
    assert fault_for(obj, {}) is None
    assert fault_for(obj, {FAULT_INJECTION_ENV: "true"}) is None  # only the exact value the operator sets


def test_no_annotation_no_fault() -> None:
    assert fault_for(tj(), ALLOWED) is None
    assert fault_for(tj({"other": "x"}), ALLOWED) is None
    assert fault_for({}, ALLOWED) is None


def test_unknown_fault_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transkube_worker"):
        assert fault_for(tj({ANNOTATION_FAULT: "explode"}), ALLOWED) is None
    assert any("unknown fault" in r.getMessage() for r in caplog.records)


def test_finished_attempts_counts_entries_with_a_finish_time() -> None:
    assert finished_attempts(tj()) == 0
    assert finished_attempts(tj(history=[])) == 0
    assert finished_attempts(tj(history=[attempt(1), attempt(2), attempt(3, finished=False)])) == 2
    assert finished_attempts(tj(history=[attempt(1), {"attempt": 2, "finishTime": None}])) == 1
    assert finished_attempts({"status": {"attemptHistory": "junk"}}) == 0
    assert finished_attempts({"status": {"attemptHistory": ["junk", attempt(1)]}}) == 1
    assert finished_attempts({"status": None}) == 0


@pytest.mark.parametrize(("limit", "history", "expected"), [
    ("1", None, Fault.EXIT_TRANSIENT),  # first attempt: no history yet
    ("1", [attempt(1, finished=False)], Fault.EXIT_TRANSIENT),  # the running attempt's own entry
    ("1", [attempt(1)], None),
    ("2", [attempt(1)], Fault.EXIT_TRANSIENT),
    ("2", [attempt(1), attempt(2)], None),
    (" 3 ", [attempt(1), attempt(2), attempt(3, finished=False)], Fault.EXIT_TRANSIENT),
    ("0", None, None),
    ("-1", None, None),
])
def test_attempts_annotation_limits_the_fault(limit: str, history: list[dict[str, Any]] | None,
                                              expected: Fault | None) -> None:
    obj = tj({ANNOTATION_FAULT: "exit-transient", ANNOTATION_FAULT_ATTEMPTS: limit}, history)
    assert fault_for(obj, ALLOWED) is expected


def test_without_attempts_annotation_every_attempt_faults() -> None:
    obj = tj({ANNOTATION_FAULT: "stall"}, [attempt(i) for i in range(1, 8)])
    assert fault_for(obj, ALLOWED) is Fault.STALL


def test_malformed_attempts_annotation_means_no_fault(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="transkube_worker"):
        assert fault_for(tj({ANNOTATION_FAULT: "stall", ANNOTATION_FAULT_ATTEMPTS: "two"}), ALLOWED) is None
    assert any("not an integer" in r.getMessage() for r in caplog.records)


def test_exit_faults_are_the_transient_and_internal_classes() -> None:
    transient, internal = Fault.EXIT_TRANSIENT.error(), Fault.EXIT_INTERNAL.error()
    assert transient is not None and internal is not None
    assert (transient.exit_code, transient.reason, transient.message) == (
        ExitCode.TRANSIENT, "TransientError", "fault injection: exit-transient")
    assert (internal.exit_code, internal.reason, internal.message) == (
        ExitCode.INTERNAL, "InternalError", "fault injection: exit-internal")
    assert Fault.STALL.error() is None


# ---- lookup_fault (the one API read; a fake API object) ---------------------------------------------------


class FakeApi:
    def __init__(self, obj: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        self.obj = obj
        self.error = error
        self.calls: list[tuple[Any, ...]] = []

    def get_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        self.calls.append(args)
        if self.error is not None:
            raise self.error
        return self.obj


def test_lookup_never_reads_the_api_unless_allowed() -> None:
    api = FakeApi(tj({ANNOTATION_FAULT: "stall"}))
    assert lookup_fault({}, "ns", "job", api) is None
    assert api.calls == []


def test_lookup_reads_the_own_transcodejob() -> None:
    api = FakeApi(tj({ANNOTATION_FAULT: "exit-internal"}))
    assert lookup_fault(ALLOWED, "ns", "job", api) is Fault.EXIT_INTERNAL
    assert api.calls == [(GROUP, VERSION, "ns", PLURAL, "job")]


def test_lookup_failures_mean_no_fault() -> None:
    assert lookup_fault(ALLOWED, "ns", "job", FakeApi(error=RuntimeError("403"))) is None
    assert lookup_fault(ALLOWED, "ns", "job", FakeApi(None)) is None
    api = FakeApi(tj({ANNOTATION_FAULT: "stall"}))
    assert lookup_fault(ALLOWED, "", "", api) is None and api.calls == []


# ---- stopping a stopped process ---------------------------------------------------------------------------


def proc_state(pid: int) -> str:
    """The one-letter state from /proc/<pid>/stat (T: stopped); after the ')' since comm may contain spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_stopped(pid: int) -> None:
    deadline = time.monotonic() + 5
    while proc_state(pid) not in ("T", "t"):
        assert time.monotonic() < deadline, "process never stopped"
        time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stop_process_continues_a_stopped_child_that_handles_sigterm() -> None:
    # Like ffmpeg, the child handles SIGTERM; a handled signal is not delivered while stopped, so without the
    # SIGCONT the child would sit out the whole grace period and be SIGKILLed.
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
             "print('ready', flush=True)\n"
             "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGSTOP)
        wait_stopped(proc.pid)
        started = time.monotonic()
        stop_process(proc, grace=5.0)
        assert time.monotonic() - started < 2.0
        assert proc.returncode == 0  # its own SIGTERM handler ran, not SIGKILL
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_stop_process_on_a_stopped_sleep() -> None:
    proc = subprocess.Popen(["sleep", "30"], text=True)
    try:
        proc.send_signal(signal.SIGSTOP)
        wait_stopped(proc.pid)
        started = time.monotonic()
        stop_process(proc, grace=5.0)
        assert time.monotonic() - started < 2.0
        assert proc.returncode == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


# ---- the stall, on a real ffmpeg ----------------------------------------------------------------------------


@pytest.fixture
def alarm() -> Iterator[None]:
    saved = signal.getsignal(signal.SIGALRM)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, saved)


def test_stall_ignores_other_stages_and_the_stage_change_write() -> None:
    stall = Stall()
    stall.after_write("Downloading")
    stall.after_write("Transcoding")  # the stage change: no process yet, nothing to stop
    stall.after_write("Transcoding")  # no process known: returns


@pytest.mark.skipif(shutil.which("ffmpeg") is None or not Path("/proc/self/stat").exists(),
                    reason="needs ffmpeg and /proc")
def test_stall_stops_ffmpeg_after_the_first_sample_and_sigterm_still_ends_it(tmp_path: Path, alarm: None) -> None:
    clip = tmp_path / "in.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "20", "-c:v", "libx264", "-preset", "ultrafast",
                    str(clip)], check=True)
    # Slow enough that ffmpeg is still encoding when its first -progress block arrives (every 0.5 s).
    spec = TranscodeJobSpec.model_validate({
        "input": {"uri": "s3://in-bucket/in.mp4"},
        "outputs": [{"name": "web", "uri": "s3://out-bucket/web.mp4", "container": "mp4",
                     "video": {"codec": "h264", "crf": 23, "preset": "slow", "height": 360}}]})
    facts = InputFacts(duration_seconds=20.0, width=640, height=360, video_codec="h264")
    stall = Stall()
    procs: list[subprocess.Popen[str]] = []
    stages: list[str] = []

    def on_spawn(proc: subprocess.Popen[str]) -> None:
        procs.append(proc)
        stall.on_spawn(proc)

    def write(progress: Any) -> None:
        stages.append(progress.stage)
        stall.after_write(progress.stage, sleep=0.05)

    state_at_signal: list[str] = []
    signalled: list[float] = []

    def on_alarm(signum: int, frame: FrameType | None) -> None:  # stands in for the pod's SIGTERM
        state_at_signal.append(proc_state(procs[-1].pid))
        signalled.append(time.monotonic())
        raise Terminated("stopped by SIGTERM")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 2.5)
    reporter = ProgressReporter(write, min_interval=0.0)
    with pytest.raises(Terminated):
        transcode_step(spec, clip, output_paths(spec, tmp_path), facts, "cpu", reporter, on_spawn=on_spawn)
    assert signalled and time.monotonic() - signalled[0] < 2.0  # stop_process's SIGCONT: no 3 s grace + SIGKILL
    assert state_at_signal and state_at_signal[0] in ("T", "t")  # really stopped: no progress was being made
    assert stages == ["Transcoding", "Transcoding"]  # the stage change and one sample, then nothing
    assert procs[-1].poll() is not None and procs[-1].returncode != -signal.SIGKILL  # SIGTERM, within the grace


# ---- stall-upload: hold the attempt half-way through Uploading ---------------------------------------------


class FakeTransfer:
    """What UploadHold reads of an s3transfer TransferFuture: meta.size and result()."""

    def __init__(self, size: int, error: Exception | None = None) -> None:
        self.meta = type("Meta", (), {"size": size})()
        self.error = error

    def result(self) -> None:
        if self.error is not None:
            raise self.error


def test_upload_hold_configures_one_transfer_at_a_time() -> None:
    from boto3.s3.transfer import TransferConfig

    config = UploadHold(16, 8).configure(TransferConfig(max_concurrency=8))
    assert config.max_request_concurrency == 1 and config.max_submission_concurrency == 1


def test_upload_hold_holds_once_an_object_is_done_and_a_multipart_part_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    hold = UploadHold(multipart_threshold=16, part_size=8)
    small, big, failed = FakeTransfer(4), FakeTransfer(32), FakeTransfer(4, RuntimeError("refused"))
    hold.on_progress(small, 4)  # type: ignore[arg-type]
    hold.on_progress(big, 12)  # type: ignore[arg-type]  # a part is sent, but no object is complete yet
    hold.on_done(failed)  # type: ignore[arg-type]  # a failed transfer completes nothing
    assert not hold.held.is_set()
    hold.wait_if_held()  # not held: returns at once
    hold.on_done(small)  # type: ignore[arg-type]
    hold.on_progress(FakeTransfer(8), 8)  # type: ignore[arg-type]  # below the multipart threshold: never holds
    assert not hold.held.is_set()

    sending = threading.Thread(target=hold.on_progress, args=(big, 4))  # 16 > one part: holds here
    sending.start()
    assert hold.held.wait(5)
    sending.join(0.2)
    assert sending.is_alive(), "the transfer thread must block while held"

    def signal_arrives(seconds: float) -> None:
        raise Terminated("stopped by SIGTERM")

    monkeypatch.setattr("transkube_worker.faults.time.sleep", signal_arrives)
    with pytest.raises(Terminated):
        hold.wait_if_held()  # the main thread waits for the signal; its Terminated releases the transfer
    sending.join(5)
    assert not sending.is_alive() and hold.released.is_set()


# ---- slow-transfers: a throttle that keeps transfers slow enough to stop the storage server under them -------

@pytest.mark.parametrize(("done", "elapsed", "rate", "delay"), [
    (0, 0.0, 100.0, 0.0),
    (100, 0.0, 100.0, 1.0),  # one second's worth at once: wait a second
    (100, 0.4, 100.0, 0.6),
    (100, 2.0, 100.0, 0.0),  # behind schedule: never a negative wait
])
def test_throttle_delay_keeps_to_the_rate(done: int, elapsed: float, rate: float, delay: float) -> None:
    assert throttle_delay(done, elapsed, rate) == pytest.approx(delay)


def test_throttle_sleeps_each_callback_onto_the_schedule() -> None:
    now = [10.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(bytes_per_second=1000, clock=lambda: now[0], sleep=sleep)
    transfer: Any = FakeTransfer(5000)
    throttle.on_progress(transfer, 500)
    throttle.on_progress(transfer, 500)
    assert slept == pytest.approx([0.5, 0.5]) and throttle.done == 1000
    now[0] += 3.0  # a slow server: no extra wait once the transfer is behind schedule
    throttle.on_progress(transfer, 1000)
    assert len(slept) == 2
    throttle.on_progress(transfer, -5000)  # s3transfer rewinds a retried part's progress: never below zero
    assert throttle.done == 0


def test_slow_transfer_config_is_small_parts_one_at_a_time() -> None:
    config = slow_transfer_config()
    assert config.multipart_threshold == config.multipart_chunksize == SLOW_TRANSFER_PART == 5 * 1024 * 1024
    assert config.max_request_concurrency == 1
    assert Fault("slow-transfers") is Fault.SLOW_TRANSFERS and Fault.SLOW_TRANSFERS.error() is None
