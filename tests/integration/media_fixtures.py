"""Generated media and helpers for the media-toolbox integration tests (tests/integration/test_media_*.py)."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transkube_dev.kube import Kube, Obj

from .conftest import phase_of, tj_path, wait_for

BUCKET = "transkube"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=300)


def ffmpeg(*args: str) -> None:
    run("ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args)


def ffprobe(path: Path) -> Obj:
    out = run("ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path))
    return dict(json.loads(out.stdout))


def loudness_lufs(path: Path) -> float:
    """Integrated loudness measured by ffmpeg's own EBU R128 meter."""
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-i", str(path), "-map", "0:a:0",
                           "-af", "ebur128", "-f", "null", "-"], check=True, capture_output=True, text=True)
    summary = proc.stderr[proc.stderr.rindex("Summary:"):]
    match = re.search(r"I:\s+(-?[0-9.]+) LUFS", summary)
    assert match, summary
    return float(match.group(1))


def make_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small generated inputs (lavfi sources) for every media test; a module's session fixture calls this."""
    d = tmp_path_factory.mktemp("media-toolbox")
    av = d / "av.mp4"  # 6 s, 640x360 at 25 fps, a 440 Hz tone
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi",
           "-i", "sine=frequency=440:sample_rate=48000", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "aac", "-shortest", str(av))
    tracks = d / "tracks.mkv"  # 4 s: a small video, a quiet stereo tone (track 0) and 5.1 pink noise (track 1)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000,volume=0.05,aformat=channel_layouts=stereo",
           "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.3:sample_rate=48000,aformat=channel_layouts=5.1",
           "-t", "4", "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264", "-preset", "ultrafast",
           "-c:a", "flac", str(tracks))
    rotated = d / "rotated.mp4"  # 320x180 coded, displayed rotated by 90 degrees
    plain = d / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "2", "-c:v", "libx264", "-preset",
           "ultrafast", str(plain))
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    mark = d / "mark.png"  # an opaque red image, to find it again in the output's pixels
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=200x100,format=rgba", "-frames:v", "1", str(mark))
    many = d / "many-streams.mkv"  # 33 audio streams: over the default limit of 32
    args: list[str] = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "1"]
    for _ in range(33):
        args += ["-map", "0:a"]
    ffmpeg(*args, "-c:a", "pcm_s16le", str(many))
    long = d / "long-claim.mkv"  # one second of audio that starts at 25 h: a duration over the 24 h default
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "1", "-c:a", "pcm_s16le", "-output_ts_offset",
           "90000", str(long))
    huge = d / "huge.mp4"  # one 8192x4352 frame: over the 8K default
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=8192x4352:r=1", "-frames:v", "1", "-c:v", "libx264", "-preset",
           "ultrafast", str(huge))
    playlist = d / "sneaky.m3u8"  # a "video" that is a playlist pointing at a local file
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    return {"av": av, "tracks": tracks, "rotated": rotated, "mark": mark, "many": many, "long": long, "huge": huge,
            "playlist": playlist}


def upload(s3: Any, path: Path) -> str:
    key = f"inputs/{uuid.uuid4().hex}/{path.name}"
    s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def out_prefix() -> str:
    return f"s3://{BUCKET}/outputs/{uuid.uuid4().hex}/"


def key_of(uri: str) -> str:
    return uri.split("/", 3)[3]


def download(s3: Any, uri: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(BUCKET, key_of(uri), str(dest))
    return dest


def download_prefix(s3: Any, result: Obj, dest: Path) -> Path:
    """Every file status.outputs[] lists for a multi-file output, into `dest`."""
    for name in result["files"]:
        download(s3, result["uri"] + name, dest / name)
    return dest


def transcodejob(name: str, input_uri: str, outputs: list[Obj]) -> Obj:
    return {"apiVersion": "media.transkube.dev/v1alpha1", "kind": "TranscodeJob", "metadata": {"name": name},
            "spec": {"input": {"uri": input_uri}, "outputs": outputs, "retryLimit": 0}}


def run_job(kube: Kube, ns: str, body: Obj, timeout: float = 300) -> Obj:
    """Create the TranscodeJob and wait until it is Succeeded or Failed; returns the final object."""
    kube.create(tj_path(ns), body)
    name = body["metadata"]["name"]
    wait_for(f"{name} finished", lambda: phase_of(kube, ns, name) in ("Succeeded", "Failed"), timeout=timeout)
    return kube.get(tj_path(ns, name))


def results(obj: Obj) -> dict[str, Obj]:
    return {o["name"]: o for o in obj["status"].get("outputs") or []}


def video_stream(probe: Obj) -> Obj:
    return next(s for s in probe["streams"] if s["codec_type"] == "video")


def succeeded(obj: Obj) -> Callable[[], str]:
    return lambda: f"{obj['status'].get('phase')}: {obj['status'].get('reason')}: {obj['status'].get('message')}"
