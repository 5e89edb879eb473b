"""Quality metrics: the comparison argv, parsing ffmpeg's summaries, the re-encode settings, the API rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from transkube_api.constants import ExitCode
from transkube_api.models import InputFacts, OutputResult, OutputSpec, QualityMetrics, QualitySpec
from transkube_worker.errors import QualityBelowThreshold
from transkube_worker.main import with_quality
from transkube_worker.media_args import ladder, rendition_key, rendition_parts
from transkube_worker.quality import (
    QualityOutcome,
    boosted,
    cfr_sync,
    computable,
    join_rendition,
    parse_metrics,
    quality_argv,
    trim_filter,
)

SRC, OUT = Path("/scratch/input.mp4"), Path("/scratch/out/web.mp4")


def output(**extra: Any) -> OutputSpec:
    return OutputSpec.model_validate({"name": "web", "uri": "s3://bkt/web.mp4", "container": "mp4",
                                      "quality": {}, **extra})


def graph(argv: list[str]) -> str:
    return argv[argv.index("-filter_complex") + 1]


# A 720p 8-bit BT.709 source with audio.
SRC_FACTS = InputFacts(duration_seconds=10, width=1280, height=720, video_codec="h264", pixel_format="yuv420p",
                       frame_rate=25, stream_count=2)


def test_reference_is_scaled_to_the_output_and_both_start_at_zero() -> None:
    argv = quality_argv(output(video={"codec": "h264", "resolution": "240p"}), OUT, SRC, SRC_FACTS, 426, 240,
                        ["psnr", "ssim"])
    g = graph(argv)
    assert g.startswith("[0:V:0]format=yuv420p,setpts=PTS-STARTPTS,split=2[d0][d1];")
    assert "[1:V:0]scale=426:240,setsar=1,format=yuv420p,setpts=PTS-STARTPTS,split=2[r0][r1]" in g
    assert g.endswith("[d0][r0]psnr=shortest=1;[d1][r1]ssim=shortest=1")
    assert argv[argv.index("-loglevel") + 1] == "info" and argv[-3:] == ["-f", "null", "-"]
    # Both inputs hardened like every other input: file protocol only, whitelisted demuxers.
    assert argv.count("-protocol_whitelist") == 2 and argv.count("-format_whitelist") == 2
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == [f"file:{OUT}", f"file:{SRC}"]


def test_reference_honours_trim_and_filters() -> None:
    o = output(video={"codec": "h264"}, trim={"startSeconds": 1.5, "durationSeconds": 2},
               filters={"deinterlace": True, "aspect": {"ratio": "1:1"}})
    o = o.model_copy(update={"video": o.video.model_copy(update={"resolution": "240p"})})  # type: ignore[union-attr]
    argv = quality_argv(o, OUT, SRC, SRC_FACTS, 240, 240, ["ssim"])
    assert argv[argv.index(f"file:{OUT}") + 1:].count("-ss") == 0  # the cut is a filter, not a seek
    g = graph(argv)
    # The output's own chain (deinterlace, crop to 1:1, scale), with the cut after the frame-rate filters.
    assert "[1:V:0]bwdif=" in g and ",trim=start=1.4795:duration=2.021,crop=" in g
    assert ",scale=240:240,setsar=1,format=yuv420p,setpts=PTS-STARTPTS,split=1[r0]" in g
    assert "split=1[d0]" in g and g.endswith("[d0][r0]ssim=shortest=1")
    # Another size than planned (should not happen): scaled to what was probed.
    assert ",scale=200:200,format=yuv420p" in graph(quality_argv(o, OUT, SRC, SRC_FACTS, 200, 200, ["ssim"]))


def test_reference_goes_through_the_same_colour_path() -> None:
    hdr = SRC_FACTS.model_copy(update={"pixel_format": "yuv420p10le", "color_transfer": "smpte2084",
                                       "color_primaries": "bt2020", "color_space": "bt2020nc", "hdr": "pq"})
    sdr = graph(quality_argv(output(), OUT, SRC, hdr, 1280, 720, ["psnr"]))
    assert "tonemap=tonemap=mobius" in sdr and sdr.startswith("[0:V:0]format=yuv420p,")
    kept = output(video={"codec": "h265", "dynamicRange": "hdr"})
    g = graph(quality_argv(kept, OUT, SRC, hdr, 1280, 720, ["psnr"]))
    assert "tonemap" not in g and "zscale" not in g and g.startswith("[0:V:0]format=yuv420p10le,")
    assert "[1:V:0]format=yuv420p10le,setpts" in g
    vfr = SRC_FACTS.model_copy(update={"frame_rate": 25.862, "base_frame_rate": 60.0, "variable_frame_rate": True})
    assert "[1:V:0]fps=30,format=yuv420p" in graph(quality_argv(output(), OUT, SRC, vfr, 1280, 720, ["psnr"]))


def test_reference_cut_follows_ffmpeg_output_seek() -> None:
    # Constant-frame-rate sync (mp4/mov, input with more than one stream): the frame nearest the start, ties to
    # the earlier one; otherwise the first frame at or after the start.
    mp4 = output(trim={"startSeconds": 1.5})
    assert trim_filter(mp4, 25, cfr_sync(mp4, 2)) == "trim=start=1.4795"
    assert trim_filter(mp4, 25, cfr_sync(mp4, 1)) == "trim=start=1.5"
    mkv = output(container="mkv", trim={"startSeconds": 1.5, "endSeconds": 3})
    assert trim_filter(mkv, 25, cfr_sync(mkv, 2)) == "trim=start=1.5:duration=1.5"
    assert trim_filter(output(trim={"durationSeconds": 2}), 25, True) == "trim=duration=2"
    assert trim_filter(output(), 25, True) is None


def test_vmaf_uses_libvmaf_and_is_reported_unavailable_without_it() -> None:
    assert graph(quality_argv(output(), OUT, SRC, SRC_FACTS, 64, 64, ["vmaf"])).endswith("[d0][r0]libvmaf")
    assert computable(["psnr", "ssim", "vmaf"], frozenset({"psnr", "ssim"})) == (["psnr", "ssim"], ["vmaf"])
    assert computable(["vmaf"], frozenset({"psnr", "ssim", "libvmaf"})) == (["vmaf"], [])
    with pytest.raises(ValueError, match="no metric"):
        quality_argv(output(), OUT, SRC, SRC_FACTS, 64, 64, [])


STDERR = """\
[Parsed_ssim_8 @ 0x5] SSIM Y:0.857755 (8.469635) U:0.904498 (10.199863) V:0.929192 (11.499157) All:0.877452 (9.1)
[Parsed_psnr_7 @ 0x5] PSNR y:27.752082 u:29.440024 v:27.731900 average:27.988108 min:26.860075 max:28.798468
[Parsed_libvmaf_9 @ 0x5] VMAF score: 71.234000
"""


def test_parse_metrics() -> None:
    m = parse_metrics(STDERR, ["psnr", "ssim", "vmaf"], [])
    assert (m.psnr, m.ssim, m.vmaf, m.unavailable) == (27.9881, 0.8775, 71.234, None)
    m = parse_metrics(STDERR, ["psnr"], ["vmaf"])
    assert (m.psnr, m.ssim, m.unavailable) == (27.9881, None, ["vmaf"])
    identical = "PSNR y:inf u:inf v:inf average:inf min:inf max:inf"
    assert parse_metrics(identical, ["psnr"], []).psnr == 100.0
    with pytest.raises(ValueError, match="no ssim result"):
        parse_metrics("nothing", ["ssim"], [])


def test_reencode_raises_quality() -> None:
    assert boosted(output(video={"codec": "h264", "crf": 30})).video.crf == 24  # type: ignore[union-attr]
    assert boosted(output(video={"codec": "h264", "crf": 3})).video.crf == 0  # type: ignore[union-attr]
    assert boosted(output(video={"codec": "h264", "bitrate": "2M"})).video.bitrate == "3000k"  # type: ignore[union-attr]
    assert boosted(output(video={"codec": "h264", "bitrate": "20k"})).video.bitrate == "30k"  # type: ignore[union-attr]
    plain = boosted(output(container="webm"))
    assert plain.video is not None and (plain.video.codec, plain.video.crf) == ("vp9", 25)
    assert boosted(output()).video.crf == 17  # type: ignore[union-attr]


def test_quality_below_threshold_is_permanent() -> None:
    err = QualityBelowThreshold("psnr 20 is below 30")
    assert err.reason == "QualityBelowThreshold" and err.exit_code in ExitCode.PERMANENT


def test_quality_rules() -> None:
    assert QualitySpec().metrics == ["psnr", "ssim"]
    with pytest.raises(ValidationError, match="the gate's metric must be one of metrics"):
        QualitySpec.model_validate({"metrics": ["psnr"], "gate": {"metric": "ssim", "min": 0.9}})
    with pytest.raises(ValidationError, match="an ssim gate's min is at most 1"):
        QualitySpec.model_validate({"gate": {"metric": "ssim", "min": 40}})
    with pytest.raises(ValidationError, match="metrics must be unique"):
        QualitySpec.model_validate({"metrics": ["psnr", "psnr"]})
    with pytest.raises(ValidationError, match="quality is only for file outputs with re-encoded video"):
        output(video={"codec": "copy"})
    with pytest.raises(ValidationError, match="quality is only for file outputs with re-encoded video"):
        OutputSpec.model_validate({"name": "t", "uri": "s3://bkt/t/", "type": "thumbnails",
                                   "thumbnails": {"times": [1]}, "quality": {}})
    with pytest.raises(ValidationError, match="quality is only for file outputs with re-encoded video"):
        output(container="m4a")
    with pytest.raises(ValidationError, match=r"quality cannot be measured with video\.fps"):
        output(video={"codec": "h264", "fps": 12})


# ---- hls/dash: every rendition against the source -----------------------------------------------------


def package(kind: str = "hls", **extra: Any) -> OutputSpec:
    return OutputSpec.model_validate({"name": "pkg", "uri": "s3://bkt/pkg/", "type": kind, "quality": {},
                                      "streaming": {"renditions": [{"resolution": "240p", "bitrate": "400k"},
                                                                   {"resolution": "720p", "bitrate": "2800k"}]},
                                      **extra})


FACTS = InputFacts(duration_seconds=6, width=1280, height=720, frame_rate=25, video_codec="h264", stream_count=1)


def test_packages_accept_quality_but_not_reencode() -> None:
    assert package().quality is not None and package("dash").quality is not None
    assert package(quality={"gate": {"metric": "psnr", "min": 30}}).quality.gate is not None  # type: ignore[union-attr]
    for kind in ("hls", "dash"):
        with pytest.raises(ValidationError, match="onFail reencode is only for file outputs"):
            package(kind, quality={"gate": {"metric": "psnr", "min": 30, "onFail": "reencode"}})
    assert output(quality={"gate": {"metric": "psnr", "min": 30, "onFail": "reencode"}}).quality is not None


def test_package_reference_is_cut_like_a_cfr_muxer() -> None:
    # hls/dash muxers sync at a constant frame rate, whatever the input's stream count.
    o = package(trim={"startSeconds": 1.5, "durationSeconds": 3})
    assert cfr_sync(o, 1) and cfr_sync(package("dash"), 1)
    rendition = Path("/scratch/out/.quality-pkg-240p.mp4")
    facts = SRC_FACTS.model_copy(update={"stream_count": 1})
    argv = quality_argv(o, rendition, SRC, facts, 426, 240, ["psnr"])
    assert "[1:V:0]trim=start=1.4795:duration=3.021,scale=426:240,format=yuv420p,setpts" in graph(argv)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-i"] == [f"file:{rendition}", f"file:{SRC}"]
    assert argv.count("-protocol_whitelist") == 2 and argv[argv.index("-protocol_whitelist") + 1] == "file"
    whitelist = argv[argv.index("-format_whitelist") + 1].split(",")
    assert "mov" in whitelist and "hls" not in whitelist and "dash" not in whitelist  # no playlist is read


def test_rendition_files_are_joined_in_segment_order(tmp_path: Path) -> None:
    hls, dash = package(), package("dash")
    rungs = ladder(hls.streaming, FACTS)
    assert [r.name for r in rungs] == ["720p", "240p"]
    assert [rendition_key(hls, i, r) for i, r in enumerate(rungs)] == ["720p", "240p"]
    assert [rendition_key(dash, i, r) for i, r in enumerate(rungs)] == ["0", "1"]
    for name, data in {"init_240p.mp4": b"I", "seg_240p_00010.m4s": b"c", "seg_240p_00002.m4s": b"b",
                       "seg_240p_00000.m4s": b"a", "seg_1240p_00000.m4s": b"x", "stream_240p.m3u8": b"#"}.items():
        (tmp_path / name).write_bytes(data)
    parts = rendition_parts(tmp_path, "240p")
    assert [p.name for p in parts] == ["init_240p.mp4", "seg_240p_00000.m4s", "seg_240p_00002.m4s",
                                       "seg_240p_00010.m4s"]
    assert join_rendition(parts, tmp_path / "joined.mp4").read_bytes() == b"Iabc"
    with pytest.raises(FileNotFoundError, match="rendition 720p"):
        rendition_parts(tmp_path, "720p")


def test_rendition_metrics_go_into_status_renditions() -> None:
    base = OutputResult.model_validate({"name": "pkg", "uri": "s3://bkt/pkg/", "type": "hls", "renditions": [
        {"width": 1280, "height": 720}, {"width": 426, "height": 240}]})
    hi, lo = QualityMetrics(psnr=45.0, ssim=0.99), QualityMetrics(psnr=27.0, ssim=0.86)
    result = with_quality(base, QualityOutcome(None, renditions=(hi, lo))).wire()
    assert [r["metrics"] for r in result["renditions"]] == [{"psnr": 45.0, "ssim": 0.99}, {"psnr": 27.0, "ssim": 0.86}]
    assert "metrics" not in result and "reencoded" not in result
