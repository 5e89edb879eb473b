"""The playability decisions (worker_image/transkube_worker/playability.py): colour, geometry and timing from the
probed input, the same contract for hls/dash renditions and images, and real ffmpeg runs of the colour paths."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from transkube_api.models import InputFacts, OutputSpec, TranscodeJobSpec, VideoSpec
from transkube_worker.errors import InvalidInput
from transkube_worker.ffmpeg_args import build_argv, output_paths
from transkube_worker.media_args import ladder, poster_argv, sprite_argv, sprite_layout, stream_argv, thumbnails_argv
from transkube_worker.playability import (
    BT709,
    TONEMAP,
    Colour,
    colour_chain,
    constant_rate,
    display_size,
    even_near,
    is_vfr,
    output_colour,
    pixel_format,
    source_colour,
)
from transkube_worker.probe import probe_input
from transkube_worker.steps import media_steps

IN = Path("/scratch/in.mov")
PQ = InputFacts(duration_seconds=10.0, width=3840, height=2160, video_codec="hevc", audio_codec="aac",
                frame_rate=24, pixel_format="yuv420p10le", color_primaries="bt2020", color_transfer="smpte2084",
                color_space="bt2020nc", color_range="tv", hdr="pq", audio_streams=1)


def output(**fields: Any) -> OutputSpec:
    return OutputSpec.model_validate({"name": "o", **fields})


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---- pure decisions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("facts", "colour"), [
    (InputFacts(width=1920, height=1080), BT709),  # untagged HD
    (InputFacts(width=640, height=360), Colour("bt709", "bt709", "smpte170m", "tv")),  # untagged SD: BT.601
    (InputFacts(width=360, height=640), Colour("bt709", "bt709", "smpte170m", "tv")),  # portrait SD too
    (InputFacts(width=720, height=576, color_space="bt470bg", color_primaries="bt470bg"),
     Colour("bt470bg", "bt709", "bt470bg", "tv")),
    (InputFacts(width=1920, height=1080, pixel_format="yuvj420p"), Colour("bt709", "bt709", "bt709", "pc")),
    (InputFacts(width=1920, height=1080, pixel_format="gbrp"), Colour("bt709", "bt709", "gbr", "pc")),
    (InputFacts(width=1920, height=1080, color_transfer="iec61966-2-1"), BT709),  # sRGB: an SDR transfer
    (InputFacts(width=1920, height=1080, color_transfer="smpte2084"),
     Colour("bt2020", "smpte2084", "bt2020nc", "tv")),  # PQ, otherwise untagged: BT.2020
    (PQ, Colour("bt2020", "smpte2084", "bt2020nc", "tv")),
    (InputFacts(width=1920, height=1080, color_primaries="weird", color_space="reserved"), BT709),
])
def test_source_colour_guesses_like_players(facts: InputFacts, colour: Colour) -> None:
    assert source_colour(facts) == colour


def test_output_colour_and_pixel_format() -> None:
    keep = VideoSpec(codec="h265", dynamic_range="hdr")
    assert output_colour(None, PQ) == BT709 and pixel_format(None, PQ) == "yuv420p"
    assert output_colour(keep, PQ) == Colour("bt2020", "smpte2084", "bt2020nc", "tv")
    assert pixel_format(keep, PQ) == "yuv420p10le"
    sdr = InputFacts(width=1920, height=1080)
    assert output_colour(keep, sdr) == BT709 and pixel_format(keep, sdr) == "yuv420p"
    assert pixel_format(VideoSpec(codec="vp9", pixel_format="yuv444p"), PQ) == "yuv444p"


def test_colour_chain_does_only_what_is_needed() -> None:
    assert colour_chain(BT709, BT709, "yuv420p", "yuv420p") == []
    assert colour_chain(BT709, BT709, None, "yuv420p") == ["format=yuv420p"]
    assert colour_chain(BT709, BT709, "yuv422p10le", "yuv420p") == ["format=yuv420p"]
    pq = source_colour(PQ)
    assert colour_chain(pq, pq, "yuv420p10le", "yuv420p10le") == []
    tonemap = colour_chain(pq, BT709, "yuv420p10le", "yuv420p")
    assert tonemap[0] == "zscale=pin=bt2020:tin=smpte2084:min=bt2020nc:rin=tv:t=linear:npl=100"
    assert f"tonemap=tonemap={TONEMAP}:desat=0" in tonemap and tonemap[-1] == "format=yuv420p"


@pytest.mark.parametrize(("facts", "size"), [
    (InputFacts(width=1920, height=1080), (1920, 1080)),
    (InputFacts(width=480, height=360, sample_aspect_ratio="4:3"), (640, 360)),
    (InputFacts(width=1440, height=1080, sample_aspect_ratio="4:3"), (1920, 1080)),
    (InputFacts(width=720, height=576, sample_aspect_ratio="64:45"), (1024, 576)),
    # Rotated 90: facts are upright (the coded 480x360 at 4:3 shows as 360 wide, 640 high).
    (InputFacts(width=360, height=480, sample_aspect_ratio="4:3", rotation=90), (360, 640)),
    (InputFacts(), None),
])
def test_display_size(facts: InputFacts, size: tuple[int, int] | None) -> None:
    assert display_size(facts) == size


def test_even_rounding_and_vfr_detection() -> None:
    assert [even_near(x) for x in (405.0, 426.67, 1.0, 853.33, 719.0)] == [406, 426, 2, 854, 720]
    assert is_vfr(25.862, 60.0) and not is_vfr(29.97, 30.0) and not is_vfr(25.0, 25.0) and is_vfr(None, 25) is None
    assert constant_rate(InputFacts(frame_rate=25.0, base_frame_rate=25.0, variable_frame_rate=False)) is None
    assert constant_rate(InputFacts(frame_rate=29.6, base_frame_rate=30000 / 1001,
                                    variable_frame_rate=True)) == Fraction(30000, 1001)


# ---- the same contract for ladders and images ------------------------------------------------------------


def test_renditions_are_8bit_bt709_and_tone_mapped() -> None:
    o = output(type="hls", uri="s3://bkt/h/", streaming={"renditions": [{"resolution": "720p", "bitrate": "3M"}]})
    argv = stream_argv(o, IN, Path("/h"), PQ)
    graph = value(argv, "-filter_complex")
    assert "[s0]scale=1280:720,setdar=3840/2160,zscale=pin=bt2020:tin=smpte2084:" in graph
    assert "tonemap=tonemap=mobius" in graph and graph.endswith("format=yuv420p[v0]")
    assert (value(argv, "-pix_fmt"), value(argv, "-profile:v"), value(argv, "-color_primaries"),
            value(argv, "-color_trc"), value(argv, "-colorspace"), value(argv, "-color_range")) == (
        "yuv420p", "high", "bt709", "bt709", "bt709", "tv")
    h265 = stream_argv(o.model_copy(update={"streaming": o.streaming.model_copy(  # type: ignore[union-attr]
        update={"codec": "h265"})}), IN, Path("/h"), PQ)
    assert (value(h265, "-profile:v"), value(h265, "-tag:v")) == ("main", "hvc1")


def test_renditions_of_portrait_anamorphic_interlaced_and_vfr_inputs() -> None:
    o = output(type="dash", uri="s3://bkt/d/", streaming={"renditions": [{"resolution": "720p", "bitrate": "3M"},
                                                                          {"height": 360, "bitrate": "1M"}]})
    portrait = InputFacts(width=1080, height=1920, duration_seconds=4, video_codec="h264", pixel_format="yuv420p",
                          frame_rate=30, color_space="bt709")
    graph = value(stream_argv(o, IN, Path("/d"), portrait), "-filter_complex")
    assert "[s0]scale=720:1280,setdar=1080/1920[v0]" in graph and "[s1]scale=360:640,setdar=1080/1920[v1]" in graph
    anamorphic = portrait.model_copy(update={"width": 1440, "height": 1080, "sample_aspect_ratio": "4:3",
                                             "interlaced": True, "frame_rate": 25.862, "base_frame_rate": 60.0,
                                             "variable_frame_rate": True})
    argv = stream_argv(o, IN, Path("/d"), anamorphic)
    graph = value(argv, "-filter_complex")
    assert graph.startswith("[0:V:0]bwdif=mode=send_frame:parity=auto:deint=all,fps=30,split=2")
    assert "[s0]scale=1280:720,setdar=1920/1080[v0]" in graph  # square pixels at 16:9
    assert value(argv, "-g") == "120"  # the GOP of the constant output rate (4 s segments at 30 fps)
    assert [r.height for r in ladder(None, anamorphic)] == [1080, 720, 480, 360]


def test_images_of_hdr_and_anamorphic_inputs() -> None:
    poster = poster_argv(output(type="poster", uri="s3://bkt/p.jpg", poster={"width": 640}), IN, Path("/p.jpg"), PQ)
    vf = value(poster, "-vf")
    assert vf.startswith("scale=640:360,setsar=1,zscale=pin=bt2020:tin=smpte2084:") and "tonemap=" in vf
    assert vf.endswith("zscale=t=bt709:m=smpte170m:r=pc:d=error_diffusion,format=yuvj420p")  # JPEG: BT.601, full
    anamorphic = InputFacts(width=480, height=360, sample_aspect_ratio="4:3", duration_seconds=10,
                            video_codec="h264", pixel_format="yuv420p", color_space="smpte170m")
    thumbs = thumbnails_argv(output(type="thumbnails", uri="s3://bkt/t/", thumbnails={"times": [1], "format": "webp"}),
                             IN, Path("/t"), anamorphic)
    assert value(thumbs, "-vf") == "scale=640:360,setsar=1"  # BT.601 limited already: what WebP wants
    sprite = output(type="sprite", uri="s3://bkt/s/", sprite={"tileWidth": 160})
    assert sprite_layout(sprite, anamorphic).tile_height == 90  # the display aspect, not the stored 4:3
    assert "scale=160:90,setsar=1" in value(sprite_argv(sprite, IN, Path("/s"), anamorphic), "-vf")


def test_images_convert_colour_on_even_sizes() -> None:
    """zscale works on whole chroma samples: an odd input loses its odd line, an odd size asked for is reached
    after the colour conversion."""
    odd = InputFacts(width=1279, height=719, duration_seconds=2, video_codec="vp9", pixel_format="yuv420p")
    plain = poster_argv(output(type="poster", uri="s3://bkt/p.jpg"), IN, Path("/p.jpg"), odd)
    assert value(plain, "-vf").startswith("crop=1278:718:0:0,zscale=")
    sized = value(poster_argv(output(type="poster", uri="s3://bkt/p.jpg", poster={"width": 321}), IN,
                              Path("/p.jpg"), odd), "-vf").split(",")
    assert sized[:2] == ["scale=322:180", "setsar=1"] and sized[-2:] == ["scale=321:180", "setsar=1"]


@pytest.mark.parametrize("kind", [
    {"type": "hls", "uri": "s3://bkt/h/"}, {"type": "dash", "uri": "s3://bkt/d/"},
    {"type": "poster", "uri": "s3://bkt/p.jpg"}, {"type": "sprite", "uri": "s3://bkt/s/"},
    {"type": "thumbnails", "uri": "s3://bkt/t/", "thumbnails": {"times": [1]}},
    {"uri": "s3://bkt/o.mp4", "container": "mp4"}, {"uri": "s3://bkt/o.webm", "container": "webm"},
])
def test_video_outputs_of_an_audio_only_input_fail_before_anything_runs(kind: dict[str, Any]) -> None:
    spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp3"}, "outputs": [{"name": "o", **kind}]})
    audio_only = InputFacts(duration_seconds=5, audio_codec="mp3", audio_streams=1)
    with pytest.raises(InvalidInput) as info:
        media_steps(spec, IN, output_paths(spec, Path("/o")), audio_only, "cpu")
    assert info.value.reason == "NoVideoStream" and "no video stream" in info.value.message


# ---- real ffmpeg -------------------------------------------------------------------------------------------

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                  reason="ffmpeg/ffprobe not installed")
FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y")


def ramp(path: Path, transfer: str, codes: tuple[float, ...]) -> Path:
    """One 10-bit frame of grey bars at the given signal levels (0-1), losslessly coded and tagged `transfer`."""
    lum = "64+876*" + "".join(f"if(lt(X,{64 * (i + 1)}),{c}," for i, c in enumerate(codes[:-1])) + str(codes[-1]) \
        + ")" * (len(codes) - 1)
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", f"color=c=black:s={64 * len(codes)}x64:r=1,format=yuv420p10le,"
                    f"geq=lum='{lum}':cb=512:cr=512", "-frames:v", "1", "-c:v", "libx265", "-x265-params",
                    "log-level=error:lossless=1", "-color_primaries", "bt2020", "-color_trc", transfer,
                    "-colorspace", "bt2020nc", str(path)], check=True)
    return path


def bars(path: Path, count: int) -> list[int]:
    """Full-range 8-bit luma in the middle of each bar."""
    out = []
    for i in range(count):
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf",
                              f"scale=in_range=tv:out_range=pc,format=gray,crop=2:2:{64 * i + 32}:32",
                              "-frames:v", "1", "-f", "rawvideo", "-"], check=True, capture_output=True).stdout
        out.append(raw[0])
    return out


@needs_ffmpeg
def test_tone_mapping_keeps_sdr_levels_and_rolls_off_highlights(tmp_path: Path) -> None:
    """PQ bars at 0, 10, 100, 203 (HDR reference white) and 1000 cd/m2, HLG bars at 0, 0.25, 0.5, 0.75 (reference
    white) and 1: black stays black, the order is kept, reference white lands near the top without clipping
    what is brighter."""
    for transfer, codes, low, high in (("smpte2084", (0.0, 0.3079, 0.5081, 0.5806, 0.7518), (90, 200), (225, 245)),
                                       ("arib-std-b67", (0.0, 0.25, 0.5, 0.75, 1.0), (85, 175), (225, 245))):
        src = ramp(tmp_path / f"{transfer}.mkv", transfer, codes)
        facts = probe_input(src)
        spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mkv"}, "outputs": [
            {"name": "sdr", "uri": "s3://bkt/sdr.mkv", "container": "mkv", "audio": {"codec": "none"},
             "video": {"codec": "h264", "crf": 0, "preset": "ultrafast"}}]})
        (tmp_path / transfer).mkdir()
        outputs = output_paths(spec, tmp_path / transfer)
        subprocess.run(build_argv(spec, src, outputs, facts, "cpu"), check=True, capture_output=True)
        black, dim, mid, white, peak = bars(outputs["sdr"], len(codes))
        assert black < 3 and black < dim < mid < white < peak, (transfer, black, dim, mid, white, peak)
        assert low[0] <= dim <= low[1] and high[0] <= white <= high[1] and peak >= 250, (transfer, dim, white)


def ffprobe_video(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-select_streams", "V:0",
                          str(path)], check=True, capture_output=True, text=True).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


@needs_ffmpeg
def test_hdr10_in_tone_mapped_h264_and_kept_hevc_out(tmp_path: Path) -> None:
    src = tmp_path / "hdr10.mp4"
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-t", "0.4", "-pix_fmt",
                    "yuv420p10le", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                    "log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
                    "L(10000000,50):max-cll=1000,400", "-color_primaries", "bt2020", "-color_trc", "smpte2084",
                    "-colorspace", "bt2020nc", str(src)], check=True)
    facts = probe_input(src)
    spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp4"}, "outputs": [
        {"name": "web", "uri": "s3://bkt/web.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast"}},
        {"name": "hdr", "uri": "s3://bkt/hdr.mp4", "container": "mp4",
         "video": {"codec": "h265", "preset": "ultrafast", "dynamicRange": "hdr"}}]})
    outputs = output_paths(spec, tmp_path)
    subprocess.run(build_argv(spec, src, outputs, facts, "cpu"), check=True, capture_output=True)
    web, hdr = ffprobe_video(outputs["web"]), ffprobe_video(outputs["hdr"])
    assert (web["pix_fmt"], web["profile"], web["color_primaries"], web["color_transfer"], web["color_space"],
            web["color_range"]) == ("yuv420p", "High", "bt709", "bt709", "bt709", "tv")
    assert (hdr["pix_fmt"], hdr["profile"], hdr["codec_tag_string"], hdr["color_primaries"], hdr["color_transfer"],
            hdr["color_space"]) == ("yuv420p10le", "Main 10", "hvc1", "bt2020", "smpte2084", "bt2020nc")
    kept = probe_input(outputs["hdr"])
    assert kept.mastering_display == facts.mastering_display and (kept.max_cll, kept.max_fall) == (1000, 400)


PROFILE_NAMES = {("h264", "yuv420p"): "High", ("h264", "yuv420p10le"): "High 10", ("h264", "yuv422p"): "High 4:2:2",
                 ("h264", "yuv444p"): "High 4:4:4 Predictive", ("h265", "yuv420p"): "Main",
                 ("h265", "yuv420p10le"): "Main 10", ("h265", "yuv422p"): "Rext", ("h265", "yuv444p"): "Rext",
                 ("vp9", "yuv420p"): "Profile 0", ("vp9", "yuv420p10le"): "Profile 2",
                 ("vp9", "yuv422p"): "Profile 1", ("vp9", "yuv444p"): "Profile 1", ("av1", "yuv420p"): "Main",
                 ("av1", "yuv420p10le"): "Main"}


@needs_ffmpeg
@pytest.mark.parametrize(("codec", "pix_fmt"), sorted(PROFILE_NAMES))
def test_every_allowed_pixel_format_encodes_with_its_profile(tmp_path: Path, codec: str, pix_fmt: str) -> None:
    src = tmp_path / "in.mp4"
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-t", "0.3", "-c:v", "libx264",
                    "-preset", "ultrafast", str(src)], check=True)
    container = "webm" if codec == "vp9" else "mkv"
    spec = TranscodeJobSpec.model_validate({"input": {"uri": "s3://bkt/in.mp4"}, "outputs": [
        {"name": "o", "uri": f"s3://bkt/o.{container}", "container": container,
         "video": {"codec": codec, "preset": "veryfast", "pixelFormat": pix_fmt}}]})
    outputs = output_paths(spec, tmp_path)
    proc = subprocess.run(build_argv(spec, src, outputs, probe_input(src), "cpu"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    v = ffprobe_video(outputs["o"])
    assert (v["pix_fmt"], v["profile"], v["color_space"], v["color_range"]) == (
        pix_fmt, PROFILE_NAMES[(codec, pix_fmt)], "bt709", "tv")
