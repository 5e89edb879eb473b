"""The media toolbox's argv builders, ladders, storyboard, loudness parsing and input limits: pure checks, plus
real ffmpeg runs on a tiny generated clip for each kind of output."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from transkube_api.models import InputFacts, OutputSpec, TranscodeJobSpec
from transkube_worker.errors import InvalidInput, Unsupported
from transkube_worker.ffmpeg_args import (
    INPUT_DEMUXERS,
    Limits,
    LoudnormMeasurement,
    audio_args,
    build_argv,
    output_paths,
    trim_args,
)
from transkube_worker.limits import InputLimits, check_facts, check_size
from transkube_worker.media_args import (
    auto_ladder,
    ladder,
    loudnorm_analysis_argv,
    parse_loudnorm,
    poster_argv,
    sprite_argv,
    sprite_layout,
    storyboard_vtt,
    stream_argv,
    thumbnails_argv,
)
from transkube_worker.playability import aspect_filters
from transkube_worker.probe import parse_input_facts, rotation_of
from transkube_worker.steps import analysis_steps, media_steps

IN = Path("/scratch/in.mp4")
HD = InputFacts(duration_seconds=10.0, width=1920, height=1080, video_codec="h264", audio_codec="aac",
                frame_rate=25.0, audio_streams=1)


def output(**fields: Any) -> OutputSpec:
    return OutputSpec.model_validate({"name": "o", **fields})


def spec_of(*outputs: dict[str, Any]) -> TranscodeJobSpec:
    return TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp4"}, "outputs": [
        {"name": f"o{i}", **o} for i, o in enumerate(outputs)]})


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---- ladders ------------------------------------------------------------------------------------------------


def test_auto_ladder_never_upscales_and_caps_the_count() -> None:
    assert [(r.height, r.bitrate) for r in auto_ladder(HD, 4, "h264")] == [
        (1080, "5000k"), (720, "2800k"), (480, "1400k"), (360, "800k")]
    assert [r.height for r in auto_ladder(HD, 8, "h264")] == [1080, 720, 480, 360, 240]
    assert [r.bitrate for r in auto_ladder(HD, 2, "h265")] == ["3000k", "1680k"]
    small = InputFacts(width=300, height=200)
    assert [(r.height, r.bitrate) for r in auto_ladder(small, 4, "h264")] == [(200, "300k")]
    portrait = auto_ladder(InputFacts(width=720, height=1280), 2, "h264")
    assert [(r.height, r.portrait) for r in portrait] == [(720, True), (480, True)]


def test_explicit_ladder_is_sorted_highest_first() -> None:
    o = output(type="hls", uri="s3://bkt/h/", streaming={"renditions": [
        {"height": 360, "bitrate": "800k"}, {"resolution": "720p", "bitrate": "3M"}]})
    assert [(r.height, r.bitrate) for r in ladder(o.streaming, HD)] == [(720, "3M"), (360, "800k")]


def test_ladder_without_video_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="needs video"):
        ladder(None, InputFacts(duration_seconds=3, audio_codec="aac"))


def test_hls_argv_splits_once_and_aligns_keyframes() -> None:
    o = output(type="hls", uri="s3://bkt/h/", streaming={"segmentSeconds": 6, "autoLadder": {"maxRenditions": 3}})
    argv = stream_argv(o, IN, Path("/scratch/out/o"), HD)
    graph = value(argv, "-filter_complex")
    assert graph.startswith("[0:V:0]split=3[s0][s1][s2];")
    # HD facts without a pixel format: each rendition is made yuv420p explicitly.
    assert "[s0]scale=1920:1080,setdar=1920/1080,format=yuv420p[v0]" in graph
    assert "[s2]scale=854:480,setdar=1920/1080,format=yuv420p[v2]" in graph
    assert argv.count("-filter_complex") == 1 and argv.count("-i") == 1  # one decode
    assert value(argv, "-force_key_frames") == "expr:gte(t,n_forced*6)"
    assert (value(argv, "-g"), value(argv, "-keyint_min"), value(argv, "-sc_threshold")) == ("150", "150", "0")
    assert (value(argv, "-b:v:0"), value(argv, "-maxrate:v:0"), value(argv, "-bufsize:v:0")) == (
        "5000k", "7500k", "10000k")
    assert value(argv, "-var_stream_map") == ("v:0,agroup:audio,name:1080p v:1,agroup:audio,name:720p "
                                              "v:2,agroup:audio,name:480p a:0,agroup:audio,name:audio,default:yes")
    assert (value(argv, "-hls_segment_type"), value(argv, "-hls_time"), value(argv, "-f")) == ("fmp4", "6", "hls")
    assert argv[-1] == "file:/scratch/out/o/stream_%v.m3u8"
    assert value(argv, "-hls_segment_filename") == "file:/scratch/out/o/seg_%v_%05d.m4s"


def test_dash_argv_with_hls_playlists_and_no_audio() -> None:
    o = output(type="dash", uri="s3://bkt/d/", audio={"codec": "none"},
               streaming={"codec": "h265", "alsoHls": True, "renditions": [{"height": 480, "bitrate": "1M"}]})
    argv = stream_argv(o, IN, Path("/d"), HD)
    assert (value(argv, "-c:v"), value(argv, "-tag:v")) == ("libx265", "hvc1")
    assert "-an" in argv and "0:a:0?" not in argv
    assert value(argv, "-adaptation_sets") == "id=0,streams=v"
    assert (value(argv, "-hls_playlist"), value(argv, "-hls_master_name")) == ("1", "master.m3u8")
    assert argv[-1] == "file:/d/manifest.mpd"


# ---- images -------------------------------------------------------------------------------------------------


def test_thumbnails_at_times_seek_each_input() -> None:
    o = output(type="thumbnails", uri="s3://bkt/t/", thumbnails={"times": [1, 2.5], "width": 320})
    argv = thumbnails_argv(o, IN, Path("/t"), HD)
    assert argv.count("-i") == 2 and value(argv, "-ss") == "1"
    assert [a for a in argv if a.startswith("file:/t/")] == ["file:/t/thumb-00001.jpg", "file:/t/thumb-00002.jpg"]
    assert value(argv, "-vf").startswith("scale=320:180,setsar=1,zscale=")  # to JPEG's BT.601 full range
    with pytest.raises(InvalidInput, match="past the input's end"):
        thumbnails_argv(output(type="thumbnails", uri="s3://bkt/t/", thumbnails={"times": [10]}), IN, Path("/t"), HD)


def test_thumbnails_every_n_seconds() -> None:
    o = output(type="thumbnails", uri="s3://bkt/t/", thumbnails={"intervalSeconds": 2.5, "format": "webp"})
    argv = thumbnails_argv(o, IN, Path("/t"), HD)
    assert value(argv, "-vf") == ("fps=1/2.5,zscale=pin=bt709:tin=bt709:min=bt709:rin=tv:p=bt709:t=bt709:"
                                  "m=smpte170m:r=tv,format=yuv420p")  # WebP decoders assume BT.601
    assert value(argv, "-c:v") == "libwebp" and value(argv, "-pix_fmt") == "yuv420p"
    assert argv[-1] == "file:/t/thumb-%05d.webp"


def test_sprite_layout_and_storyboard() -> None:
    o = output(type="sprite", uri="s3://bkt/s/", sprite={"intervalSeconds": 3, "columns": 3, "tileWidth": 160})
    facts = InputFacts(duration_seconds=10.0, width=640, height=360)
    layout = sprite_layout(o, facts)
    assert (layout.tiles, layout.columns, layout.rows, layout.tile_width, layout.tile_height) == (4, 3, 2, 160, 90)
    argv = sprite_argv(o, IN, Path("/s"), facts)
    # SD, untagged: BT.601 already, only the range changes for JPEG.
    assert value(argv, "-vf") == ("fps=1/3,scale=160:90,setsar=1,zscale=pin=bt709:tin=bt709:min=smpte170m:rin=tv:"
                                  "p=bt709:t=bt709:m=smpte170m:r=pc,format=yuvj420p,tile=3x2")
    vtt = storyboard_vtt(layout)
    assert vtt.splitlines()[:4] == ["WEBVTT", "", "00:00:00.000 --> 00:00:03.000", "sprite.jpg#xywh=0,0,160,90"]
    assert "00:00:09.000 --> 00:00:10.000\nsprite.jpg#xywh=0,90,160,90" in vtt
    with pytest.raises(Unsupported, match=r"raise sprite\.intervalSeconds"):
        sprite_layout(output(type="sprite", uri="s3://bkt/s/", sprite={"intervalSeconds": 0.1}),
                      InputFacts(duration_seconds=3600, width=640, height=360))


def test_poster_defaults_to_a_tenth_of_the_duration() -> None:
    argv = poster_argv(output(type="poster", uri="s3://bkt/p.jpg"), IN, Path("/p.jpg"), HD)
    assert value(argv, "-ss") == "1" and value(argv, "-frames:v") == "1" and argv[-1] == "file:/p.jpg"
    with pytest.raises(InvalidInput):
        poster_argv(output(type="poster", uri="s3://bkt/p.jpg", poster={"timeSeconds": 11}), IN, Path("/p"), HD)


# ---- audio, edits, filters ------------------------------------------------------------------------------


def test_loudness_two_pass_and_downmix() -> None:
    o = output(uri="s3://bkt/a.m4a", container="m4a",
               audio={"codec": "aac", "channels": 2, "track": 1, "loudness": {"integratedLufs": -16}},
               trim={"startSeconds": 2})
    first = loudnorm_analysis_argv(o, IN)
    assert value(first, "-map") == "0:a:1" and value(first, "-ss") == "2"
    assert value(first, "-af") == "aformat=channel_layouts=stereo,loudnorm=I=-16:TP=-1:LRA=7:print_format=json"
    assert first[-3:] == ["-f", "null", "-"]
    measured = LoudnormMeasurement(-30.5, -12.0, 4.2, -41.0, 0.3)
    second = audio_args(o, measured)
    assert value(second, "-af") == ("aformat=channel_layouts=stereo,loudnorm=I=-16:TP=-1:LRA=7:measured_I=-30.50:"
                                    "measured_TP=-12.00:measured_LRA=4.20:measured_thresh=-41.00:offset=0.30:"
                                    "linear=true:print_format=none")
    assert value(second, "-ar") == "48000"


def test_parse_loudnorm() -> None:
    stderr = ('[Parsed_loudnorm_1 @ 0x1] \n{\n\t"input_i" : "-27.61",\n\t"input_tp" : "-4.47",\n\t"input_lra" : '
              '"18.06",\n\t"input_thresh" : "-39.20",\n\t"output_i" : "-16.58",\n\t"target_offset" : "0.58"\n}\n')
    assert parse_loudnorm(stderr) == LoudnormMeasurement(-27.61, -4.47, 18.06, -39.20, 0.58)
    with pytest.raises(InvalidInput, match="silent"):
        parse_loudnorm(stderr.replace('"-27.61"', '"-inf"'))
    with pytest.raises(InvalidInput):
        parse_loudnorm("nothing here")


def test_trim_and_filters_in_the_file_argv() -> None:
    spec = spec_of({"uri": "s3://bkt/o.mp4", "container": "mp4", "video": {"codec": "h264", "resolution": "480p"},
                    "trim": {"startSeconds": 1.5, "endSeconds": 4},
                    "filters": {"deinterlace": True, "denoise": "strong", "aspect": {"ratio": "1:1"}}})
    argv = build_argv(spec, IN, output_paths(spec, Path("/o")), HD, "cpu")
    assert (value(argv, "-ss"), value(argv, "-t")) == ("1.5", "2.5")
    assert argv.index("-ss") > argv.index("-i") + 1  # an output option: frame-accurate
    vf = value(argv, "-vf").split(",")
    assert vf[0].startswith("bwdif") and vf[1] == "hqdn3d=8:6:12:9" and vf[2].startswith("crop=")
    assert vf[-3:] == ["scale=480:480", "setsar=1", "format=yuv420p"]  # 480p of the 1080x1080 crop
    assert trim_args(output(uri="s3://bkt/o.mp4", container="mp4", trim={"durationSeconds": 3})) == ["-t", "3"]
    assert aspect_filters(spec.outputs[0].filters.aspect)[0] == (  # type: ignore[union-attr]
        "crop=w='trunc(min(iw,ih*1/1)/2)*2':h='trunc(min(ih,iw*1/1)/2)*2'")


def test_watermark_is_a_second_hardened_input_and_a_complex_graph() -> None:
    spec = spec_of({"uri": "s3://bkt/o.mp4", "container": "mp4",
                    "filters": {"watermark": {"uri": "s3://bkt/logo.png", "position": "top-left", "margin": 4}}})
    argv = build_argv(spec, IN, output_paths(spec, Path("/o")), HD, "cpu", assets={"o0": Path("/s/mark.png")})
    assert argv.count("-i") == 2 and value(argv, "-map") == "[wm1]"
    second = argv.index("file:/s/mark.png")
    assert argv[second - 4:second - 1] == ["png_pipe,jpeg_pipe,webp_pipe,gif,bmp_pipe", "-protocol_whitelist", "file"]
    graph = value(argv, "-filter_complex")
    assert "[1:v]format=rgba,colorchannelmixer=aa=0.8" in graph and "overlay=x='4':y='4'" in graph
    assert "-vf" not in argv
    with pytest.raises(ValueError, match="no local watermark"):
        build_argv(spec, IN, output_paths(spec, Path("/o")), HD, "cpu")


def test_inputs_are_hardened() -> None:
    spec = spec_of({"uri": "s3://bkt/o.mp4", "container": "mp4"})
    argv = build_argv(spec, IN, output_paths(spec, Path("/o")), HD, "cpu",
                      limits=Limits(max_pixels=1000, max_output_bytes=5000))
    assert value(argv, "-max_pixels") == "1000" and value(argv, "-fs") == "5000"
    assert value(argv, "-format_whitelist") == ",".join(INPUT_DEMUXERS)
    assert not {"hls", "dash", "concat", "image2", "ffmetadata"} & set(INPUT_DEMUXERS)


def test_steps_order_and_missing_track() -> None:
    spec = spec_of({"uri": "s3://bkt/o.mp4", "container": "mp4", "audio": {"codec": "aac", "loudness": {}}},
                   {"uri": "s3://bkt/h/", "type": "hls"}, {"uri": "s3://bkt/p.jpg", "type": "poster"})
    paths = output_paths(spec, Path("/o"))
    assert paths == {"o0": Path("/o/o0.mp4"), "o1": Path("/o/o1"), "o2": Path("/o/o2.jpg")}
    assert [s.name for s in analysis_steps(spec, IN, HD)] == ["o0"]
    assert [s.name for s in media_steps(spec, IN, paths, HD, "cpu")] == ["files", "o1", "o2"]
    bad = spec_of({"uri": "s3://bkt/o.mp4", "container": "mp4", "audio": {"codec": "aac", "track": 1}})
    with pytest.raises(InvalidInput, match="audio track 1"):
        media_steps(bad, IN, output_paths(bad, Path("/o")), HD, "cpu")


# ---- probe facts and limits ---------------------------------------------------------------------------------


def test_rotation_swaps_the_displayed_size() -> None:
    data = {"streams": [{"codec_type": "video", "codec_name": "h264", "width": 320, "height": 180,
                         "side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]},
                        {"codec_type": "audio", "codec_name": "aac"}, {"codec_type": "audio", "codec_name": "ac3"}],
            "format": {"duration": "2.0"}}
    facts = parse_input_facts(data)
    assert (facts.width, facts.height, facts.rotation, facts.audio_streams, facts.stream_count) == (180, 320, 270, 2, 3)
    assert rotation_of({"tags": {"rotate": "180"}}) == 180 and rotation_of({}) is None


@pytest.mark.parametrize(("facts", "reason"), [
    (InputFacts(duration_seconds=90_000), "DurationLimitExceeded"),
    (InputFacts(width=8192, height=4352), "ResolutionLimitExceeded"),
    (InputFacts(stream_count=33), "TooManyStreams"),
])
def test_limits(facts: InputFacts, reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_facts(facts, InputLimits())
    assert info.value.reason == reason and info.value.exit_code == 10
    check_facts(InputFacts(duration_seconds=3600, width=7680, height=4320, stream_count=32), InputLimits())


def test_size_limit_and_env() -> None:
    limits = InputLimits.from_env({"TRANSKUBE_MAX_INPUT_BYTES": "100", "TRANSKUBE_MAX_STREAMS": "4"})
    assert (limits.max_input_bytes, limits.max_streams, limits.max_duration_seconds) == (100, 4, 86400)
    check_size(100, limits)
    with pytest.raises(InvalidInput) as info:
        check_size(101, limits)
    assert info.value.reason == "InputTooLarge"
    check_size(10**12, InputLimits())  # 0: no size limit by default


# ---- real ffmpeg ------------------------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], check=True, capture_output=True, text=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


@needs_ffmpeg
@pytest.mark.parametrize(("container", "codec", "name"), [
    ("m4a", "aac", "aac"), ("mp3", "mp3", "mp3"), ("ogg", "opus", "opus"), ("ogg", "flac", "flac"),
    ("flac", "flac", "flac"),
])
def test_real_ffmpeg_audio_only_containers(tmp_path: Path, clip: Path, container: str, codec: str,
                                           name: str) -> None:
    spec = spec_of({"uri": f"s3://bkt/o.{container}", "container": container, "audio": {"codec": codec}})
    outputs = output_paths(spec, tmp_path)
    facts = InputFacts(duration_seconds=3.0, width=320, height=180, video_codec="h264", audio_codec="aac")
    proc = subprocess.run(build_argv(spec, clip, outputs, facts, "cpu"), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    streams = _probe(outputs["o0"])["streams"]
    assert [(s["codec_type"], s["codec_name"]) for s in streams] == [("audio", name)]


@needs_ffmpeg
def test_real_ffmpeg_hls_package_plays(tmp_path: Path, clip: Path) -> None:
    o = output(type="hls", uri="s3://bkt/h/", streaming={"segmentSeconds": 1, "preset": "ultrafast"})
    facts = InputFacts(duration_seconds=3.0, width=320, height=180, video_codec="h264", audio_codec="aac",
                       frame_rate=25.0)
    subprocess.run(stream_argv(o, clip, tmp_path, facts), check=True, capture_output=True, timeout=120)
    variant = (tmp_path / "stream_180p.m3u8").read_text()
    assert re.findall(r"#EXTINF:([0-9.]+)", variant) == ["1.000000"] * 3
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "master.m3u8"), "-f", "null", "-"], check=True,
                   timeout=120)
