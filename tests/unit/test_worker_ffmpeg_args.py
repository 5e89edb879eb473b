"""The ffmpeg argv builder: pure checks of every mapping, plus real ffmpeg runs on a tiny generated clip."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from transkube_api.constants import CATEGORY_BY_REASON, ExitCode
from transkube_api.models import CONTAINER_CODECS, InputFacts, MasteringDisplay, TranscodeJobSpec
from transkube_worker.errors import InvalidInput
from transkube_worker.ffmpeg_args import (
    GLOBAL_ARGS,
    NVENC_PRESETS,
    SVT_AV1_PRESETS,
    VP9_CPU_USED,
    bitrate_bits,
    build_argv,
    format_fps,
    output_paths,
)

IN = Path("/scratch/in put.mov")  # a space: harmless in an argv list, fatal in a shell string
# A 1080p 8-bit 4:2:0 input (untagged HD: BT.709), so that outputs need no colour filters.
FACTS = InputFacts(duration_seconds=10.0, width=1920, height=1080, video_codec="h264", audio_codec="aac",
                   pixel_format="yuv420p")


def make_spec(*outputs: dict[str, Any]) -> TranscodeJobSpec:
    outs = []
    for i, out in enumerate(outputs):
        container = out.get("container", "mp4")
        outs.append({"name": f"o{i}", "uri": f"s3://bucket/out/o{i}.{container}", "container": container, **out})
    return TranscodeJobSpec.model_validate({"input": {"uri": "s3://bucket/in/in.mov"}, "outputs": outs})


def argv_for(*outputs: dict[str, Any], accelerator: str = "cpu", facts: InputFacts = FACTS) -> list[str]:
    spec = make_spec(*outputs)
    return build_argv(spec, IN, output_paths(spec, Path("/scratch/out")), facts, accelerator)  # type: ignore[arg-type]


def output_section(argv: list[str], index: int = 0) -> list[str]:
    """The options of output `index`: from after the input (or the previous output file) to its file."""
    start = argv.index("-i") + 2
    files = [i for i, a in enumerate(argv) if a.startswith("file:/scratch/out/")]
    begin = start if index == 0 else files[index - 1] + 1
    return argv[begin:files[index] + 1]


def pairs(section: list[str]) -> dict[str, str]:
    """Option -> value for the flag-with-value options of a section (later ones win)."""
    out = {}
    for i, token in enumerate(section[:-1]):
        if token.startswith("-") and not section[i + 1].startswith("-"):
            out[token] = section[i + 1]
    return out


# ---- structure -------------------------------------------------------------------------------------------


def test_global_and_input_options_come_first_and_in_order() -> None:
    argv = argv_for({"container": "mp4"})
    assert argv[0] == "ffmpeg"
    assert argv[1:1 + len(GLOBAL_ARGS)] == list(GLOBAL_ARGS)
    assert GLOBAL_ARGS == ("-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "error")
    i = argv.index("-i")
    assert argv[i - 2:i] == ["-protocol_whitelist", "file"]  # an input option: must precede -i
    assert argv[i + 1] == "file:/scratch/in put.mov"
    assert argv[-1] == "file:/scratch/out/o0.mp4"
    assert argv[-3:-1] == ["-f", "mp4"]


def test_argv_is_a_list_of_plain_strings_never_a_shell_line() -> None:
    argv = argv_for({"container": "mp4", "video": {"codec": "h264", "crf": 20}}, {"container": "webm"})
    assert isinstance(argv, list)
    assert all(isinstance(a, str) for a in argv)
    assert not any(a in (";", "|", "&&", "sh", "-c") for a in argv)
    assert "file:/scratch/in put.mov" in argv  # the space stays inside one token


def test_paths_are_absolute_file_urls() -> None:
    spec = make_spec({"container": "mkv"})
    argv = build_argv(spec, Path("relative/in.mp4"), {"o0": Path("out/o0.mkv")}, FACTS, "cpu")
    files = [a for a in argv if a.startswith("file:")]
    assert len(files) == 2
    assert all(Path(f.removeprefix("file:")).is_absolute() for f in files)


def test_every_output_gets_its_own_maps_and_codecs_in_one_run() -> None:
    argv = argv_for({"container": "mp4"}, {"container": "webm"}, {"container": "mkv", "video": {"codec": "none"}})
    assert argv.count("-i") == 1  # decode once
    first, second, third = (output_section(argv, i) for i in range(3))
    assert first[:4] == ["-map", "0:V:0?", "-map", "0:a:0?"]
    assert second[:4] == ["-map", "0:V:0?", "-map", "0:a:0?"]
    assert third[:2] == ["-map", "0:a:0?"] and "0:V:0?" not in third and "-vn" in third
    assert pairs(first)["-c:v"] == "libx264" and pairs(first)["-c:a"] == "aac"
    assert pairs(second)["-c:v"] == "libvpx-vp9" and pairs(second)["-c:a"] == "libopus"
    assert pairs(third)["-c:a"] == "aac"


def test_output_paths_are_named_after_outputs() -> None:
    spec = make_spec({"container": "mp4"}, {"container": "webm"}, {"container": "mkv"}, {"container": "mov"})
    assert output_paths(spec, Path("/x")) == {"o0": Path("/x/o0.mp4"), "o1": Path("/x/o1.webm"),
                                              "o2": Path("/x/o2.mkv"), "o3": Path("/x/o3.mov")}


def test_missing_output_path_is_an_error() -> None:
    with pytest.raises(ValueError, match="no local path"):
        build_argv(make_spec({"container": "mp4"}), IN, {}, FACTS, "cpu")


AUDIO_ONLY = InputFacts(duration_seconds=3, audio_codec="mp3", audio_streams=1)
VIDEO_ONLY = InputFacts(duration_seconds=3, video_codec="h264", width=640, height=360, audio_streams=0)


@pytest.mark.parametrize(("output", "facts", "reason"), [
    ({"container": "mkv", "audio": {"codec": "none"}}, AUDIO_ONLY, "NoVideoStream"),
    ({"container": "mp4"}, AUDIO_ONLY, "NoVideoStream"),  # the container's default video codec wants video too
    ({"container": "mkv", "video": {"codec": "copy"}}, AUDIO_ONLY, "NoVideoStream"),
    ({"container": "mkv", "video": {"codec": "none"}}, VIDEO_ONLY, "NoAudioStream"),
    ({"container": "m4a"}, VIDEO_ONLY, "NoAudioStream"),
    ({"container": "mkv", "audio": {"codec": "aac", "track": 1}},
     FACTS.model_copy(update={"audio_streams": 1}), "AudioTrackNotFound"),
    ({"container": "mkv", "audio": {"codec": "aac", "track": 0}}, VIDEO_ONLY, "AudioTrackNotFound"),
])
def test_output_the_input_cannot_feed_fails_with_its_reason(output: dict[str, Any], facts: InputFacts,
                                                            reason: str) -> None:
    with pytest.raises(InvalidInput) as info:
        argv_for(output, facts=facts)
    assert info.value.reason == reason and info.value.exit_code == ExitCode.INVALID_INPUT  # permanent
    assert CATEGORY_BY_REASON[reason] == "BadInput"


def test_missing_optional_streams_are_fine() -> None:
    argv_for({"container": "mkv"}, facts=VIDEO_ONLY)  # no audio: a silent video
    argv_for({"container": "mp4", "audio": {"codec": "aac"}}, facts=VIDEO_ONLY)
    argv_for({"container": "m4a"}, facts=AUDIO_ONLY)
    argv_for({"container": "mkv", "audio": {"codec": "aac", "track": 1}},
             facts=FACTS.model_copy(update={"audio_streams": 2}))


# ---- containers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("container", "muxer", "faststart"), [
    ("mp4", "mp4", True), ("mov", "mov", True), ("mkv", "matroska", False), ("webm", "webm", False)])
def test_container_muxer_and_faststart(container: str, muxer: str, faststart: bool) -> None:
    section = output_section(argv_for({"container": container}))
    assert section[-3:-1] == ["-f", muxer]
    assert (pairs(section).get("-movflags") == "+faststart") is faststart


@pytest.mark.parametrize(("container", "video", "audio"), [
    ("mp4", "libx264", "aac"), ("mov", "libx264", "aac"), ("mkv", "libx264", "aac"), ("webm", "libvpx-vp9", "libopus")])
def test_unset_codecs_are_container_defaults(container: str, video: str, audio: str) -> None:
    p = pairs(output_section(argv_for({"container": container})))
    assert (p["-c:v"], p["-c:a"]) == (video, audio)


# ---- video, CPU ------------------------------------------------------------------------------------------


def test_h264_crf_preset() -> None:
    p = pairs(output_section(argv_for({"video": {"codec": "h264", "crf": 21, "preset": "slow"}})))
    assert p["-c:v"] == "libx264" and p["-crf"] == "21" and p["-preset"] == "slow"
    assert "-b:v" not in p


def test_unset_preset_means_medium_everywhere() -> None:
    assert pairs(output_section(argv_for({"video": {"codec": "h264"}})))["-preset"] == "medium"
    vp9 = pairs(output_section(argv_for({"container": "webm", "video": {"codec": "vp9"}})))
    assert vp9["-cpu-used"] == str(VP9_CPU_USED["medium"])
    av1 = pairs(output_section(argv_for({"container": "webm", "video": {"codec": "av1"}})))
    assert av1["-preset"] == str(SVT_AV1_PRESETS["medium"])


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_bitrate_is_constrained_vbr_for_h264_h265(codec: str) -> None:
    p = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": codec, "bitrate": "2500k"}})))
    assert p["-b:v"] == "2500k" and p["-maxrate"] == "3750k" and p["-bufsize"] == "5000k"
    p = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": codec, "bitrate": "1.5M"}})))
    assert p["-b:v"] == "1.5M" and p["-maxrate"] == "2250k" and p["-bufsize"] == "3000k"


@pytest.mark.parametrize("container", ["mp4", "mov"])
def test_h265_in_mp4_mov_is_tagged_hvc1(container: str) -> None:
    p = pairs(output_section(argv_for({"container": container, "video": {"codec": "h265", "crf": 26}})))
    assert p["-c:v"] == "libx265" and p["-tag:v"] == "hvc1" and p["-crf"] == "26"
    assert p["-x265-params"] == "log-level=error"


def test_h265_in_mkv_is_not_tagged() -> None:
    assert "-tag:v" not in output_section(argv_for({"container": "mkv", "video": {"codec": "h265"}}))


def test_vp9_crf_needs_zero_bitrate_and_maps_presets() -> None:
    p = pairs(output_section(argv_for({"container": "webm", "video": {"codec": "vp9", "crf": 33, "preset": "fast"}})))
    assert p["-c:v"] == "libvpx-vp9" and p["-crf"] == "33" and p["-b:v"] == "0"
    assert p["-deadline"] == "good" and p["-cpu-used"] == "3" and p["-row-mt"] == "1"
    p = pairs(output_section(argv_for({"container": "webm", "video": {"codec": "vp9", "bitrate": "1M"}})))
    assert p["-b:v"] == "1M" and "-crf" not in p and "-maxrate" not in p


def test_vp9_presets_are_monotonic() -> None:
    order = ["veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]
    values = [VP9_CPU_USED[p] for p in order]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 5


def test_av1_uses_svt_with_mapped_presets() -> None:
    p = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": "av1", "crf": 40,
                                                                     "preset": "veryslow"}})))
    assert p["-c:v"] == "libsvtav1" and p["-crf"] == "40" and p["-preset"] == "2"
    assert SVT_AV1_PRESETS["ultrafast"] == 12
    order = ["veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]
    values = [SVT_AV1_PRESETS[p] for p in order]
    assert values == sorted(values) and all(0 <= v <= 13 for v in values)


def test_copy_and_none() -> None:
    section = output_section(argv_for({"container": "mkv", "video": {"codec": "copy"}, "audio": {"codec": "copy"}}))
    assert pairs(section)["-c:v"] == "copy" and pairs(section)["-c:a"] == "copy"
    section = output_section(argv_for({"container": "mkv", "video": {"codec": "none"}}))
    assert "-vn" in section and "-c:v" not in section
    section = output_section(argv_for({"container": "mkv", "audio": {"codec": "none"}}))
    assert "-an" in section and "-c:a" not in section and "0:a:0?" not in section


# ---- scaling, fps, pixel format --------------------------------------------------------------------------


@pytest.mark.parametrize(("video", "expected"), [
    ({"width": 1280, "height": 720}, "scale=1280:720,setsar=1"),
    ({"width": 1280}, "scale=1280:720,setsar=1"),
    ({"height": 720}, "scale=1280:720,setsar=1"),
    ({"resolution": "480p"}, "scale=854:480,setsar=1"),
    ({"resolution": "2160p"}, "scale=3840:2160,setsar=1"),
    ({"width": 640, "height": 640}, "scale=640:640,setsar=1"),  # both given: exactly that, square pixels
])
def test_scaling(video: dict[str, Any], expected: str) -> None:
    assert pairs(output_section(argv_for({"video": {"codec": "h264", **video}})))["-vf"] == expected


def test_no_scaling_without_size() -> None:
    assert "-vf" not in output_section(argv_for({"video": {"codec": "h264", "crf": 20}}))


@pytest.mark.parametrize(("fps", "expected"), [(30, "30"), (29.97, "30000/1001"), (23.976, "24000/1001"),
                                               (59.94, "60000/1001"), (12.5, "12.5"), (25.0, "25")])
def test_fps(fps: float, expected: str) -> None:
    assert format_fps(fps) == expected
    assert pairs(output_section(argv_for({"video": {"codec": "h264", "fps": fps}})))["-r"] == expected


def test_pixel_format() -> None:
    p = pairs(output_section(argv_for({"video": {"codec": "h265", "pixel_format": "yuv420p10le"}})))
    assert p["-pix_fmt"] == "yuv420p10le"


def test_bitrate_bits() -> None:
    assert bitrate_bits("2500k") == 2_500_000
    assert bitrate_bits("4M") == 4_000_000
    assert bitrate_bits("1.5M") == 1_500_000


# ---- audio -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("container", "codec", "encoder"), [
    ("mp4", "aac", "aac"), ("mkv", "opus", "libopus"), ("mp4", "mp3", "libmp3lame"), ("mov", "mp3", "libmp3lame")])
def test_audio_codecs(container: str, codec: str, encoder: str) -> None:
    p = pairs(output_section(argv_for({"container": container, "audio": {
        "codec": codec, "bitrate": "128k", "channels": 2, "sample_rate": 48000}})))
    assert p["-c:a"] == encoder and p["-b:a"] == "128k" and p["-ac"] == "2" and p["-ar"] == "48000"


def test_audio_without_settings_has_only_the_codec() -> None:
    section = output_section(argv_for({"audio": {"codec": "aac"}}))
    assert not {"-b:a", "-ac", "-ar"} & set(section)


# ---- NVIDIA ----------------------------------------------------------------------------------------------


def test_nvidia_h264_keeps_frames_on_gpu() -> None:
    argv = argv_for({"video": {"codec": "h264", "crf": 23, "preset": "slow", "height": 720}}, accelerator="nvidia")
    i = argv.index("-i")
    assert argv[argv.index("-hwaccel") + 1] == "cuda" and argv.index("-hwaccel") < i
    assert argv[argv.index("-hwaccel_output_format") + 1] == "cuda" and argv.index("-hwaccel_output_format") < i
    p = pairs(output_section(argv))
    assert p["-c:v"] == "h264_nvenc" and p["-preset"] == "p5"
    assert p["-rc"] == "vbr" and p["-cq"] == "23" and p["-b:v"] == "0"
    assert p["-vf"] == "scale_cuda=1280:720,setsar=1" and p["-profile:v"] == "high"
    assert "-crf" not in p


def test_nvidia_h265_bitrate_and_tag() -> None:
    p = pairs(output_section(argv_for({"container": "mov", "video": {"codec": "h265", "bitrate": "4M"}},
                                      accelerator="nvidia")))
    assert p["-c:v"] == "hevc_nvenc" and p["-tag:v"] == "hvc1"
    assert p["-b:v"] == "4M" and p["-maxrate"] == "6000k" and p["-bufsize"] == "8000k" and p["-rc"] == "vbr"


def test_nvidia_av1_and_preset_table() -> None:
    p = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": "av1", "crf": 63}},
                                      accelerator="nvidia")))
    assert p["-c:v"] == "av1_nvenc" and p["-cq"] == "51"  # NVENC's cq tops out at 51
    p = pairs(output_section(argv_for({"video": {"codec": "h264", "crf": 0}}, accelerator="nvidia")))
    assert p["-cq"] == "1"  # cq 0 would mean "automatic"
    assert NVENC_PRESETS["ultrafast"] == "p1" and NVENC_PRESETS["medium"] == "p4" and NVENC_PRESETS["veryslow"] == "p7"


def test_nvidia_vp9_falls_back_to_cpu_encoder_and_system_memory_frames() -> None:
    argv = argv_for({"container": "mp4", "video": {"codec": "h264", "height": 480}},
                    {"container": "webm", "video": {"codec": "vp9", "height": 480}}, accelerator="nvidia")
    assert "-hwaccel" in argv and "-hwaccel_output_format" not in argv  # libvpx cannot read CUDA frames
    h264, vp9 = pairs(output_section(argv, 0)), pairs(output_section(argv, 1))
    assert h264["-c:v"] == "h264_nvenc" and h264["-vf"] == "scale=854:480,setsar=1"
    assert vp9["-c:v"] == "libvpx-vp9" and vp9["-vf"] == "scale=854:480,setsar=1"


def test_nvidia_pixel_format_conversion_uses_system_memory_frames() -> None:
    argv = argv_for({"video": {"codec": "h264", "pixel_format": "yuv444p", "width": 640}}, accelerator="nvidia")
    assert "-hwaccel_output_format" not in argv
    p = pairs(output_section(argv))
    assert p["-pix_fmt"] == "yuv444p" and p["-vf"] == "scale=640:360,setsar=1,format=yuv444p"
    assert (p["-c:v"], p["-profile:v"]) == ("h264_nvenc", "high444p")
    # 10-bit input to the default 8-bit output: converted on the CPU too.
    ten = FACTS.model_copy(update={"pixel_format": "yuv420p10le"})
    argv = argv_for({"video": {"codec": "h264", "width": 640}}, accelerator="nvidia", facts=ten)
    assert "-hwaccel_output_format" not in argv and pairs(output_section(argv))["-vf"].endswith(",format=yuv420p")


def test_nvidia_input_nvdec_cannot_decode_is_decoded_in_software() -> None:
    facts = FACTS.model_copy(update={"video_codec": "prores"})
    argv = argv_for({"video": {"codec": "h264", "height": 720}}, accelerator="nvidia", facts=facts)
    assert "-hwaccel_output_format" not in argv
    assert pairs(output_section(argv))["-vf"] == "scale=1280:720,setsar=1"


def test_nvidia_without_video_encoding_needs_no_hwaccel() -> None:
    argv = argv_for({"container": "mkv", "video": {"codec": "copy"}}, accelerator="nvidia")
    assert "-hwaccel" not in argv


def test_cpu_never_uses_hwaccel() -> None:
    argv = argv_for({"video": {"codec": "h264"}}, {"container": "webm"})
    assert "-hwaccel" not in argv and not any("nvenc" in a or "cuda" in a for a in argv)


# ---- real ffmpeg -----------------------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed")

FFPROBE_NAMES = {"h264": "h264", "h265": "hevc", "vp9": "vp9", "av1": "av1", "aac": "aac", "opus": "opus",
                 "mp3": "mp3", "flac": "flac"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s, 320x240, 25 fps test pattern with a 440 Hz tone, in a neutral container."""
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
                    "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path)], check=True)
    return path


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], check=True, capture_output=True, text=True).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def _combos() -> list[tuple[str, str, str]]:
    combos = []
    for container, kinds in CONTAINER_CODECS.items():
        video = [c for c in kinds["video"] if c not in ("copy", "none")]
        audio = [c for c in kinds["audio"] if c not in ("copy", "none")]
        if not video:
            continue  # audio-only containers: tests/unit/test_worker_media_args.py
        # every video codec once (with the container's default audio) and every audio codec once
        default_audio = "opus" if container == "webm" else "aac"
        combos += [(container, v, default_audio) for v in video]
        combos += [(container, video[0], a) for a in audio if a != default_audio]
    return combos


@needs_ffmpeg
@pytest.mark.parametrize(("container", "vcodec", "acodec"), _combos())
def test_real_ffmpeg_every_cpu_codec_and_container(tmp_path: Path, clip: Path, container: str, vcodec: str,
                                                   acodec: str) -> None:
    video: dict[str, Any] = {"codec": vcodec, "height": 120, "preset": "ultrafast"}
    video |= {"crf": 40} if vcodec in ("vp9", "av1") else {"crf": 30}
    spec = make_spec({"container": container, "video": video, "audio": {"codec": acodec, "bitrate": "64k"}})
    outputs = output_paths(spec, tmp_path)
    facts = InputFacts(duration_seconds=2.0, width=320, height=240, video_codec="h264", audio_codec="aac")
    argv = build_argv(spec, clip, outputs, facts, "cpu")
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "progress=end" in proc.stdout  # -progress pipe:1 reports on stdout
    data = ffprobe(outputs["o0"])
    streams = {s["codec_type"]: s for s in data["streams"]}
    assert streams["video"]["codec_name"] == FFPROBE_NAMES[vcodec]
    assert streams["audio"]["codec_name"] == FFPROBE_NAMES[acodec]
    assert (streams["video"]["width"], streams["video"]["height"]) == (160, 120)
    assert abs(float(data["format"]["duration"]) - 2.0) < 0.2
    if vcodec == "h265" and container in ("mp4", "mov"):
        assert streams["video"]["codec_tag_string"] == "hvc1"


@needs_ffmpeg
def test_real_ffmpeg_multiple_outputs_copy_and_drop(tmp_path: Path, clip: Path) -> None:
    spec = make_spec(
        {"container": "mkv", "video": {"codec": "copy"}, "audio": {"codec": "copy"}},
        {"container": "mp4", "video": {"codec": "none"}, "audio": {"codec": "aac", "channels": 1,
                                                                   "sample_rate": 22050}},
        {"container": "mov", "video": {"codec": "h264", "width": 200, "fps": 10, "pixel_format": "yuv420p",
                                       "bitrate": "300k"}, "audio": {"codec": "none"}},
    )
    outputs = output_paths(spec, tmp_path)
    facts = InputFacts(duration_seconds=2.0, video_codec="h264", audio_codec="aac")
    argv = build_argv(spec, clip, outputs, facts, "cpu")
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    copy, audio_only, video_only = (ffprobe(outputs[f"o{i}"]) for i in range(3))
    assert sorted(s["codec_name"] for s in copy["streams"]) == ["aac", "h264"]
    assert [(s["codec_name"], s["channels"], s["sample_rate"]) for s in audio_only["streams"]] == [("aac", 1, "22050")]
    [v] = video_only["streams"]
    assert (v["codec_name"], v["width"], v["height"], v["avg_frame_rate"]) == ("h264", 200, 150, "10/1")


# ---- playability: pixel format, profile, colour, geometry, time ------------------------------------------

HDR10 = FACTS.model_copy(update={
    "pixel_format": "yuv420p10le", "bit_depth": 10, "color_primaries": "bt2020", "color_transfer": "smpte2084",
    "color_space": "bt2020nc", "color_range": "tv", "hdr": "pq", "max_cll": 1000, "max_fall": 400,
    "mastering_display": MasteringDisplay(red=[0.68, 0.32], green=[0.265, 0.69], blue=[0.15, 0.06],
                                          white_point=[0.3127, 0.329], max_luminance=1000, min_luminance=0.005)})
HLG = HDR10.model_copy(update={"color_transfer": "arib-std-b67", "hdr": "hlg", "mastering_display": None,
                               "max_cll": None, "max_fall": None})
BT709_TAGS = {"-color_primaries": "bt709", "-color_trc": "bt709", "-colorspace": "bt709", "-color_range": "tv"}


def tags(p: dict[str, str]) -> dict[str, str]:
    return {k: p[k] for k in BT709_TAGS}


@pytest.mark.parametrize(("container", "codec", "profile"), [
    ("mp4", "h264", "high"), ("mov", "h264", "high"), ("mkv", "h264", "high"), ("mp4", "h265", "main"),
    ("mkv", "h265", "main"), ("webm", "vp9", "0"), ("mp4", "vp9", "0"), ("webm", "av1", None), ("mkv", "av1", None),
])
def test_default_is_8bit_420_with_a_playable_profile_and_bt709_tags(container: str, codec: str,
                                                                     profile: str | None) -> None:
    for facts in (FACTS, FACTS.model_copy(update={"pixel_format": "yuv444p10le"}), HDR10):
        p = pairs(output_section(argv_for({"container": container, "video": {"codec": codec}}, facts=facts)))
        assert p["-pix_fmt"] == "yuv420p" and p.get("-profile:v") == profile
        assert tags(p) == BT709_TAGS
        if codec == "h265" and container in ("mp4", "mov"):
            assert p["-tag:v"] == "hvc1"


@pytest.mark.parametrize(("codec", "pix_fmt", "profile"), [
    ("h264", "yuv422p", "high422"), ("h264", "yuv444p", "high444"), ("h264", "yuv420p10le", "high10"),
    ("h265", "yuv420p10le", "main10"), ("h265", "yuv422p", "main422-10"), ("h265", "yuv444p", "main444-8"),
    ("vp9", "yuv420p10le", "2"), ("vp9", "yuv422p", "1"), ("vp9", "yuv444p", "1"), ("av1", "yuv420p10le", None),
])
def test_more_bits_or_chroma_only_when_asked(codec: str, pix_fmt: str, profile: str | None) -> None:
    p = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": codec, "pixel_format": pix_fmt}})))
    assert (p["-pix_fmt"], p.get("-profile:v")) == (pix_fmt, profile)
    assert p["-vf"] == f"format={pix_fmt}" and tags(p) == BT709_TAGS


def test_lossless_h264_leaves_the_profile_to_x264() -> None:
    assert "-profile:v" not in output_section(argv_for({"video": {"codec": "h264", "crf": 0}}))


def test_higher_bit_depth_and_chroma_inputs_are_converted_to_420_8bit() -> None:
    for fmt in ("yuv420p10le", "yuv422p", "yuv444p", "yuv422p10le"):
        p = pairs(output_section(argv_for({"video": {"codec": "h264"}},
                                          facts=FACTS.model_copy(update={"pixel_format": fmt}))))
        assert p["-vf"] == "format=yuv420p" and p["-profile:v"] == "high"
    assert "-vf" not in output_section(argv_for({"video": {"codec": "h264"}}))  # already yuv420p: no filter


TONEMAP_PQ = ("zscale=pin=bt2020:tin=smpte2084:min=bt2020nc:rin=tv:t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
              "tonemap=tonemap=mobius:desat=0,zscale=t=bt709:m=bt709:r=tv:d=error_diffusion,format=yuv420p")


def test_hdr_input_is_tone_mapped_to_sdr_by_default() -> None:
    p = pairs(output_section(argv_for({"video": {"codec": "h264", "resolution": "720p"}}, facts=HDR10)))
    assert p["-vf"] == "scale=1280:720,setsar=1," + TONEMAP_PQ  # scaled first: tone mapping on fewer pixels
    assert tags(p) == BT709_TAGS and p["-pix_fmt"] == "yuv420p"
    hlg = pairs(output_section(argv_for({"video": {"codec": "h265"}}, facts=HLG)))
    assert hlg["-vf"] == TONEMAP_PQ.replace("tin=smpte2084", "tin=arib-std-b67")
    assert "master-display" not in hlg["-x265-params"]
    # Asking for hdr on an SDR input changes nothing: no inverse tone mapping.
    sdr = pairs(output_section(argv_for({"video": {"codec": "h265", "dynamic_range": "hdr"}})))
    assert sdr["-pix_fmt"] == "yuv420p" and tags(sdr) == BT709_TAGS
    # A 10-bit SDR output of an HDR input: tone-mapped, kept at 10 bits.
    ten = pairs(output_section(argv_for({"video": {"codec": "h265", "pixel_format": "yuv420p10le"}}, facts=HDR10)))
    assert ten["-vf"].endswith(",format=yuv420p10le") and "tonemap" in ten["-vf"] and ten["-profile:v"] == "main10"


def test_kept_hdr_is_10bit_with_its_colour_and_hdr10_metadata() -> None:
    hdr_tags = {"-color_primaries": "bt2020", "-color_trc": "smpte2084", "-colorspace": "bt2020nc",
                "-color_range": "tv"}
    p = pairs(output_section(argv_for({"video": {"codec": "h265", "dynamic_range": "hdr"}}, facts=HDR10)))
    assert (p["-pix_fmt"], p["-profile:v"], p["-tag:v"]) == ("yuv420p10le", "main10", "hvc1")
    assert tags(p) == hdr_tags and "-vf" not in p  # already 10-bit 4:2:0 PQ: nothing to convert
    assert p["-x265-params"] == ("log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)"
                                 "WP(15635,16450)L(10000000,50):max-cll=1000,400")
    av1 = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": "av1", "dynamic_range": "hdr"}},
                                        facts=HDR10)))
    assert av1["-svtav1-params"] == ("mastering-display=G(0.265,0.69)B(0.15,0.06)R(0.68,0.32)WP(0.3127,0.329)"
                                     "L(1000,0.005):content-light=1000,400")
    assert av1["-pix_fmt"] == "yuv420p10le" and tags(av1) == hdr_tags
    vp9 = pairs(output_section(argv_for({"container": "webm", "video": {"codec": "vp9", "dynamic_range": "hdr"}},
                                        facts=HLG)))
    assert (vp9["-pix_fmt"], vp9["-profile:v"], vp9["-color_trc"]) == ("yuv420p10le", "2", "arib-std-b67")
    nvenc = pairs(output_section(argv_for({"video": {"codec": "h265", "dynamic_range": "hdr"}}, facts=HDR10,
                                          accelerator="nvidia")))
    assert (nvenc["-c:v"], nvenc["-pix_fmt"], nvenc["-profile:v"]) == ("hevc_nvenc", "p010le", "main10")
    assert tags(nvenc) == hdr_tags


def test_sdr_colour_is_converted_to_bt709_when_it_is_not() -> None:
    sd = InputFacts(duration_seconds=2, width=720, height=480, video_codec="mpeg2video", pixel_format="yuv420p")
    p = pairs(output_section(argv_for({"video": {"codec": "h264"}}, facts=sd)))  # untagged SD: BT.601
    assert p["-vf"] == ("zscale=pin=bt709:tin=bt709:min=smpte170m:rin=tv:p=bt709:t=bt709:m=bt709:r=tv,"
                        "format=yuv420p")
    full = FACTS.model_copy(update={"pixel_format": "yuvj420p", "color_range": "pc"})
    assert "rin=pc:p=bt709:t=bt709:m=bt709:r=tv" in pairs(output_section(argv_for({}, facts=full)))["-vf"]
    rgb = FACTS.model_copy(update={"pixel_format": "gbrp", "color_space": "gbr"})
    assert "min=gbr:rin=pc:" in pairs(output_section(argv_for({}, facts=rgb)))["-vf"]
    tagged = FACTS.model_copy(update={"color_primaries": "bt709", "color_transfer": "bt709", "color_space": "bt709",
                                      "color_range": "tv"})
    assert "-vf" not in output_section(argv_for({}, facts=tagged))


@pytest.mark.parametrize(("facts", "video", "vf"), [
    # Named sizes are the short side: a portrait phone video's 720p is 720x1280.
    (InputFacts(width=1080, height=1920), {"resolution": "720p"}, "scale=720:1280,setsar=1"),
    (InputFacts(width=1920, height=1080), {"resolution": "720p"}, "scale=1280:720,setsar=1"),
    # Rotated by 90 (facts are upright already: ffmpeg rotates while decoding).
    (InputFacts(width=180, height=320, rotation=90), {"resolution": "240p"}, "scale=240:426,setsar=1"),
    # Explicit sizes keep their meaning.
    (InputFacts(width=1080, height=1920), {"height": 720}, "scale=406:720,setsar=1"),
    (InputFacts(width=1080, height=1920), {"width": 720}, "scale=720:1280,setsar=1"),
    # Anamorphic: square pixels at the display aspect, lines kept (480x360 at 4:3 shows as 640x360).
    (InputFacts(width=480, height=360, sample_aspect_ratio="4:3"), {}, "scale=640:360,setsar=1"),
    (InputFacts(width=480, height=360, sample_aspect_ratio="4:3"), {"resolution": "240p"}, "scale=426:240,setsar=1"),
    (InputFacts(width=720, height=480, sample_aspect_ratio="32:27"), {}, "scale=852:480,setsar=1"),
    # Odd sizes: the odd line cropped (no resampling) or scaled to an even size.
    (InputFacts(width=1279, height=719), {}, "crop=1278:718:0:0"),
    (InputFacts(width=1279, height=719), {"resolution": "720p"}, "scale=1280:720,setsar=1"),
    (InputFacts(width=1279, height=719), {"resolution": "360p"}, "scale=640:360,setsar=1"),
])
def test_geometry_is_upright_square_and_even(facts: InputFacts, video: dict[str, Any], vf: str) -> None:
    facts = facts.model_copy(update={"video_codec": "h264", "pixel_format": "yuv420p", "duration_seconds": 2,
                                     "color_space": "bt709"})  # tagged: no colour conversion in the way
    assert pairs(output_section(argv_for({"video": {"codec": "h264", **video}}, facts=facts)))["-vf"] == vf


def test_aspect_filter_on_an_anamorphic_input_works_in_square_pixels() -> None:
    facts = InputFacts(width=480, height=360, sample_aspect_ratio="4:3", video_codec="h264", pixel_format="yuv420p",
                       color_space="bt709")
    vf = pairs(output_section(argv_for({"video": {"codec": "h264", "resolution": "240p"},
                                        "filters": {"aspect": {"ratio": "1:1"}}}, facts=facts)))["-vf"].split(",")
    assert vf[:2] == ["scale=640:360", "setsar=1"] and vf[2].startswith("crop=") and vf[-2:] == [
        "scale=240:240", "setsar=1"]


def test_interlaced_input_is_deinterlaced_unless_told_not_to() -> None:
    facts = FACTS.model_copy(update={"interlaced": True})
    assert pairs(output_section(argv_for({}, facts=facts)))["-vf"] == "bwdif=mode=send_frame:parity=auto:deint=all"
    assert "-vf" not in output_section(argv_for({"filters": {"deinterlace": False}}, facts=facts))
    assert "bwdif" in pairs(output_section(argv_for({"filters": {"deinterlace": True}})))["-vf"]
    assert "-vf" not in output_section(argv_for({}))


@pytest.mark.parametrize(("avg", "base", "rate"), [
    (25.862, 60.0, "30"),  # 30 then 20 fps on a 60 fps grid: 30, the lowest fraction of 60 above the average
    (29.5, 30.0, None),  # within 2%: constant
    (14.9, 30.0, "15"), (23.0, 90000.0, "24000/1001"), (27.3, 1000.0, "30000/1001"), (70.0, 5000.0, "60"),
])
def test_variable_frame_rate_comes_out_constant(avg: float, base: float, rate: str | None) -> None:
    facts = FACTS.model_copy(update={"frame_rate": avg, "base_frame_rate": base,
                                     "variable_frame_rate": abs(avg - base) > 0.02 * base})
    section = output_section(argv_for({}, facts=facts))
    assert pairs(section).get("-vf") == (f"fps={rate}" if rate else None)
    explicit = pairs(output_section(argv_for({"video": {"codec": "h264", "fps": 24}}, facts=facts)))
    assert "-vf" not in explicit and explicit["-r"] == "24"  # video.fps decides instead


def test_nvenc_takes_what_it_can_encode_and_leaves_the_rest_to_the_cpu() -> None:
    # NVENC has no 4:2:2 and no 10-bit h264: those outputs are encoded by x264 on a GPU job, like vp9.
    for video in ({"codec": "h264", "pixel_format": "yuv422p"}, {"codec": "h264", "pixel_format": "yuv420p10le"},
                  {"codec": "h265", "pixel_format": "yuv422p"}):
        p = pairs(output_section(argv_for({"container": "mkv", "video": video}, accelerator="nvidia")))
        assert p["-c:v"] in ("libx264", "libx265") and p["-pix_fmt"] == video["pixel_format"], p
    av1 = pairs(output_section(argv_for({"container": "mkv", "video": {"codec": "av1", "dynamic_range": "hdr"}},
                                        facts=HDR10, accelerator="nvidia")))
    assert (av1["-c:v"], av1["-pix_fmt"], av1["-profile:v"], av1["-color_trc"]) == (
        "av1_nvenc", "p010le", "main", "smpte2084")
    sdr = pairs(output_section(argv_for({"video": {"codec": "h264"}}, facts=HDR10, accelerator="nvidia")))
    assert sdr["-c:v"] == "h264_nvenc" and "tonemap" in sdr["-vf"] and tags(sdr) == BT709_TAGS
