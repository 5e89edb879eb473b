"""Progress: parsing ffmpeg's `-progress` output, computing status.progress, and rate-limiting its writes.

Everything here is pure or takes an injected clock, so it is unit-testable without ffmpeg or sleeping.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from transkube_api.models import Progress, Stage

# Overall percent bands per stage: transcoding dominates the wall time, transfers get a sliver each.
STAGE_BANDS: dict[str, tuple[float, float]] = {
    "Pending": (0.0, 0.0),
    "Downloading": (0.0, 5.0),
    "Probing": (5.0, 5.0),
    "Transcoding": (5.0, 95.0),
    "Uploading": (95.0, 100.0),
    "Done": (100.0, 100.0),
}


@dataclass(frozen=True)
class ProgressSample:
    """One `-progress` block. None where ffmpeg printed N/A or nothing."""

    frame: int | None = None
    fps: float | None = None
    out_time_seconds: float | None = None
    speed: float | None = None
    end: bool = False


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        return None  # "N/A"
    return value if math.isfinite(value) else None


def parse_speed(raw: str | None) -> float | None:
    """`2.5x` / `   1x` -> 2.5 / 1.0; `N/A` -> None."""
    if raw is None:
        return None
    raw = raw.strip()
    return _number(raw[:-1] if raw.endswith("x") else raw)


def parse_block(fields: dict[str, str]) -> ProgressSample:
    """A sample from one block's key=value pairs."""
    frame = _number(fields.get("frame"))
    out_us = _number(fields.get("out_time_us"))
    if out_us is None:  # older ffmpeg prints only out_time_ms, which (despite the name) is microseconds too
        out_us = _number(fields.get("out_time_ms"))
    return ProgressSample(
        frame=int(frame) if frame is not None else None,
        fps=_number(fields.get("fps")),
        # Negative early on (audio priming, B-frame delay): clamp, it means "nothing written yet".
        out_time_seconds=max(out_us, 0.0) / 1_000_000 if out_us is not None else None,
        speed=parse_speed(fields.get("speed")),
        end=fields.get("progress", "").strip() == "end",
    )


class ProgressParser:
    """Feeds on `-progress` lines; returns a sample each time a block ends (`progress=continue|end`)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> ProgressSample | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        self._fields[key.strip()] = value.strip()
        if key.strip() != "progress":
            return None
        sample = parse_block(self._fields)
        self._fields = {}
        return sample


def format_eta(seconds: int) -> str:
    """45 -> `45s`, 65 -> `1m05s`, 3723 -> `1h02m03s`."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def rfc3339(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fraction(done: float | None, total: float | None) -> float:
    if done is None or not total or total <= 0:
        return 0.0
    return min(max(done / total, 0.0), 1.0)


def compute_progress(stage: Stage, now: dt.datetime, *, sample: ProgressSample | None = None,
                     duration_seconds: float | None = None, done_bytes: int | None = None,
                     total_bytes: int | None = None) -> Progress:
    """status.progress for a stage. Transcoding uses media time written / input duration; the transfer
    stages use bytes. fps/speed/eta only exist while transcoding."""
    low, high = STAGE_BANDS[stage]
    fps = speed = None
    eta_seconds: int | None = None
    if stage == "Transcoding":
        out_time = sample.out_time_seconds if sample else None
        fraction = 1.0 if sample and sample.end else _fraction(out_time, duration_seconds)
        if sample:
            fps = sample.fps
            speed = sample.speed
        if speed and speed > 0 and duration_seconds and out_time is not None:
            remaining = max(duration_seconds - out_time, 0.0)
            eta_seconds = 0 if sample and sample.end else round(remaining / speed)
    elif stage in ("Downloading", "Uploading"):
        fraction = _fraction(done_bytes, total_bytes)
    else:
        fraction = 1.0
    return Progress(
        stage=stage,
        percent=round(low + (high - low) * fraction, 1),
        fps=round(fps, 2) if fps is not None else None,
        speed=round(speed, 3) if speed is not None else None,
        eta_seconds=eta_seconds,
        eta=format_eta(eta_seconds) if eta_seconds is not None else None,
        updated_at=rfc3339(now),
    )


ProgressWriter = Callable[[Progress], None]


class ProgressReporter:
    """Writes progress at a bounded rate: at most one write per `min_interval` seconds, except that a stage
    change is written at once and Done is always written. Throttled updates are kept; `flush()` writes the
    latest one. Writer exceptions propagate (the status writer decides which ones are fatal)."""

    def __init__(self, writer: ProgressWriter, min_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._writer = writer
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()  # transfer callbacks may report from other threads
        self._last_time: float | None = None
        self._last_stage: str | None = None
        self._pending: Progress | None = None
        self.writes = 0

    @property
    def stage(self) -> str | None:
        return self._last_stage

    def update(self, progress: Progress) -> bool:
        """Report `progress`; returns whether it was written now."""
        with self._lock:
            now = self._clock()
            due = (
                progress.stage == "Done"
                or progress.stage != self._last_stage
                or self._last_time is None
                or now - self._last_time >= self._min_interval
            )
            if not due:
                self._pending = progress
                return False
            self._write(progress, now)
            return True

    def flush(self) -> bool:
        """Write the latest throttled update, if any."""
        with self._lock:
            if self._pending is None:
                return False
            self._write(self._pending, self._clock())
            return True

    def _write(self, progress: Progress, now: float) -> None:
        # Recorded before writing: a failed write still counts, so a broken API server is not hammered.
        self._last_time = now
        self._last_stage = progress.stage
        self._pending = None
        self.writes += 1
        self._writer(progress)
