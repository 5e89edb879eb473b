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
    first_frame_argv,
    needs_first_frame,
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
        "stream_count": 2, "audio_streams": 1, "rotation": None, "sample_aspect_ratio": None,
        "pixel_format": None, "bit_depth": None, "color_primaries": None, "color_transfer": None,
        "color_space": None, "color_range": None, "hdr": None, "mastering_display": None, "max_cll": None,
        "max_fall": None, "interlaced": None, "base_frame_rate": 25.0, "variable_frame_rate": False,
    }
    assert facts.wire()["durationSeconds"] == 2.0


# ffprobe -show_streams of a 10-bit HDR10 HEVC with its metadata at stream level (as MKV/MP4 may carry it), and
# the first frame's side data of one that carries it only in SEI (ffprobe -show_frames -read_intervals %+#1).
HDR_VIDEO: dict[str, Any] = {
    "index": 0, "codec_name": "hevc", "codec_type": "video", "width": 3840, "height": 2160, "pix_fmt": "yuv420p10le",
    "sample_aspect_ratio": "1:1", "color_range": "tv", "color_space": "bt2020nc", "color_transfer": "smpte2084",
    "color_primaries": "bt2020", "field_order": "progressive", "r_frame_rate": "24000/1001",
    "avg_frame_rate": "24000/1001", "disposition": {"attached_pic": 0},
}
MASTERING = {"side_data_type": "Mastering display metadata", "red_x": "34000/50000", "red_y": "16000/50000",
             "green_x": "13250/50000", "green_y": "34500/50000", "blue_x": "7500/50000", "blue_y": "3000/50000",
             "white_point_x": "15635/50000", "white_point_y": "16450/50000", "min_luminance": "50/10000",
             "max_luminance": "10000000/10000"}
LIGHT = {"side_data_type": "Content light level metadata", "max_content": 1000, "max_average": 400}


def test_hdr10_facts_from_the_stream_or_the_first_frame() -> None:
    frame = {"side_data_list": [MASTERING, LIGHT, {"side_data_type": "H.26[45] User Data Unregistered SEI message"}]}
    for data, first in (({"streams": [{**HDR_VIDEO, "side_data_list": [MASTERING, LIGHT]}]}, None),
                        ({"streams": [HDR_VIDEO]}, frame)):
        facts = parse_input_facts(data, first_frame=first)
        assert (facts.pixel_format, facts.bit_depth, facts.hdr, facts.color_primaries, facts.color_transfer,
                facts.color_space, facts.color_range) == (
            "yuv420p10le", 10, "pq", "bt2020", "smpte2084", "bt2020nc", "tv")
        md = facts.mastering_display
        assert md is not None and (md.red, md.green, md.blue, md.white_point) == (
            [0.68, 0.32], [0.265, 0.69], [0.15, 0.06], [0.3127, 0.329])
        assert (md.max_luminance, md.min_luminance, facts.max_cll, facts.max_fall) == (1000, 0.005, 1000, 400)
        assert (facts.interlaced, facts.variable_frame_rate, facts.sample_aspect_ratio) == (False, False, None)
    assert needs_first_frame({"streams": [HDR_VIDEO]})
    assert not needs_first_frame({"streams": [{**HDR_VIDEO, "side_data_list": [MASTERING]}]})
    assert not needs_first_frame(MP4)
    hlg = parse_input_facts({"streams": [{**HDR_VIDEO, "color_transfer": "arib-std-b67"}]})
    assert hlg.hdr == "hlg" and hlg.mastering_display is None


@pytest.mark.parametrize(("stream", "expected"), [
    ({"sample_aspect_ratio": "4:3", "field_order": "tt"}, {"sample_aspect_ratio": "4:3", "interlaced": True}),
    ({"sample_aspect_ratio": "32:27", "field_order": "bb"}, {"sample_aspect_ratio": "32:27", "interlaced": True}),
    ({"sample_aspect_ratio": "0:1", "field_order": "unknown"}, {"sample_aspect_ratio": None, "interlaced": None}),
    ({"sample_aspect_ratio": "10:10"}, {"sample_aspect_ratio": None}),
    ({"r_frame_rate": "60/1", "avg_frame_rate": "750/29"}, {"variable_frame_rate": True, "base_frame_rate": 60.0,
                                                             "frame_rate": 25.862}),
    ({"r_frame_rate": "30/1", "avg_frame_rate": "2997/100"}, {"variable_frame_rate": False}),
    ({"pix_fmt": "p010le"}, {"bit_depth": 10}), ({"pix_fmt": "yuv444p12le"}, {"bit_depth": 12}),
    ({"pix_fmt": "gbrp", "bits_per_raw_sample": "8"}, {"bit_depth": 8}),
    ({"pix_fmt": "rgb48le"}, {"bit_depth": 16}), ({"pix_fmt": "yuvj420p"}, {"bit_depth": 8}),
    ({"color_primaries": "unknown", "color_space": "unknown", "color_range": "unknown"},
     {"color_primaries": None, "color_space": None, "color_range": None}),
])
def test_video_shape_colour_and_timing_facts(stream: dict[str, Any], expected: dict[str, Any]) -> None:
    facts = parse_input_facts({"streams": [{**MP4["streams"][0], **stream}]})
    assert {k: getattr(facts, k) for k in expected} == expected


def test_first_frame_argv_reads_one_video_frame() -> None:
    argv = first_frame_argv(Path("/s/in.mkv"), ("matroska",))
    assert argv[argv.index("-select_streams") + 1] == "V:0" and argv[argv.index("-read_intervals") + 1] == "%+#1"
    assert "-show_frames" in argv and argv[argv.index("-show_entries") + 1] == "frame=side_data_list"
    assert argv[argv.index("-format_whitelist") + 1] == "matroska" and argv[-1] == "file:/s/in.mkv"


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
    assert (facts.pixel_format, facts.bit_depth, facts.interlaced) == ("yuv420p", 8, False)
    assert facts.size_bytes == clip.stat().st_size
    result = probe_output(clip, name="x", uri="s3://b/x.mp4", checksum=None)
    assert result.size_bytes == clip.stat().st_size and result.video_codec == "h264"

    hdr = tmp_path / "hdr.mp4"  # HDR10: metadata only in the HEVC SEI, read from the first frame
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=size=96x64:rate=10", "-t", "0.5", "-pix_fmt", "yuv420p10le", "-c:v", "libx265",
                    "-preset", "ultrafast", "-x265-params", "log-level=error:master-display=G(13250,34500)"
                    "B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400",
                    "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc", str(hdr)],
                   check=True)
    facts = probe_input(hdr)
    assert (facts.hdr, facts.bit_depth, facts.max_cll, facts.max_fall) == ("pq", 10, 1000, 400)
    assert facts.mastering_display is not None and facts.mastering_display.max_luminance == 1000

    junk = tmp_path / "junk.mp4"
    junk.write_text("this is not a video\n")
    with pytest.raises(ProbeFailed) as info:
        probe_input(junk)
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert str(tmp_path) not in info.value.message  # scratch paths mean nothing to the user
    with pytest.raises(Internal):  # an output we wrote that does not probe is our bug
        probe_output(junk, name="x", uri="s3://b/x.mp4", checksum=None)
