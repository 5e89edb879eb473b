"""ffprobe JSON -> InputFacts / OutputResult, on output captured from ffprobe 5.1 (trimmed to the keys read)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import ExitCode
from transkube_worker.errors import Internal
from transkube_worker.probe import (
    ProbeFailed,
    parse_input_facts,
    parse_output_result,
    parse_rate,
    probe_argv,
    probe_input,
    probe_output,
)

# ffprobe -show_format -show_streams of a 2 s 320x240 h264/aac MP4.
MP4: dict[str, Any] = {
    "streams": [
        {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 240,
         "r_frame_rate": "25/1", "avg_frame_rate": "25/1", "duration": "2.000000", "bit_rate": "269788",
         "disposition": {"default": 1, "attached_pic": 0}},
        {"index": 1, "codec_name": "aac", "codec_type": "audio", "sample_rate": "44100", "channels": 1,
         "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "duration": "2.000000",
         "disposition": {"default": 1, "attached_pic": 0}},
    ],
    "format": {"filename": "file:/tmp/a.mp4", "nb_streams": 2, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
               "duration": "2.000000", "size": "88175", "bit_rate": "352700", "probe_score": 100},
}

# An MP3 with cover art: the only "video" stream is an attached picture.
MP3_WITH_COVER: dict[str, Any] = {
    "streams": [
        {"index": 0, "codec_name": "mp3", "codec_type": "audio", "avg_frame_rate": "0/0", "r_frame_rate": "0/0",
         "duration": "1.044898", "disposition": {"attached_pic": 0}},
        {"index": 1, "codec_name": "mjpeg", "codec_type": "video", "width": 64, "height": 64,
         "avg_frame_rate": "0/0", "r_frame_rate": "90000/1", "duration": "1.044900",
         "disposition": {"attached_pic": 1}},
    ],
    "format": {"format_name": "mp3", "duration": "1.044898", "size": "8858", "bit_rate": "67819"},
}

# WebM: streams carry no duration, only the format does.
WEBM: dict[str, Any] = {
    "streams": [
        {"index": 0, "codec_name": "av1", "codec_type": "video", "width": 160, "height": 120,
         "avg_frame_rate": "25/1", "r_frame_rate": "25/1"},
        {"index": 1, "codec_name": "opus", "codec_type": "audio", "avg_frame_rate": "0/0", "r_frame_rate": "0/0"},
    ],
    "format": {"format_name": "matroska,webm", "duration": "2.028000", "size": "36384", "bit_rate": "143526"},
}


def test_parse_mp4() -> None:
    facts = parse_input_facts(MP4, size_bytes=88175)
    assert facts.model_dump() == {
        "duration_seconds": 2.0, "width": 320, "height": 240, "video_codec": "h264", "audio_codec": "aac",
        "frame_rate": 25.0, "bitrate": 352700, "size_bytes": 88175, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
        "stream_count": 2, "audio_streams": 1, "rotation": None,
    }
    assert facts.wire()["durationSeconds"] == 2.0


def test_cover_art_is_not_video() -> None:
    facts = parse_input_facts(MP3_WITH_COVER)
    assert facts.video_codec is None and facts.width is None and facts.frame_rate is None
    assert facts.audio_codec == "mp3" and facts.duration_seconds == 1.045 and facts.size_bytes == 8858


def test_duration_falls_back_to_streams() -> None:
    data = {**MP4, "format": {k: v for k, v in MP4["format"].items() if k != "duration"}}
    assert parse_input_facts(data).duration_seconds == 2.0


def test_webm_without_stream_durations() -> None:
    facts = parse_input_facts(WEBM)
    assert (facts.video_codec, facts.audio_codec, facts.duration_seconds) == ("av1", "opus", 2.028)


def test_frame_rate_falls_back_to_r_frame_rate() -> None:
    video = {**MP4["streams"][0], "avg_frame_rate": "0/0", "r_frame_rate": "30000/1001"}
    assert parse_input_facts({**MP4, "streams": [video]}).frame_rate == 29.97


@pytest.mark.parametrize(("raw", "rate"), [("25/1", 25.0), ("30000/1001", 29.97), ("0/0", None), ("24", 24.0),
                                           (None, None), ("x/y", None)])
def test_parse_rate(raw: str | None, rate: float | None) -> None:
    assert parse_rate(raw) == rate


@pytest.mark.parametrize("data", [{}, {"streams": []}, {"streams": [{"codec_type": "data"}]},
                                  {"streams": [{"codec_type": "subtitle", "codec_name": "subrip"}]}])
def test_no_media_streams_is_invalid_input(data: dict[str, Any]) -> None:
    with pytest.raises(ProbeFailed) as info:
        parse_input_facts(data)
    assert info.value.exit_code == ExitCode.INVALID_INPUT


def test_parse_output_result() -> None:
    result = parse_output_result(WEBM, name="web", uri="s3://b/k.webm", size_bytes=36384, checksum="sha256:ab")
    assert result.wire() == {"name": "web", "uri": "s3://b/k.webm", "sizeBytes": 36384, "durationSeconds": 2.028,
                             "videoCodec": "av1", "audioCodec": "opus", "width": 160, "height": 120,
                             "checksum": "sha256:ab"}


def test_probe_argv_restricts_protocols() -> None:
    argv = probe_argv(Path("/s/in.mp4"))
    assert argv[:2] == ["ffprobe", "-v"]
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert argv[-1] == "file:/s/in.mp4"


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@needs_ffmpeg
def test_probe_real_files(tmp_path: Path) -> None:
    clip = tmp_path / "c.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=10", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
                   check=True)
    facts = probe_input(clip)
    assert (facts.video_codec, facts.width, facts.height, facts.audio_codec) == ("h264", 96, 64, None)
    assert facts.size_bytes == clip.stat().st_size
    result = probe_output(clip, name="x", uri="s3://b/x.mp4", checksum=None)
    assert result.size_bytes == clip.stat().st_size and result.video_codec == "h264"

    junk = tmp_path / "junk.mp4"
    junk.write_text("this is not a video\n")
    with pytest.raises(ProbeFailed) as info:
        probe_input(junk)
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert str(tmp_path) not in info.value.message  # scratch paths mean nothing to the user
    with pytest.raises(Internal):  # an output we wrote that does not probe is our bug
        probe_output(junk, name="x", uri="s3://b/x.mp4", checksum=None)
