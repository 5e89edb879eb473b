"""The media toolbox on the local cluster: adaptive streaming ladders, images, audio, edits and filters, input
limits. Every job runs for real (operator pod, worker pod, MinIO) on generated media; every output is checked
with ffprobe/ffmpeg after download."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.kube import ApiError, Kube

from .conftest import tj_path
from .media_fixtures import (
    download,
    download_prefix,
    ffprobe,
    loudness_lufs,
    make_media,
    out_prefix,
    results,
    run_job,
    succeeded,
    transcodejob,
    upload,
    video_stream,
)

FRAME = 1 / 25  # the generated inputs run at 25 fps


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_media(tmp_path_factory)


def extinf(playlist: Path) -> list[float]:
    return [float(x) for x in re.findall(r"#EXTINF:([0-9.]+),", playlist.read_text())]


def plays_through(path: Path) -> None:
    """ffmpeg itself reads the package from its entry point and decodes every stream to the end."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(path.absolute()),
                           "-map", "0", "-f", "null", "-"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_hls_and_dash_ladders(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path], tmp_path: Path) -> None:
    hls, dash = out_prefix(), out_prefix()
    obj = run_job(kube, tj_namespace, transcodejob("ladders", upload(s3, media["av"]), [
        {"name": "hls", "type": "hls", "uri": hls,
         "streaming": {"segmentSeconds": 2, "preset": "veryfast",
                       "renditions": [{"resolution": "240p", "bitrate": "300k"},
                                      {"resolution": "360p", "bitrate": "600k"}]},
         "audio": {"codec": "aac", "bitrate": "64k"}},
        # The automatic ladder on a 360p input: 360p and 240p only (never upscale), even when 8 are allowed.
        {"name": "dash", "type": "dash", "uri": dash,
         "streaming": {"segmentSeconds": 3, "preset": "veryfast", "autoLadder": {"maxRenditions": 8},
                       "alsoHls": True}},
    ]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    out = results(obj)

    h = out["hls"]
    assert h["type"] == "hls" and h["playlist"] == "master.m3u8"
    assert [(r["width"], r["height"]) for r in h["renditions"]] == [(640, 360), (426, 240)]
    local = download_prefix(s3, h, tmp_path / "hls")
    master = (local / "master.m3u8").read_text()
    assert master.count("#EXT-X-STREAM-INF") == 2 and "RESOLUTION=640x360" in master and "TYPE=AUDIO" in master
    durations = {r["playlist"]: extinf(local / r["playlist"]) for r in h["renditions"]}
    for segs in durations.values():
        assert len(segs) == 3 and all(abs(d - 2.0) < FRAME / 2 for d in segs), segs
    # Keyframes aligned: every rendition cuts its segments at the same instants.
    assert len(set(map(tuple, durations.values()))) == 1
    for r in h["renditions"]:
        probe = ffprobe(local / f"init_{r['height']}p.mp4")
        assert (video_stream(probe)["width"], video_stream(probe)["height"]) == (r["width"], r["height"])
    plays_through(local / "master.m3u8")
    assert abs(h["durationSeconds"] - 6) < 0.2

    d = out["dash"]
    assert d["playlist"] == "manifest.mpd"
    assert [r["height"] for r in d["renditions"]] == [360, 240]
    assert [r["bitrate"] for r in d["renditions"]] == [800_000, 400_000]
    local = download_prefix(s3, d, tmp_path / "dash")
    mpd = (local / "manifest.mpd").read_text()
    assert mpd.count("<Representation") == 3  # two video, one audio
    plays_through(local / "manifest.mpd")
    plays_through(local / "master.m3u8")  # the HLS view of the same CMAF segments
    for r in d["renditions"]:
        segs = extinf(local / r["playlist"])
        assert len(segs) == 2 and all(abs(x - 3.0) < FRAME / 2 for x in segs), segs


def test_thumbnails_sprite_and_poster(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                      tmp_path: Path) -> None:
    at, every, sprite = out_prefix(), out_prefix(), out_prefix()
    poster = out_prefix() + "poster.webp"
    obj = run_job(kube, tj_namespace, transcodejob("images", upload(s3, media["av"]), [
        {"name": "at", "type": "thumbnails", "uri": at, "thumbnails": {"times": [0.5, 2, 5.5], "width": 320}},
        {"name": "every", "type": "thumbnails", "uri": every,
         "thumbnails": {"intervalSeconds": 2, "format": "webp", "height": 90}},
        {"name": "sprite", "type": "sprite", "uri": sprite, "sprite": {"intervalSeconds": 1, "columns": 4,
                                                                        "tileWidth": 160}},
        {"name": "poster", "type": "poster", "uri": poster, "poster": {"timeSeconds": 3, "format": "webp",
                                                                       "width": 480}},
    ]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    out = results(obj)

    assert out["at"]["files"] == ["thumb-00001.jpg", "thumb-00002.jpg", "thumb-00003.jpg"]
    for name in out["at"]["files"]:
        v = video_stream(ffprobe(download(s3, out["at"]["uri"] + name, tmp_path / "at" / name)))
        assert (v["codec_name"], v["width"], v["height"]) == ("mjpeg", 320, 180)

    assert out["every"]["files"] == ["thumb-00001.webp", "thumb-00002.webp", "thumb-00003.webp"]  # 0 s, 2 s, 4 s
    for name in out["every"]["files"]:
        v = video_stream(ffprobe(download(s3, out["every"]["uri"] + name, tmp_path / "every" / name)))
        assert (v["codec_name"], v["width"], v["height"]) == ("webp", 160, 90)

    assert out["sprite"]["files"] == ["sprite.jpg", "storyboard.vtt"]
    local = download_prefix(s3, out["sprite"], tmp_path / "sprite")
    sheet = video_stream(ffprobe(local / "sprite.jpg"))
    assert (sheet["width"], sheet["height"]) == (4 * 160, 2 * 90)  # 6 tiles of 160x90 in rows of 4
    vtt = (local / "storyboard.vtt").read_text()
    assert vtt.startswith("WEBVTT")
    cues = re.findall(r"(\S+) --> (\S+)\n(\S+)", vtt)
    assert len(cues) == 6
    assert cues[0] == ("00:00:00.000", "00:00:01.000", "sprite.jpg#xywh=0,0,160,90")
    assert cues[5] == ("00:00:05.000", "00:00:06.000", "sprite.jpg#xywh=160,90,160,90")

    assert out["poster"]["type"] == "poster" and out["poster"]["checksum"].startswith("sha256:")
    v = video_stream(ffprobe(download(s3, poster, tmp_path / "poster.webp")))
    assert (v["codec_name"], v["width"], v["height"]) == ("webp", 480, 270)


def test_audio_outputs_loudness_downmix_and_track(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                                  tmp_path: Path) -> None:
    prefix = out_prefix()
    obj = run_job(kube, tj_namespace, transcodejob("audio", upload(s3, media["tracks"]), [
        # Track 1 is 5.1 pink noise: downmixed to stereo and normalised to -16 LUFS.
        {"name": "m4a", "uri": prefix + "a.m4a", "container": "m4a",
         "audio": {"codec": "aac", "bitrate": "128k", "track": 1, "channels": 2,
                   "loudness": {"integratedLufs": -16, "truePeakDb": -1.5}}},
        # Track 0 is a quiet tone: brought up to -23 LUFS (EBU R128).
        {"name": "mp3", "uri": prefix + "a.mp3", "container": "mp3", "audio": {"codec": "mp3", "loudness": {}}},
        {"name": "opus", "uri": prefix + "a.ogg", "container": "ogg", "audio": {"codec": "opus", "bitrate": "64k",
                                                                                "track": 1, "channels": 1}},
        {"name": "flac", "uri": prefix + "a.flac", "container": "flac", "audio": {"codec": "flac", "track": 1}},
    ]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    out = results(obj)
    assert obj["status"]["input"]["audioStreams"] == 2

    files = {name: download(s3, out[name]["uri"], tmp_path / Path(out[name]["uri"]).name) for name in out}
    expect = {"m4a": ("aac", 2), "mp3": ("mp3", 2), "opus": ("opus", 1), "flac": ("flac", 6)}
    for name, (codec, channels) in expect.items():
        probe = ffprobe(files[name])
        assert [s["codec_type"] for s in probe["streams"]] == ["audio"], name
        a = probe["streams"][0]
        assert (a["codec_name"], a["channels"]) == (codec, channels), name
        assert abs(float(probe["format"]["duration"]) - 4) < 0.1, name
        assert out[name]["audioCodec"] == codec and out[name].get("videoCodec") is None
    assert abs(loudness_lufs(files["m4a"]) - -16) <= 1.0
    assert abs(loudness_lufs(files["mp3"]) - -23) <= 1.0
    assert int(ffprobe(files["m4a"])["streams"][0]["sample_rate"]) == 48000  # not loudnorm's 192 kHz


def test_trim_filters_watermark_and_rotation(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                             tmp_path: Path) -> None:
    prefix = out_prefix()
    mark = upload(s3, media["mark"])
    obj = run_job(kube, tj_namespace, transcodejob("edits", upload(s3, media["av"]), [
        {"name": "trimmed", "uri": prefix + "trimmed.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast"}, "trim": {"startSeconds": 1.5, "endSeconds": 4}},
        {"name": "square", "uri": prefix + "square.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast", "fps": 10},
         "filters": {"deinterlace": True, "denoise": "medium", "aspect": {"ratio": "1:1", "mode": "crop"}}},
        {"name": "tall", "uri": prefix + "tall.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast", "height": 640},
         "filters": {"aspect": {"ratio": "9:16", "mode": "pad"}}, "trim": {"durationSeconds": 1}},
        {"name": "marked", "uri": prefix + "marked.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast", "crf": 18},
         "filters": {"watermark": {"uri": mark, "position": "top-right", "scale": 0.25, "opacity": 1,
                                   "margin": 10}}},
    ]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    out = results(obj)
    files = {name: download(s3, out[name]["uri"], tmp_path / f"{name}.mp4") for name in out}

    trimmed = ffprobe(files["trimmed"])
    assert abs(float(video_stream(trimmed)["duration"]) - 2.5) <= FRAME + 1e-6
    assert abs(float(trimmed["format"]["duration"]) - 2.5) < 0.1

    square = video_stream(ffprobe(files["square"]))
    assert (square["width"], square["height"], square["avg_frame_rate"]) == (360, 360, "10/1")

    tall = ffprobe(files["tall"])
    # Padded to 9:16 (640x1136), then scaled to 640 high: the width keeps the aspect, rounded to even.
    assert video_stream(tall)["height"] == 640 and abs(video_stream(tall)["width"] - 360) <= 2
    assert abs(float(video_stream(tall)["duration"]) - 1) <= FRAME + 1e-6

    # The watermark: 25% of 640 = 160x80, 10 px from the top-right corner, opaque red.
    def pixel(x: int, y: int) -> tuple[int, ...]:
        raw = subprocess.run(["ffmpeg", "-v", "error", "-ss", "4", "-i", str(files["marked"]), "-vf",
                              f"format=rgb24,crop=1:1:{x}:{y}", "-frames:v", "1", "-f", "rawvideo", "-"],
                             check=True, capture_output=True).stdout
        return tuple(raw)

    def red(x: int, y: int) -> bool:
        r, g, b = pixel(x, y)
        return r > 200 and g < 60 and b < 60

    # The overlay works in 4:4:4; the output is still the playable 8-bit 4:2:0 High profile.
    marked = video_stream(ffprobe(files["marked"]))
    assert (marked["pix_fmt"], marked["profile"], marked["color_space"]) == ("yuv420p", "High", "bt709")
    assert red(640 - 10 - 80, 10 + 40) and red(640 - 10 - 155, 10 + 75)  # inside the 160x80 mark
    assert not red(640 - 10 - 170, 10 + 40) and not red(640 - 10 - 80, 10 + 85)  # left of it, below it

    rotated = run_job(kube, tj_namespace, transcodejob("rotated", upload(s3, media["rotated"]), [
        {"name": "upright", "uri": prefix + "upright.mp4", "container": "mp4",
         "video": {"codec": "h264", "preset": "veryfast"}}]))
    assert rotated["status"]["phase"] == "Succeeded", succeeded(rotated)()
    facts = rotated["status"]["input"]
    assert (facts["width"], facts["height"], facts["rotation"]) == (180, 320, 90)
    upright = video_stream(ffprobe(download(s3, prefix + "upright.mp4", tmp_path / "upright.mp4")))
    assert (upright["width"], upright["height"]) == (180, 320)  # rotated while decoding, no rotation flag left
    assert not any("rotation" in sd for sd in upright.get("side_data_list") or [])


@pytest.mark.parametrize(("key", "reason"), [
    ("many", "TooManyStreams"),
    ("long", "DurationLimitExceeded"),
    ("huge", "ResolutionLimitExceeded"),
    ("playlist", "InvalidInput"),  # playlists are not an input format: they could read other files
])
def test_inputs_over_the_limits_are_refused(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path],
                                            key: str, reason: str) -> None:
    obj = run_job(kube, tj_namespace, transcodejob(f"limit-{key}", upload(s3, media[key]), [
        {"name": "o", "uri": out_prefix() + "o.mka", "container": "mkv", "video": {"codec": "h264"},
         "audio": {"codec": "aac"}}]))
    status = obj["status"]
    assert (status["phase"], status["reason"]) == ("Failed", reason), status
    assert status["attempts"] == 1  # permanent: never retried
    if reason == "InvalidInput":
        assert "whitelist" in status["message"] or "not a readable media file" in status["message"]


@pytest.mark.parametrize(("output", "message"), [
    ({"type": "hls", "uri": "s3://transkube/o/x.m3u8"}, "take a URI prefix ending in /"),
    ({"type": "hls", "uri": "s3://transkube/o/", "container": "mp4"}, "file outputs need a container"),
    ({"type": "thumbnails", "uri": "s3://transkube/o/"}, "thumbnails outputs need thumbnails"),
    ({"type": "thumbnails", "uri": "s3://transkube/o/", "thumbnails": {"times": [1], "intervalSeconds": 2}},
     "exactly one of times and intervalSeconds"),
    ({"type": "dash", "uri": "s3://transkube/o/", "streaming": {"renditions": [{"height": 360, "bitrate": "1M"}],
                                                                "autoLadder": {}}},
     "renditions and autoLadder are mutually exclusive"),
    ({"uri": "s3://transkube/o.mp3", "container": "mp3", "audio": {"codec": "aac"}},
     "mp3 cannot carry that audio codec"),
    ({"uri": "s3://transkube/o.mp4", "container": "mp4", "trim": {"startSeconds": 5, "endSeconds": 2}},
     "endSeconds must be after startSeconds"),
    ({"uri": "s3://transkube/o.mp4", "container": "mp4", "video": {"codec": "copy"},
      "filters": {"denoise": "light"}}, "filters need re-encoded video"),
])
def test_api_server_rejects_bad_media_outputs(kube: Kube, tj_namespace: str, output: dict[str, Any],
                                              message: str) -> None:
    body = transcodejob("bad", "s3://transkube/in.mp4", [{"name": "o", **output}])
    with pytest.raises(ApiError) as info:
        kube.create(tj_path(tj_namespace), body)
    assert info.value.status == 422
    assert message in info.value.body


def test_ladder_never_upscales_a_small_input(kube: Kube, tj_namespace: str, s3: Any, media: dict[str, Path]) -> None:
    obj = run_job(kube, tj_namespace, transcodejob("tiny-ladder", upload(s3, media["tracks"]), [
        {"name": "hls", "type": "hls", "uri": out_prefix(), "streaming": {"segmentSeconds": 2,
                                                                          "preset": "ultrafast"}}]))
    assert obj["status"]["phase"] == "Succeeded", succeeded(obj)()
    (rendition,) = results(obj)["hls"]["renditions"]  # 160x90 input: one rendition at its own size
    assert (rendition["width"], rendition["height"]) == (160, 90)
    assert math.isclose(rendition["bitrate"], 300_000)
