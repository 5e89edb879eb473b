"""-progress parsing, status.progress computation and the rate-limited reporter (fake clock, no sleeping)."""

from __future__ import annotations

import datetime as dt

import pytest
from transkube_api.models import Progress
from transkube_worker.progress import (
    ProgressParser,
    ProgressReporter,
    ProgressSample,
    compute_progress,
    format_eta,
    parse_block,
    parse_speed,
    rfc3339,
)

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=dt.UTC)

# Two blocks exactly as ffmpeg 5.1 prints them with -progress pipe:1.
FFMPEG_OUTPUT = """\
frame=1
fps=0.00
stream_0_0_q=0.0
bitrate=   5.2kbits/s
total_size=48
out_time_us=74000
out_time_ms=74000
out_time=00:00:00.074000
dup_frames=0
drop_frames=0
speed=10.6x
progress=continue
frame=50
fps=48.50
stream_0_0_q=-1.0
bitrate= 332.4kbits/s
total_size=84501
out_time_us=2034000
out_time_ms=2034000
out_time=00:00:02.034000
dup_frames=0
drop_frames=0
speed=13.2x
progress=end
"""


def test_parser_yields_one_sample_per_block() -> None:
    parser = ProgressParser()
    samples = [s for line in FFMPEG_OUTPUT.splitlines(keepends=True) if (s := parser.feed(line))]
    assert samples == [
        ProgressSample(frame=1, fps=0.0, out_time_seconds=0.074, speed=10.6, end=False),
        ProgressSample(frame=50, fps=48.5, out_time_seconds=2.034, speed=13.2, end=True),
    ]


def test_parser_ignores_noise_and_handles_na() -> None:
    parser = ProgressParser()
    assert parser.feed("garbage without equals\n") is None
    assert parser.feed("\n") is None
    for line in ["frame=0", "fps=N/A", "out_time_us=N/A", "out_time_ms=N/A", "speed=N/A"]:
        assert parser.feed(line) is None
    assert parser.feed("progress=continue") == ProgressSample(frame=0, end=False)


def test_parse_block_edge_cases() -> None:
    assert parse_block({"out_time_us": "-23220", "progress": "continue"}).out_time_seconds == 0.0
    assert parse_block({"out_time_ms": "1500000"}).out_time_seconds == 1.5  # old ffmpeg: only out_time_ms
    assert parse_block({"speed": "   1x"}).speed == 1.0
    assert parse_block({"fps": "inf"}).fps is None


@pytest.mark.parametrize(("raw", "value"), [("2.5x", 2.5), ("   1x", 1.0), ("N/A", None), (None, None),
                                            ("0.998x", 0.998), ("", None)])
def test_parse_speed(raw: str | None, value: float | None) -> None:
    assert parse_speed(raw) == value


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (45, "45s"), (59, "59s"), (60, "1m00s"), (65, "1m05s"),
                                               (3599, "59m59s"), (3600, "1h00m00s"), (3723, "1h02m03s"),
                                               (90061, "25h01m01s"), (-5, "0s")])
def test_format_eta(seconds: int, text: str) -> None:
    assert format_eta(seconds) == text


def test_rfc3339_is_utc_seconds() -> None:
    assert rfc3339(NOW) == "2025-03-04T05:06:07Z"
    other_zone = NOW.astimezone(dt.timezone(dt.timedelta(hours=-7)))
    assert rfc3339(other_zone) == "2025-03-04T05:06:07Z"


def test_transcoding_progress() -> None:
    sample = ProgressSample(frame=250, fps=50.0, out_time_seconds=30.0, speed=2.0)
    p = compute_progress("Transcoding", NOW, sample=sample, duration_seconds=120.0)
    assert p.wire() == {"stage": "Transcoding", "percent": 27.5, "fps": 50.0, "speed": 2.0, "etaSeconds": 45,
                        "eta": "45s", "updatedAt": "2025-03-04T05:06:07Z"}


def test_transcoding_eta_long() -> None:
    sample = ProgressSample(out_time_seconds=100.0, speed=0.5)
    p = compute_progress("Transcoding", NOW, sample=sample, duration_seconds=2000.0)
    assert p.eta_seconds == 3800 and p.eta == "1h03m20s"


def test_transcoding_without_duration_or_speed() -> None:
    p = compute_progress("Transcoding", NOW, sample=ProgressSample(out_time_seconds=3.0, speed=None))
    assert (p.percent, p.eta_seconds, p.eta, p.speed) == (5.0, None, None, None)
    p = compute_progress("Transcoding", NOW, sample=ProgressSample(out_time_seconds=3.0, speed=0.0),
                         duration_seconds=10.0)
    assert p.eta_seconds is None and p.percent == 32.0


def test_transcoding_is_clamped_and_end_is_95() -> None:
    over = compute_progress("Transcoding", NOW, sample=ProgressSample(out_time_seconds=12.0, speed=1.0),
                            duration_seconds=10.0)
    assert over.percent == 95.0 and over.eta_seconds == 0
    end = compute_progress("Transcoding", NOW, sample=ProgressSample(out_time_seconds=9.5, speed=3.0, end=True),
                           duration_seconds=10.0)
    assert end.percent == 95.0 and end.eta == "0s"
    start = compute_progress("Transcoding", NOW, duration_seconds=10.0)
    assert start.percent == 5.0 and start.fps is None


def test_transfer_and_fixed_stages() -> None:
    assert compute_progress("Downloading", NOW).percent == 0.0
    assert compute_progress("Downloading", NOW, done_bytes=50, total_bytes=100).percent == 2.5
    assert compute_progress("Downloading", NOW, done_bytes=200, total_bytes=100).percent == 5.0
    assert compute_progress("Downloading", NOW, done_bytes=0, total_bytes=0).percent == 0.0
    assert compute_progress("Probing", NOW).percent == 5.0
    assert compute_progress("Uploading", NOW, done_bytes=1, total_bytes=4).percent == 96.2
    assert compute_progress("Uploading", NOW, done_bytes=4, total_bytes=4).percent == 100.0
    done = compute_progress("Done", NOW)
    assert done.wire() == {"stage": "Done", "percent": 100.0, "updatedAt": "2025-03-04T05:06:07Z"}
    assert compute_progress("Pending", NOW).percent == 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def p(stage: str, percent: float = 0) -> Progress:
    return Progress(stage=stage, percent=percent)  # type: ignore[arg-type]


def test_reporter_rate_limits_within_a_stage() -> None:
    written: list[Progress] = []
    clock = FakeClock()
    reporter = ProgressReporter(written.append, min_interval=2.0, clock=clock)
    assert reporter.update(p("Transcoding", 5))  # first write always goes out
    clock.now += 0.5
    assert not reporter.update(p("Transcoding", 6))
    clock.now += 1.0
    assert not reporter.update(p("Transcoding", 7))
    clock.now += 0.5  # 2.0 s after the last write
    assert reporter.update(p("Transcoding", 8))
    assert [w.percent for w in written] == [5, 8]
    assert reporter.writes == 2


def test_reporter_writes_stage_changes_immediately() -> None:
    written: list[Progress] = []
    clock = FakeClock()
    reporter = ProgressReporter(written.append, min_interval=10.0, clock=clock)
    for stage in ("Downloading", "Probing", "Transcoding", "Uploading"):
        assert reporter.update(p(stage))
    assert [w.stage for w in written] == ["Downloading", "Probing", "Transcoding", "Uploading"]
    assert reporter.stage == "Uploading"


def test_reporter_always_writes_done() -> None:
    written: list[Progress] = []
    reporter = ProgressReporter(written.append, min_interval=60.0, clock=FakeClock())
    reporter.update(p("Done", 100))
    reporter.update(p("Done", 100))  # same stage, no time passed: still written
    assert len(written) == 2


def test_reporter_flush_writes_latest_throttled_update() -> None:
    written: list[Progress] = []
    clock = FakeClock()
    reporter = ProgressReporter(written.append, min_interval=2.0, clock=clock)
    reporter.update(p("Transcoding", 5))
    reporter.update(p("Transcoding", 50))
    reporter.update(p("Transcoding", 60))
    assert reporter.flush()
    assert not reporter.flush()  # nothing pending any more
    assert [w.percent for w in written] == [5, 60]


def test_reporter_zero_interval_writes_everything() -> None:
    written: list[Progress] = []
    reporter = ProgressReporter(written.append, min_interval=0.0, clock=FakeClock())
    for i in range(5):
        reporter.update(p("Transcoding", i))
    assert len(written) == 5


def test_reporter_propagates_writer_errors_but_counts_the_attempt() -> None:
    clock = FakeClock()

    def broken(_: Progress) -> None:
        raise RuntimeError("gone")

    reporter = ProgressReporter(broken, min_interval=2.0, clock=clock)
    with pytest.raises(RuntimeError):
        reporter.update(p("Transcoding"))
    clock.now += 1.0
    assert not reporter.update(p("Transcoding", 1))  # a failing API server is not hammered
