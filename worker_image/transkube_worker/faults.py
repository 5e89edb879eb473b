"""TEST-ONLY fault injection: lets end-to-end tests make an attempt fail or stall on demand.

Off unless the operator sets TRANSKUBE_FAULT_INJECTION=allowed on the worker (which it does only when the
platform enables it in the chart); without that variable the worker never even reads the annotations. When
allowed, the worker reads its own TranscodeJob once at start:

- `transkube.dev/fault-injection`: `stall` | `stall-upload` | `slow-transfers` | `exit-transient` | `exit-internal`
  (anything else: warning, ignored)
- `transkube.dev/fault-injection-attempts`: optional N; the fault applies only while fewer than N earlier attempts
  have finished (entries of status.attemptHistory with a finishTime), so a test can fail the first N attempts and
  let the next one succeed. Absent: every attempt.

The decision (`fault_for`) is pure; `lookup_fault` is the one API read; `Stall` and `UploadHold` are the stalls'
runtime parts, `Throttle` (with `slow_transfer_config`) the slow transfers'.
"""

from __future__ import annotations

import enum
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from boto3.s3.transfer import TransferConfig
from s3transfer.futures import TransferFuture
from s3transfer.subscribers import BaseSubscriber
from transkube_api.constants import GROUP, PLURAL, PREFIX, VERSION

from .errors import Internal, Transient, WorkerError
from .status_writer import REQUEST_TIMEOUT, load_custom_objects_api

log = logging.getLogger(__name__)

FAULT_INJECTION_ENV = "TRANSKUBE_FAULT_INJECTION"
FAULT_INJECTION_ALLOWED = "allowed"
ANNOTATION_FAULT = f"{PREFIX}/fault-injection"
ANNOTATION_FAULT_ATTEMPTS = f"{PREFIX}/fault-injection-attempts"


class Fault(enum.StrEnum):
    STALL = "stall"
    STALL_UPLOAD = "stall-upload"
    SLOW_TRANSFERS = "slow-transfers"
    EXIT_TRANSIENT = "exit-transient"
    EXIT_INTERNAL = "exit-internal"

    def error(self) -> WorkerError | None:
        """The failure an exit-* fault raises right after the input download (None for stall)."""
        if self is Fault.EXIT_TRANSIENT:
            return Transient(f"fault injection: {self.value}")
        if self is Fault.EXIT_INTERNAL:
            return Internal(f"fault injection: {self.value}")
        return None


def allowed(env: Mapping[str, str]) -> bool:
    return env.get(FAULT_INJECTION_ENV, "").strip() == FAULT_INJECTION_ALLOWED


def finished_attempts(tj_obj: Mapping[str, Any]) -> int:
    """Earlier attempts that have ended: status.attemptHistory entries carrying a finishTime (the running
    attempt's own entry, if the operator already recorded it, has none yet)."""
    status = tj_obj.get("status")
    history = status.get("attemptHistory") if isinstance(status, Mapping) else None
    if not isinstance(history, list):
        return 0
    return sum(1 for entry in history if isinstance(entry, Mapping) and entry.get("finishTime") is not None)


def fault_for(tj_obj: Mapping[str, Any], env: Mapping[str, str]) -> Fault | None:
    """The fault this attempt must inject, from the TranscodeJob object as the API returns it; None unless the
    environment allows fault injection and the annotations ask for a fault that still applies."""
    if not allowed(env):
        return None
    metadata = tj_obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    if not isinstance(annotations, Mapping):
        return None
    raw = annotations.get(ANNOTATION_FAULT)
    if raw is None:
        return None
    try:
        fault = Fault(str(raw).strip())
    except ValueError:
        log.warning("unknown fault injection ignored", extra={"fields": {"annotation": ANNOTATION_FAULT,
                                                                         "value": raw}})
        return None
    raw_limit = annotations.get(ANNOTATION_FAULT_ATTEMPTS)
    if raw_limit is None:
        return fault
    try:
        limit = int(str(raw_limit).strip())
    except ValueError:
        # Ignoring the fault is the safe reading of a typo: the test sees no fault rather than endless failures.
        log.warning("fault injection ignored: attempts is not an integer", extra={"fields": {
            "annotation": ANNOTATION_FAULT_ATTEMPTS, "value": raw_limit}})
        return None
    return fault if finished_attempts(tj_obj) < limit else None


def lookup_fault(env: Mapping[str, str], namespace: str, name: str, api: Any = None) -> Fault | None:
    """Read the own TranscodeJob and decide. Never fails the attempt: a failed read means no fault (logged)."""
    if not allowed(env):
        return None  # the normal path: no API call at all
    if not (namespace and name):
        log.warning("fault injection allowed but the TranscodeJob is unknown (no namespace/name)")
        return None
    try:
        if api is None:
            api = load_custom_objects_api()
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                               _request_timeout=REQUEST_TIMEOUT)
    except Exception as exc:
        log.warning("fault injection: cannot read the TranscodeJob; no fault", extra={"fields": {
            "error": f"{type(exc).__name__}: {str(exc)[:300]}"}})
        return None
    fault = fault_for(obj if isinstance(obj, Mapping) else {}, env)
    if fault is not None:
        log.warning("fault injection active", extra={"fields": {"fault": fault.value,
                                                                "finishedAttempts": finished_attempts(obj)}})
    return fault


class Stall:
    """The `stall` fault: once a Transcoding progress sample has been written to status, SIGSTOP the running
    ffmpeg (so it really makes no progress) and block the worker's main thread until a signal arrives. SIGTERM
    then raises Terminated out of `after_write`, and the usual unwinding stops ffmpeg (transcode.stop_process
    sends SIGCONT first) and cleans up."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._transcoding_writes = 0

    def on_spawn(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc

    def after_write(self, stage: str, *, sleep: float = 60.0) -> None:
        if stage != "Transcoding":
            return
        self._transcoding_writes += 1
        # The first Transcoding write is the stage change itself (transcode_step, before any ffmpeg sample).
        if self._transcoding_writes < 2 or self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGSTOP)
        log.warning("fault injection: ffmpeg stopped; waiting for a signal", extra={"fields": {
            "pid": self._proc.pid}})
        while True:  # the signal handler raises Terminated out of the sleep
            time.sleep(sleep)


class UploadHold(BaseSubscriber):
    """The `stall-upload` fault: hold the attempt half-way through Uploading, so a test can cancel it there.

    Uploads run one at a time, in the order they were submitted (output by output, files sorted). As soon as at
    least one object is completely uploaded and a multipart upload has a part uploaded (its transfer has read
    more than one part), the transfer thread blocks inside the part it is sending and the worker's main thread
    (`wait_if_held`, from the upload's progress tick) waits for a signal. SIGTERM raises Terminated out of that
    wait, which releases the transfer thread on its way out; the transfer manager then cancels the transfers
    (s3transfer aborts the multipart upload) and the worker deletes the objects it submitted. A job without a
    multipart-sized output never holds."""

    def __init__(self, multipart_threshold: int, part_size: int) -> None:
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._lock = threading.Lock()
        self._completed = 0
        self._read: dict[int, int] = {}  # id(transfer future) -> bytes read so far
        self.held = threading.Event()
        self.released = threading.Event()

    def configure(self, config: TransferConfig) -> TransferConfig:
        """One request at a time, submitted in order: the hold point is then deterministic."""
        config.max_request_concurrency = 1
        config.max_submission_concurrency = 1
        return config

    def on_done(self, future: TransferFuture, **kwargs: Any) -> None:
        try:
            future.result()
        except Exception:
            return
        with self._lock:
            self._completed += 1

    def on_progress(self, future: TransferFuture, bytes_transferred: int, **kwargs: Any) -> None:
        size = future.meta.size
        with self._lock:
            read = self._read[id(future)] = self._read.get(id(future), 0) + bytes_transferred
            if (not self.held.is_set() and self._completed >= 1 and size is not None and size >= self._threshold
                    and read > self._part_size):
                self.held.set()
        if self.held.is_set():
            self.released.wait()

    def wait_if_held(self, sleep: float = 60.0) -> None:
        """On the main thread: once held, wait for a signal (its Terminated releases the transfers)."""
        if not self.held.is_set():
            return
        log.warning("fault injection: uploads held half-way; waiting for a signal",
                    extra={"fields": {"completedObjects": self._completed}})
        try:
            while True:  # the signal handler raises Terminated out of the sleep
                time.sleep(sleep)
        finally:
            self.released.set()


# The `slow-transfers` fault: every download and upload of the attempt runs at this rate, in parts of S3's smallest
# multipart part size, one request at a time. A chaos test can then stop the storage server while the attempt is
# surely downloading or uploading: the next part's request meets the outage (socket buffers hold at most the
# part in flight, never the whole object).
SLOW_TRANSFER_BYTES_PER_SECOND = 1024 * 1024
SLOW_TRANSFER_PART = 5 * 1024 * 1024


def slow_transfer_config() -> TransferConfig:
    return TransferConfig(multipart_threshold=SLOW_TRANSFER_PART, multipart_chunksize=SLOW_TRANSFER_PART,
                          max_concurrency=1, use_threads=True)


def throttle_delay(done_bytes: int, elapsed: float, bytes_per_second: float) -> float:
    """How long to wait so that `done_bytes` after `elapsed` seconds stays within the rate (0: on schedule)."""
    return max(0.0, done_bytes / bytes_per_second - elapsed)


class Throttle(BaseSubscriber):
    """Caps a transfer's throughput: each progress callback (on the transfer thread, while it reads the body it
    sends or receives) sleeps until the bytes so far fit the rate. Progress can go negative when s3transfer
    retries a part; the count never drops below zero."""

    def __init__(self, bytes_per_second: float = SLOW_TRANSFER_BYTES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._rate = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._start: float | None = None
        self.done = 0

    def on_progress(self, future: TransferFuture, bytes_transferred: int, **kwargs: Any) -> None:
        with self._lock:
            now = self._clock()
            if self._start is None:
                self._start = now
            self.done = max(0, self.done + bytes_transferred)
            delay = throttle_delay(self.done, now - self._start, self._rate)
        if delay > 0:
            self._sleep(delay)
