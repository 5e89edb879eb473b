"""ffprobe: facts about the input (status.input) and about each output (status.outputs).

Running ffprobe is a thin wrapper; turning its JSON into models is pure and unit-tested on captured output.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transkube_api.models import InputFacts, OutputResult

from .errors import Internal, InvalidInput
from .ffmpeg_args import INPUT_DEMUXERS, file_url
from .transcode import tail_lines

PROBE_TIMEOUT_SECONDS = 120  # a healthy probe takes well under a second; a hang must not eat the deadline
STDERR_LIMIT = 512


class ProbeFailed(InvalidInput):
    """ffprobe could not read the file as media."""


def probe_argv(path: Path, demuxers: tuple[str, ...] | None = None) -> list[str]:
    # Same protocol restriction as the transcode: a crafted input cannot make ffprobe open other URLs. Inputs are
    # also limited to demuxers that cannot reference other files (playlists, concat lists); our own outputs
    # (HLS/DASH playlists) are probed without that list.
    formats = ["-format_whitelist", ",".join(demuxers)] if demuxers else []
    return ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
            *formats, "-protocol_whitelist", "file", file_url(path)]


def run_ffprobe(path: Path, demuxers: tuple[str, ...] | None = None) -> dict[str, Any]:
    """ffprobe's JSON for `path`; raises ProbeFailed when ffprobe rejects it."""
    try:
        proc = subprocess.run(probe_argv(path, demuxers), capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise Internal(f"ffprobe timed out after {PROBE_TIMEOUT_SECONDS}s") from exc
    if proc.returncode != 0:
        # ffprobe prints the file:/path it was given; the scratch path means nothing to the user.
        detail = tail_lines(proc.stderr.replace(file_url(path), "input"), STDERR_LIMIT)
        detail = detail or f"exit code {proc.returncode}"
        raise ProbeFailed(f"not a readable media file: {detail}")
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise Internal(f"ffprobe printed invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Internal("ffprobe printed unexpected JSON")
    return data


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and result >= 0 else None  # drop NaN and negatives


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_rate(value: Any) -> float | None:
    """`30000/1001` -> 29.97; `0/0` (unknown) -> None."""
    if not isinstance(value, str) or "/" not in value:
        return _float(value)
    num, _, den = value.partition("/")
    n, d = _float(num), _float(den)
    if not n or not d:
        return None
    return round(n / d, 3)


def _streams(data: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    streams = [s for s in data.get("streams") or [] if isinstance(s, Mapping) and s.get("codec_type") == kind]
    if kind == "video":
        # Cover art in audio files is a one-frame "video" stream; it is not the video (ffmpeg_args maps `0:V`).
        return [s for s in streams if not (s.get("disposition") or {}).get("attached_pic")]
    return streams


def _duration(data: Mapping[str, Any]) -> float | None:
    fmt = data.get("format") or {}
    duration = _float(fmt.get("duration"))
    if duration is None:
        candidates = [_float(s.get("duration")) for s in data.get("streams") or [] if isinstance(s, Mapping)]
        known = [c for c in candidates if c is not None]
        duration = max(known) if known else None
    return round(duration, 3) if duration is not None else None


def rotation_of(stream: Mapping[str, Any]) -> int | None:
    """Display rotation in degrees (0, 90, 180, 270) from the display matrix side data or the old rotate tag."""
    raw: Any = None
    for side in stream.get("side_data_list") or []:
        if isinstance(side, Mapping) and "rotation" in side:
            raw = side["rotation"]
    if raw is None:
        raw = (stream.get("tags") or {}).get("rotate")
    value = _float(raw) if raw is not None and not str(raw).startswith("-") else None
    if value is None and raw is not None:
        negative = _float(str(raw)[1:])
        value = -negative if negative is not None else None
    if value is None:
        return None
    return round(value) % 360


def parse_input_facts(data: Mapping[str, Any], size_bytes: int | None = None) -> InputFacts:
    """InputFacts from ffprobe's JSON. No video and no audio stream means it is not media we can transcode."""
    video = _streams(data, "video")
    audio = _streams(data, "audio")
    if not video and not audio:
        raise ProbeFailed("the input has no video or audio stream")
    fmt = data.get("format") or {}
    v = video[0] if video else {}
    # avg_frame_rate is what players show; r_frame_rate is the fallback when the container does not know it.
    frame_rate = (parse_rate(v.get("avg_frame_rate")) or parse_rate(v.get("r_frame_rate"))) if v else None
    rotation = rotation_of(v) if v else None
    width, height = _int(v.get("width")), _int(v.get("height"))
    if rotation in (90, 270):
        width, height = height, width  # ffmpeg rotates while decoding (autorotate): report what is displayed
    streams = [s for s in data.get("streams") or [] if isinstance(s, Mapping)]
    return InputFacts(
        duration_seconds=_duration(data),
        width=width,
        height=height,
        video_codec=v.get("codec_name") if v else None,
        audio_codec=audio[0].get("codec_name") if audio else None,
        frame_rate=frame_rate,
        bitrate=_int(fmt.get("bit_rate")),
        size_bytes=size_bytes if size_bytes is not None else _int(fmt.get("size")),
        format_name=fmt.get("format_name"),
        stream_count=len(streams) if streams else None,
        audio_streams=len(audio) if streams else None,
        rotation=rotation or None,
    )


def parse_output_result(data: Mapping[str, Any], *, name: str, uri: str, size_bytes: int | None,
                        checksum: str | None) -> OutputResult:
    video = _streams(data, "video")
    audio = _streams(data, "audio")
    v = video[0] if video else {}
    return OutputResult(
        name=name,
        uri=uri,
        size_bytes=size_bytes,
        duration_seconds=_duration(data),
        video_codec=v.get("codec_name") if v else None,
        audio_codec=audio[0].get("codec_name") if audio else None,
        width=_int(v.get("width")),
        height=_int(v.get("height")),
        checksum=checksum,
    )


def probe_input(path: Path) -> InputFacts:
    return parse_input_facts(run_ffprobe(path, INPUT_DEMUXERS), size_bytes=path.stat().st_size)


def probe_output(path: Path, *, name: str, uri: str, checksum: str | None) -> OutputResult:
    try:
        data = run_ffprobe(path)
    except ProbeFailed as exc:
        # We wrote this file ourselves; if it does not probe, that is our bug, not the user's input.
        raise Internal(f"output {name} is not readable: {exc.message}") from exc
    return parse_output_result(data, name=name, uri=uri, size_bytes=path.stat().st_size, checksum=checksum)
