"""The playability contract (docs/media.md#playability) on the local cluster: inputs as users bring them (10-bit
HEVC, 4:4:4 and 4:2:2 H.264, HDR10 PQ with mastering metadata, HLG, 1279x719, anamorphic SAR 4:3, a portrait phone
video with a rotation matrix, VFR, interlaced, audio-only, video-only, two audio tracks), generated with ffmpeg,
each run through a real TranscodeJob (all at once), every output checked with ffprobe: pixel format, profile,
codec tag, colour tags, dimensions, SAR, durations and A/V sync. Outputs that need a stream the input lacks fail
at once with their own reason, without a retry."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.cluster import ClusterState
from transkube_dev.kube import ApiError, Kube, Obj

from .conftest import InstalledOperator, job_condition, phase_of, storage_secret, tj_path, wait_for
from .media_fixtures import download, download_prefix, ffmpeg, out_prefix, results, upload

SECONDS = 2
AV_SYNC = 0.1  # video and audio durations agree within this (seconds)
BT709 = {"color_primaries": "bt709", "color_transfer": "bt709", "color_space": "bt709", "color_range": "tv"}
PQ = {"color_primaries": "bt2020", "color_transfer": "smpte2084", "color_space": "bt2020nc", "color_range": "tv"}
HLG = {**PQ, "color_transfer": "arib-std-b67"}
X265_HDR10 = ("log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)"
              "L(10000000,50):max-cll=1000,400")


def make_inputs(d: Path) -> dict[str, Path]:
    """~2 s each, small sizes: every case a user brings, made with ffmpeg."""
    def video(size: str, rate: int = 25) -> list[str]:
        return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]

    tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cut = ["-t", str(SECONDS)]
    x265 = ["-c:v", "libx265", "-preset", "ultrafast"]
    paths = {name: d / name for name in (
        "hevc10.mp4", "h264-444.mp4", "h264-422.mov", "hdr10.mp4", "hlg.mov", "odd.webm", "anamorphic.mp4",
        "portrait.mp4", "vfr.mp4", "interlaced.mkv", "audio-only.m4a", "video-only.mp4", "two-tracks.mkv")}
    p = {name.split(".")[0]: path for name, path in paths.items()}
    ffmpeg(*video("320x180"), *tone, *cut, "-pix_fmt", "yuv420p10le", *x265, "-x265-params", "log-level=error",
           "-tag:v", "hvc1", "-c:a", "aac", str(p["hevc10"]))
    ffmpeg(*video("320x180"), *tone, *cut, "-pix_fmt", "yuv444p", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", str(p["h264-444"]))
    ffmpeg(*video("320x180"), *tone, *cut, "-pix_fmt", "yuv422p10le", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "pcm_s16le", str(p["h264-422"]))  # a camera intermediate: 10-bit 4:2:2 H.264, PCM audio
    ffmpeg(*video("320x180"), *tone, *cut, "-pix_fmt", "yuv420p10le", *x265, "-x265-params", X265_HDR10,
           "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc", "-tag:v", "hvc1",
           "-c:a", "aac", str(p["hdr10"]))
    ffmpeg(*video("320x180"), *tone, *cut, "-pix_fmt", "yuv420p10le", *x265, "-x265-params", "log-level=error",
           "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc", "-tag:v", "hvc1",
           "-c:a", "aac", str(p["hlg"]))  # a phone's HLG .mov
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1279x719:rate=25,format=rgb24", *tone, *cut, "-pix_fmt", "yuv420p",
           "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", str(p["odd"]))
    ffmpeg(*video("480x360"), *tone, *cut, "-vf", "setsar=4/3", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", str(p["anamorphic"]))  # shows as 640x360
    landscape = d / "landscape.mp4"
    ffmpeg(*video("1920x1080"), *tone, *cut, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(landscape))
    ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(p["portrait"]))  # 1080x1920
    # 30 fps for a second, then 20 fps, on a 60 fps timestamp grid: avg ~26, r_frame_rate 60.
    ffmpeg(*video("320x240", 60), *tone, *cut, "-vf", "select='lt(t,1)*not(mod(n,2))+gte(t,1)*not(mod(n,3))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(p["vfr"]))
    ffmpeg(*video("352x288", 50), *tone, *cut, "-vf", "tinterlace=mode=interleave_top,fieldorder=tff",
           "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ildct+ilme",
           "-x264-params", "tff=1", "-c:a", "aac", str(p["interlaced"]))  # 25i
    ffmpeg(*tone, *cut, "-c:a", "aac", str(p["audio-only"]))
    ffmpeg(*video("320x180"), *cut, "-c:v", "libx264", "-preset", "ultrafast", str(p["video-only"]))
    ffmpeg(*video("320x180"), *tone, "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000", *cut,
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           "-ac:a:0", "2", "-ac:a:1", "1", str(p["two-tracks"]))  # track 0 stereo, track 1 mono
    return p


def mp4(name: str, **video: Any) -> Obj:
    out: Obj = {"name": name, "uri": f"{name}.mp4", "container": "mp4"}
    return {**out, "video": {"codec": "h264", "preset": "veryfast", **video}} if video else out


# Every case: (input, outputs, retryLimit). Outputs carry only what the case is about: defaults are the point.
# URIs are relative to the case's own output prefix.
def cases() -> dict[str, tuple[str, list[Obj], int]]:
    return {
        "hevc10": ("hevc10", [mp4("web"), {"name": "vp9", "uri": "hevc10.webm", "container": "webm",
                                           "video": {"codec": "vp9", "preset": "ultrafast"}}], 0),
        "h264-444": ("h264-444", [mp4("web"),
                                  {"name": "keep", "uri": "keep444.mkv", "container": "mkv",
                                   "video": {"codec": "h264", "preset": "veryfast", "pixelFormat": "yuv444p"}}], 0),
        "h264-422": ("h264-422", [{"name": "web", "uri": "h422.mp4", "container": "mp4",
                                   "video": {"codec": "h265", "preset": "ultrafast"}}], 0),
        "hdr10": ("hdr10", [
            mp4("sdr"),
            {"name": "hdr", "uri": "hdr10-kept.mp4", "container": "mp4",
             "video": {"codec": "h265", "preset": "ultrafast", "dynamicRange": "hdr"}},
            {"name": "av1", "uri": "hdr10-kept.mkv", "container": "mkv",
             "video": {"codec": "av1", "preset": "ultrafast", "dynamicRange": "hdr"}},
            {"name": "hls", "type": "hls", "uri": "hls/", "streaming": {
                "segmentSeconds": 1, "preset": "veryfast",
                "renditions": [{"resolution": "240p", "bitrate": "300k"}, {"height": 120, "bitrate": "150k"}]}},
            {"name": "poster", "type": "poster", "uri": "hdr10.jpg", "poster": {"timeSeconds": 1}},
        ], 0),
        "hlg": ("hlg", [mp4("sdr"),
                        {"name": "hdr", "uri": "hlg-kept.webm", "container": "webm",
                         "video": {"codec": "vp9", "preset": "ultrafast", "dynamicRange": "hdr"}}], 0),
        "odd": ("odd", [mp4("web"), mp4("p720", resolution="720p")], 0),
        "anamorphic": ("anamorphic", [mp4("web"), mp4("p240", resolution="240p"),
                                      {"name": "thumb", "type": "thumbnails", "uri": "thumbs/",
                                       "thumbnails": {"times": [1], "height": 90}}], 0),
        "portrait": ("portrait", [mp4("p720", resolution="720p"), mp4("h640", height=640),
                                  {"name": "poster", "type": "poster", "uri": "portrait.webp",
                                   "poster": {"format": "webp", "width": 180}}], 0),
        "vfr": ("vfr", [mp4("web"), {"name": "mkv", "uri": "vfr.mkv", "container": "mkv"}], 0),
        "interlaced": ("interlaced", [mp4("web")], 0),
        "video-only": ("video-only", [mp4("web")], 0),
        "two-tracks": ("two-tracks", [mp4("first"),
                                      {**mp4("second"), "audio": {"codec": "aac", "track": 1}}], 0),
        # Failures: permanent, so even with retries allowed there is exactly one attempt.
        "no-video": ("audio-only", [mp4("web")], 2),
        "no-video-images": ("audio-only", [{"name": "poster", "type": "poster", "uri": "nv.jpg"},
                                           {"name": "hls", "type": "hls", "uri": "nv-hls/"}], 2),
        "no-track": ("two-tracks", [{**mp4("web"), "audio": {"codec": "aac", "track": 2}}], 2),
    }


@dataclass
class Case:
    obj: Obj
    files: dict[str, Path]  # output name -> downloaded file (multi-file outputs: their directory)


@pytest.fixture(scope="module")
def namespace(kube: Kube, cluster: ClusterState, operator: InstalledOperator) -> Iterator[str]:
    """One namespace for the module's jobs (they all run at once), with the storage Secret."""
    name = f"play-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    wait_for("default ServiceAccount", lambda: kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"))
    kube.create(f"/api/v1/namespaces/{name}/secrets", storage_secret(cluster))
    yield name
    try:
        kube.delete(f"/api/v1/namespaces/{name}")
    except ApiError as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="module")
def ran(kube: Kube, s3: Any, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Generates the inputs, runs every case as its own TranscodeJob (all created at once), downloads the
    outputs of those that succeeded."""
    d = tmp_path_factory.mktemp("playability")
    inputs = make_inputs(d)
    uris = {key: upload(s3, path) for key, path in inputs.items()}
    prefix = out_prefix()
    todo = cases()
    for name, (key, outputs, retries) in todo.items():
        placed = [{**o, "uri": f"{prefix}{name}/{o['uri']}"} for o in outputs]
        kube.create(tj_path(namespace), {
            "apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": name},
            "spec": {"input": {"uri": uris[key]}, "outputs": placed, "retryLimit": retries}})
    def finished(name: str) -> bool:
        return phase_of(kube, namespace, name) in ("Succeeded", "Failed")

    done: dict[str, Case] = {}
    for name in todo:
        wait_for(f"{name} finished", lambda: finished(name), timeout=600)  # noqa: B023 (called right here)
        obj = kube.get(tj_path(namespace, name))
        files: dict[str, Path] = {}
        for out in (obj["status"].get("outputs") or []):
            local = d / "out" / name / out["name"]
            if out.get("files"):
                files[out["name"]] = download_prefix(s3, out, local)
            else:
                files[out["name"]] = download(s3, out["uri"], local.with_suffix(Path(out["uri"]).suffix))
        done[name] = Case(obj, files)
    return done


def probe(path: Path) -> Obj:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                          str(path)], check=True, capture_output=True, text=True, timeout=60).stdout
    return dict(json.loads(out))


def first_frame(path: Path) -> Obj:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-select_streams", "V:0",
                          "-read_intervals", "%+#1", "-show_frames", "-show_entries", "frame=side_data_list",
                          str(path)], check=True, capture_output=True, text=True, timeout=60).stdout
    frames = json.loads(out)["frames"]
    return dict(frames[0]) if frames else {}


MEASURED: dict[str, str] = {}  # case/output -> what was measured (printed at the end with -s)


@dataclass
class Measured:
    video: Obj
    audio: list[Obj]
    duration: float

    @property
    def colour(self) -> dict[str, str]:
        return {k: self.video.get(k, "unset") for k in BT709}

    @property
    def size(self) -> tuple[int, int]:
        return int(self.video["width"]), int(self.video["height"])


def measure(case: str, output: str, path: Path) -> Measured:
    data = probe(path)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    audio = [s for s in data["streams"] if s["codec_type"] == "audio"]
    m = Measured(video, audio, float(data["format"]["duration"]))
    vd = float(video.get("duration") or m.duration)
    ad = [float(a.get("duration") or m.duration) for a in audio]
    MEASURED[f"{case}/{output}"] = (
        f"{video['codec_name']} {video.get('profile')} {video.get('codec_tag_string')} {video['pix_fmt']} "
        f"{video['width']}x{video['height']} SAR {video.get('sample_aspect_ratio', '-')} "
        f"{video.get('color_primaries', '-')}/{video.get('color_transfer', '-')}/{video.get('color_space', '-')}/"
        f"{video.get('color_range', '-')} fps r={video['r_frame_rate']} avg={video['avg_frame_rate']} "
        f"field={video.get('field_order', '-')} video {vd:.3f}s audio {','.join(f'{a:.3f}' for a in ad) or '-'}s")
    return m


def playable(m: Measured, colour: dict[str, str] | None = None, pix_fmt: str = "yuv420p") -> None:
    """Every re-encoded output: the asked-for pixel format, every colour tag stated, square pixels, even size,
    upright (no display matrix left), progressive, durations of the input with video and audio in sync."""
    assert m.video["pix_fmt"] == pix_fmt, m.video
    assert m.colour == (colour or BT709), m.colour
    assert m.video.get("sample_aspect_ratio", "1:1") in ("1:1", "N/A"), m.video
    assert m.size[0] % 2 == 0 and m.size[1] % 2 == 0, m.size
    assert not any("rotation" in sd for sd in m.video.get("side_data_list") or []), m.video
    assert m.video.get("field_order", "progressive") == "progressive", m.video
    durations = [float(m.video.get("duration") or m.duration)] + [float(a.get("duration") or m.duration)
                                                                  for a in m.audio]
    assert all(abs(d - SECONDS) <= AV_SYNC for d in durations), durations
    assert max(durations) - min(durations) <= AV_SYNC, durations


def succeeded(case: Case) -> Obj:
    status = case.obj["status"]
    assert status["phase"] == "Succeeded", (status.get("reason"), status.get("message"))
    return dict(status)


# ---- pixel format and profile ------------------------------------------------------------------------------


def test_10bit_hevc_comes_out_8bit_high_and_profile_0(ran: dict[str, Case]) -> None:
    case = ran["hevc10"]
    assert succeeded(case)["input"]["bitDepth"] == 10
    web = measure("hevc10", "web", case.files["web"])
    playable(web)
    assert (web.video["codec_name"], web.video["profile"], web.video["codec_tag_string"]) == ("h264", "High", "avc1")
    vp9 = measure("hevc10", "vp9", case.files["vp9"])
    playable(vp9)
    assert (vp9.video["codec_name"], vp9.video["profile"]) == ("vp9", "Profile 0")


def test_444_and_422_h264_come_out_420_unless_asked(ran: dict[str, Case]) -> None:
    case = ran["h264-444"]
    assert succeeded(case)["input"]["pixelFormat"] == "yuv444p"
    web = measure("h264-444", "web", case.files["web"])
    playable(web)
    assert web.video["profile"] == "High"
    keep = measure("h264-444", "keep", case.files["keep"])
    playable(keep, pix_fmt="yuv444p")  # the opt-in
    assert keep.video["profile"] == "High 4:4:4 Predictive"

    case = ran["h264-422"]
    assert succeeded(case)["input"]["pixelFormat"] == "yuv422p10le"
    hevc = measure("h264-422", "web", case.files["web"])
    playable(hevc)
    assert (hevc.video["codec_name"], hevc.video["profile"], hevc.video["codec_tag_string"]) == (
        "hevc", "Main", "hvc1")


# ---- HDR ---------------------------------------------------------------------------------------------------


def test_hdr10_is_tone_mapped_by_default_and_kept_when_asked(ran: dict[str, Case]) -> None:
    case = ran["hdr10"]
    facts = succeeded(case)["input"]
    assert (facts["hdr"], facts["colorTransfer"], facts["maxCll"], facts["maxFall"]) == ("pq", "smpte2084", 1000, 400)
    assert facts["masteringDisplay"]["maxLuminance"] == 1000

    sdr = measure("hdr10", "sdr", case.files["sdr"])
    playable(sdr)
    assert sdr.video["profile"] == "High"

    hdr = measure("hdr10", "hdr", case.files["hdr"])
    playable(hdr, colour=PQ, pix_fmt="yuv420p10le")
    assert (hdr.video["profile"], hdr.video["codec_tag_string"]) == ("Main 10", "hvc1")
    side = {s["side_data_type"]: s for s in first_frame(case.files["hdr"]).get("side_data_list") or []}
    assert side["Mastering display metadata"]["max_luminance"] == "10000000/10000"
    assert side["Mastering display metadata"]["green_x"] == "13250/50000"
    assert (side["Content light level metadata"]["max_content"],
            side["Content light level metadata"]["max_average"]) == (1000, 400)

    av1 = measure("hdr10", "av1", case.files["av1"])
    playable(av1, colour=PQ, pix_fmt="yuv420p10le")
    assert av1.video["profile"] == "Main"
    side = {s["side_data_type"]: s for s in first_frame(case.files["av1"]).get("side_data_list") or []}
    assert "Mastering display metadata" in side and side["Content light level metadata"]["max_content"] == 1000


def test_hdr10_ladder_and_poster_are_sdr(ran: dict[str, Case]) -> None:
    case = ran["hdr10"]
    out = results(case.obj)["hls"]
    assert [(r["width"], r["height"]) for r in out["renditions"]] == [(426, 240), (214, 120)]
    for r in out["renditions"]:
        # A rendition's init segment and its media segments are one fragmented MP4.
        local = case.files["hls"]
        joined = local.parent / f"rendition-{r['height']}p.mp4"
        joined.write_bytes(b"".join(p.read_bytes() for p in [local / f"init_{r['height']}p.mp4",
                                                             *sorted(local.glob(f"seg_{r['height']}p_*.m4s"))]))
        v = next(s for s in probe(joined)["streams"] if s["codec_type"] == "video")
        MEASURED[f"hdr10/hls {r['height']}p"] = (f"{v['codec_name']} {v['profile']} {v['pix_fmt']} "
                                                 f"{v['width']}x{v['height']} "
                                                 f"{'/'.join(v.get(k, '-') for k in BT709)}")
        assert (v["pix_fmt"], v["profile"]) == ("yuv420p", "High")
        assert {k: v.get(k) for k in BT709} == BT709
    poster = probe(case.files["poster"])["streams"][0]
    MEASURED["hdr10/poster"] = f"{poster['codec_name']} {poster['pix_fmt']} {poster['width']}x{poster['height']}"
    assert (poster["pix_fmt"], poster["width"], poster["height"]) == ("yuvj420p", 320, 180)


def test_hlg_is_tone_mapped_by_default_and_kept_as_vp9_profile_2(ran: dict[str, Case]) -> None:
    case = ran["hlg"]
    assert succeeded(case)["input"]["hdr"] == "hlg"
    playable(measure("hlg", "sdr", case.files["sdr"]))
    kept = measure("hlg", "hdr", case.files["hdr"])
    playable(kept, colour=HLG, pix_fmt="yuv420p10le")
    assert kept.video["profile"] == "Profile 2"


# ---- geometry ----------------------------------------------------------------------------------------------


def test_odd_sizes_come_out_even(ran: dict[str, Case]) -> None:
    case = ran["odd"]
    facts = succeeded(case)["input"]
    assert (facts["width"], facts["height"]) == (1279, 719)
    web = measure("odd", "web", case.files["web"])
    playable(web)
    assert web.size == (1278, 718)  # the odd line cropped, nothing resampled
    p720 = measure("odd", "p720", case.files["p720"])
    playable(p720)
    assert p720.size == (1280, 720)


def test_anamorphic_input_comes_out_square_at_its_display_aspect(ran: dict[str, Case]) -> None:
    case = ran["anamorphic"]
    assert succeeded(case)["input"]["sampleAspectRatio"] == "4:3"
    web = measure("anamorphic", "web", case.files["web"])
    playable(web)
    assert web.size == (640, 360)
    p240 = measure("anamorphic", "p240", case.files["p240"])
    playable(p240)
    assert p240.size == (426, 240)
    thumb = probe(case.files["thumb"] / "thumb-00001.jpg")["streams"][0]
    assert (thumb["width"], thumb["height"]) == (160, 90)


def test_portrait_phone_video_is_upright_and_720p_is_its_short_side(ran: dict[str, Case]) -> None:
    case = ran["portrait"]
    facts = succeeded(case)["input"]
    assert (facts["width"], facts["height"], facts["rotation"]) == (1080, 1920, 90)
    p720 = measure("portrait", "p720", case.files["p720"])
    playable(p720)
    assert p720.size == (720, 1280)
    h640 = measure("portrait", "h640", case.files["h640"])  # an explicit height keeps its meaning
    playable(h640)
    assert h640.size == (360, 640)
    poster = probe(case.files["poster"])["streams"][0]
    assert (poster["width"], poster["height"]) == (180, 320)


# ---- time --------------------------------------------------------------------------------------------------


def rate(text: str) -> float:
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def test_vfr_input_comes_out_at_a_constant_sane_rate(ran: dict[str, Case]) -> None:
    case = ran["vfr"]
    facts = succeeded(case)["input"]
    assert facts["variableFrameRate"] is True and facts["baseFrameRate"] == 60
    for name in ("web", "mkv"):
        m = measure("vfr", name, case.files[name])
        playable(m)
        assert rate(m.video["r_frame_rate"]) == 30, m.video
        assert abs(rate(m.video["avg_frame_rate"]) - 30) < 0.5, m.video


def test_interlaced_input_comes_out_progressive(ran: dict[str, Case]) -> None:
    case = ran["interlaced"]
    assert succeeded(case)["input"]["interlaced"] is True
    web = measure("interlaced", "web", case.files["web"])
    playable(web)  # progressive
    assert rate(web.video["avg_frame_rate"]) == 25 and web.size == (352, 288)


# ---- streams -----------------------------------------------------------------------------------------------


def test_video_only_and_two_audio_tracks(ran: dict[str, Case]) -> None:
    silent = measure("video-only", "web", ran["video-only"].files["web"])
    playable(silent)
    assert silent.audio == []
    case = ran["two-tracks"]
    assert succeeded(case)["input"]["audioStreams"] == 2
    first = measure("two-tracks", "first", case.files["first"])
    second = measure("two-tracks", "second", case.files["second"])
    for m in (first, second):
        playable(m)
    assert [a["channels"] for a in first.audio] == [2] and [a["channels"] for a in second.audio] == [1]


@pytest.mark.parametrize(("case", "reason", "says"), [
    ("no-video", "NoVideoStream", "output web needs video (h264 video), but the input has no video stream"),
    ("no-video-images", "NoVideoStream", "output poster needs video (poster output)"),
    ("no-track", "AudioTrackNotFound", "output web asks for audio track 2, but the input has 2 audio stream(s)"),
])
def test_missing_streams_fail_at_once_without_retries(ran: dict[str, Case], kube: Kube, namespace: str, case: str,
                                                      reason: str, says: str) -> None:
    status = ran[case].obj["status"]
    assert (status["phase"], status["reason"], status["failureCategory"]) == ("Failed", reason, "BadInput"), status
    assert says in status["message"], status["message"]
    assert status["attempts"] == 1 and not status.get("outputs")
    (attempt,) = status["attemptHistory"]
    assert (attempt["exitCode"], attempt["reason"], attempt["failureClass"], attempt["counted"]) == (
        10, reason, "Permanent", False), attempt
    job = kube.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/{status['jobName']}")
    assert int(job["status"].get("failed") or 0) == 1  # one pod, though retryLimit is 2
    assert job_condition(job, "Failed")["reason"] == "PodFailurePolicy"  # type: ignore[index]
    MEASURED[case] = f"Failed {reason} after {status['attempts']} attempt (Job failed={job['status']['failed']})"


@pytest.mark.parametrize(("video", "message"), [
    ({"codec": "h264", "dynamicRange": "hdr"}, "dynamicRange hdr needs codec h265, vp9 or av1"),
    ({"codec": "h265", "dynamicRange": "hdr", "pixelFormat": "yuv420p"}, "dynamicRange hdr needs a 10-bit"),
    ({"codec": "av1", "pixelFormat": "yuv444p"}, "av1 takes pixelFormat yuv420p or yuv420p10le"),
    ({"codec": "copy", "dynamicRange": "sdr"}, "codec copy/none takes no encoding settings"),
])
def test_api_server_refuses_what_cannot_be_encoded_or_played(kube: Kube, namespace: str, video: Obj,
                                                             message: str) -> None:
    body = {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": "bad"},
            "spec": {"input": {"uri": "s3://transkube/in.mp4"}, "outputs": [
                {"name": "o", "uri": "s3://transkube/o.mkv", "container": "mkv", "video": video}]}}
    with pytest.raises(ApiError) as info:
        kube.create(tj_path(namespace), body)
    assert info.value.status == 422 and message in info.value.body, info.value.body
    assert "spec.outputs[0].video" in info.value.body  # the field is named


def test_record_of_what_was_measured() -> None:
    """Not a check: what was measured, for the record (pytest -s)."""
    for key, line in sorted(MEASURED.items()):
        print(f"{key:28} {line}")

