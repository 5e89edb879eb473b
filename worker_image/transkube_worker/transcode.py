"""Running ffmpeg: stream `-progress` from stdout, keep a bounded tail of stderr, stop it cleanly, and classify
its failures (that part is pure)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from .errors import Internal, InvalidInput, Transient, Unsupported, WorkerError
from .progress import ProgressParser, ProgressSample

STDERR_TAIL_BYTES = 16 * 1024
MESSAGE_TAIL_CHARS = 600  # what goes into the termination message (whose whole budget is 1 KiB)
STOP_GRACE_SECONDS = 3.0  # ffmpeg flushes its encoders and closes files on SIGTERM; then SIGKILL

UNSUPPORTED_PATTERNS = re.compile(
    r"Unknown encoder|Encoder not found|Unrecognized option|Option not found|not currently supported in container"
    r"|Could not find tag for codec|codec not currently supported|Specified sample rate .* is not supported"
    r"|Unsupported channel layout|Error while opening encoder|Error initializing output stream",
    re.IGNORECASE,
)
GPU_PATTERNS = re.compile(
    r"Cannot load (?:libcuda|libnvidia-encode|nvcuda)|No (?:NVENC )?capable devices found|CUDA_ERROR"
    r"|OpenEncodeSessionEx failed|Device type cuda needed|Failed setup for format cuda|cuInit",
    re.IGNORECASE,
)
INVALID_INPUT_PATTERNS = re.compile(
    r"Invalid data found when processing input|Error while decoding|error while decoding|moov atom not found"
    r"|corrupt|Invalid NAL unit|non-existing PPS|decode_slice_header error|missing picture in access unit"
    r"|Header missing|Invalid frame|Truncat|Error parsing|could not find codec parameters|Decoding error"
    r"|does not contain any stream",
    re.IGNORECASE,
)


class TailBuffer:
    """Keeps the last `limit` bytes of text: a corrupt input can make ffmpeg print megabytes of errors."""

    def __init__(self, limit: int = STDERR_TAIL_BYTES) -> None:
        self._limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self._lock = threading.Lock()

    def append(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text)
            self._size += len(text)
            while self._size > self._limit and len(self._chunks) > 1:
                self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        with self._lock:
            return "".join(self._chunks)[-self._limit:]


LOG_CONTEXT_ADDRESS = re.compile(r" @ 0x[0-9a-f]+\]")


def tail_lines(text: str, limit: int = MESSAGE_TAIL_CHARS) -> str:
    """The last lines that fit in `limit` characters, joined with ' | ' for a one-line message. ffmpeg's
    `[h264 @ 0x55d0c0ffee00]` context pointers are dropped: noise to a user."""
    text = LOG_CONTEXT_ADDRESS.sub("]", text)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    out: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 3 > limit and out:
            break
        out.append(line[-limit:])
        size += len(line) + 3
    return " | ".join(reversed(out))


def classify_ffmpeg_failure(returncode: int, stderr: str) -> WorkerError:
    """Why ffmpeg failed, on an input that probed fine. Most specific first: a broken GPU, then an encoder/muxer
    refusing the requested settings (Unsupported even if decode errors were printed too), then bad input."""
    tail = tail_lines(stderr)
    detail = f": {tail}" if tail else ""
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = f"signal {-returncode}"
        # SIGKILL from outside is nearly always the OOM killer; a retry with the same limits would die again.
        return Internal(f"ffmpeg was killed by {sig} (out of memory?){detail}")
    if GPU_PATTERNS.search(stderr):
        # The GPU or its driver is unusable on this node (NVENC also reports it as "Error while opening encoder");
        # another attempt may land on a healthy one.
        return Transient(f"GPU encoding/decoding unavailable{detail}")
    if UNSUPPORTED_PATTERNS.search(stderr):
        return Unsupported(f"ffmpeg cannot produce the requested output{detail}")
    if "No space left on device" in stderr:
        return Internal(f"scratch volume full{detail}")
    if INVALID_INPUT_PATTERNS.search(stderr):
        return InvalidInput(f"the input could not be decoded{detail}")
    return Internal(f"ffmpeg exited with code {returncode}{detail}")


def _drain(stream: IO[str], sink: TailBuffer) -> None:
    for line in stream:
        sink.append(line)


def stop_process(proc: subprocess.Popen[str], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM (ffmpeg's "finish up and exit"), then SIGKILL after `grace` seconds. `q` on stdin is not an option
    with -nostdin. SIGCONT first: a stopped process (the test-only `stall` fault SIGSTOPs ffmpeg) would not act
    on SIGTERM until continued; for a running one it is a no-op."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ffmpeg_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment ffmpeg runs with. Storage credentials are dropped: ffmpeg parses untrusted input and
    never needs them. SVT-AV1 prints an info banner to stderr whatever -loglevel says; SVT_LOG=2 limits it to
    warnings so stderr (and the failure message) stays about real problems."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("AWS_")}
    env.setdefault("SVT_LOG", "2")
    return env


def run_ffmpeg(argv: Sequence[str], on_sample: Callable[[ProgressSample], None], *,
               on_spawn: Callable[[subprocess.Popen[str]], None] | None = None) -> str:
    """Run ffmpeg to completion, calling `on_sample` for every `-progress` block; returns the tail of its stderr
    (analysis passes print their results there); raises a WorkerError when it fails. Any exception (a signal,
    JobGone from the status writer) stops ffmpeg before propagating. `on_spawn` gets the process (only the
    test-only stall fault uses it)."""
    stderr = TailBuffer()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", bufsize=1, env=ffmpeg_env())
    assert proc.stdout is not None and proc.stderr is not None
    # stderr on its own thread: if nobody reads it and ffmpeg fills the pipe, ffmpeg blocks forever.
    drain = threading.Thread(target=_drain, args=(proc.stderr, stderr), name="ffmpeg-stderr", daemon=True)
    drain.start()
    parser = ProgressParser()
    try:
        if on_spawn is not None:
            on_spawn(proc)
        for line in proc.stdout:
            sample = parser.feed(line)
            if sample is not None:
                on_sample(sample)
        returncode = proc.wait()
    finally:
        stop_process(proc)
        drain.join(timeout=STOP_GRACE_SECONDS)
        proc.stdout.close()
        proc.stderr.close()
    if returncode != 0:
        raise classify_ffmpeg_failure(returncode, stderr.text())
    return stderr.text()
