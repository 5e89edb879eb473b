"""ffprobe: facts about the input (status.input) and about each output (status.outputs).

Running ffprobe is a thin wrapper; turning its JSON into models is pure and unit-tested on captured output.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transkube_api.models import InputFacts, MasteringDisplay, OutputResult

from .errors import Internal, InvalidInput
from .ffmpeg_args import INPUT_DEMUXERS, file_url
from .playability import HDR_TRANSFERS, is_vfr
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


def first_frame_argv(path: Path, demuxers: tuple[str, ...] | None = None) -> list[str]:
    """The side data of the first video frame: where HDR10 metadata lives when the container does not repeat it
    (raw HEVC SEI)."""
    formats = ["-format_whitelist", ",".join(demuxers)] if demuxers else []
    return ["ffprobe", "-v", "error", "-print_format", "json", "-select_streams", "V:0", "-read_intervals", "%+#1",
            "-show_frames", "-show_entries", "frame=side_data_list", *formats, "-protocol_whitelist", "file",
            file_url(path)]


def run_ffprobe(path: Path, demuxers: tuple[str, ...] | None = None, *,
                argv: list[str] | None = None) -> dict[str, Any]:
    """ffprobe's JSON for `path` (or of `argv`); raises ProbeFailed when ffprobe rejects it."""
    try:
        proc = subprocess.run(argv or probe_argv(path, demuxers), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS, check=False, stdin=subprocess.DEVNULL)
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


def _name(value: Any) -> str | None:
    """A colour/format name, None for ffprobe's "unknown"/"unspecified"/absent."""
    return value if isinstance(value, str) and value not in ("", "unknown", "unspecified", "reserved") else None


def bit_depth(stream: Mapping[str, Any]) -> int | None:
    """Bits per sample: the decoder's bits_per_raw_sample, else read off the pixel format's name."""
    raw = _int(stream.get("bits_per_raw_sample"))
    if raw:
        return raw
    fmt = _name(stream.get("pix_fmt"))
    if fmt is None:
        return None
    if fmt in ("p010le", "p010be"):
        return 10
    if fmt.startswith(("rgb48", "bgr48", "rgba64", "bgra64", "p016")):
        return 16
    match = re.search(r"p(9|10|12|14|16)(le|be)$", fmt)
    return int(match.group(1)) if match else 8


def sample_aspect_ratio(stream: Mapping[str, Any]) -> str | None:
    """`4:3` for non-square pixels; None for square or unknown (`1:1`, `0:1`, absent)."""
    match = re.fullmatch(r"([0-9]+):([0-9]+)", str(stream.get("sample_aspect_ratio") or ""))
    if not match or not int(match.group(1)) or not int(match.group(2)) or match.group(1) == match.group(2):
        return None
    num, den = int(match.group(1)), int(match.group(2))
    divisor = math.gcd(num, den)
    return f"{num // divisor}:{den // divisor}"


def interlaced(stream: Mapping[str, Any]) -> bool | None:
    order = stream.get("field_order")
    if order in ("tt", "bb", "tb", "bt"):
        return True
    return False if order == "progressive" else None


def _side_data(lists: list[Any], kind: str) -> Mapping[str, Any] | None:
    for side_list in lists:
        for side in side_list or []:
            if isinstance(side, Mapping) and side.get("side_data_type") == kind:
                return side
    return None


def mastering_display(side: Mapping[str, Any] | None) -> MasteringDisplay | None:
    """ffprobe prints the values as fractions (`34000/50000`)."""
    if side is None:
        return None

    def value(key: str) -> float | None:
        num, _, den = str(side.get(key) or "").partition("/")
        n, d = _float(num), _float(den or "1")
        return n / d if n is not None and d else None

    values = {k: value(k) for k in ("red_x", "red_y", "green_x", "green_y", "blue_x", "blue_y", "white_point_x",
                                     "white_point_y", "max_luminance", "min_luminance")}
    if any(v is None for v in values.values()):
        return None
    v: dict[str, float] = {k: round(float(x or 0.0), 5) for k, x in values.items()}
    return MasteringDisplay(red=[v["red_x"], v["red_y"]], green=[v["green_x"], v["green_y"]],
                            blue=[v["blue_x"], v["blue_y"]], white_point=[v["white_point_x"], v["white_point_y"]],
                            max_luminance=v["max_luminance"], min_luminance=v["min_luminance"])


def video_facts(v: Mapping[str, Any], frame: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The video stream's format, colour, shape and timing (InputFacts fields). `frame`: its first frame's
    ffprobe JSON, for HDR10 metadata the stream level does not carry."""
    transfer = _name(v.get("color_transfer"))
    lists = [v.get("side_data_list"), (frame or {}).get("side_data_list")]
    light = _side_data(lists, "Content light level metadata")
    avg, base = parse_rate(v.get("avg_frame_rate")), parse_rate(v.get("r_frame_rate"))
    return {
        "sample_aspect_ratio": sample_aspect_ratio(v),
        "pixel_format": _name(v.get("pix_fmt")),
        "bit_depth": bit_depth(v),
        "color_primaries": _name(v.get("color_primaries")),
        "color_transfer": transfer,
        "color_space": _name(v.get("color_space")),
        "color_range": _name(v.get("color_range")),
        "hdr": HDR_TRANSFERS.get(transfer or ""),
        "mastering_display": mastering_display(_side_data(lists, "Mastering display metadata")),
        "max_cll": _int(light.get("max_content")) if light else None,
        "max_fall": _int(light.get("max_average")) if light else None,
        "interlaced": interlaced(v),
        "base_frame_rate": base,
        "variable_frame_rate": is_vfr(avg, base),
    }


def parse_input_facts(data: Mapping[str, Any], size_bytes: int | None = None,
                      first_frame: Mapping[str, Any] | None = None) -> InputFacts:
    """InputFacts from ffprobe's JSON (and the first video frame's, see first_frame_argv). No video and no audio
    stream means it is not media we can transcode."""
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
        **(video_facts(v, first_frame) if v else {}),
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


def needs_first_frame(data: Mapping[str, Any]) -> bool:
    """PQ video without HDR10 metadata at the stream level: its first frame may carry it (HEVC SEI)."""
    video = _streams(data, "video")
    if not video or video[0].get("color_transfer") != "smpte2084":
        return False
    return _side_data([video[0].get("side_data_list")], "Mastering display metadata") is None


def probe_input(path: Path) -> InputFacts:
    data = run_ffprobe(path, INPUT_DEMUXERS)
    frame: Mapping[str, Any] | None = None
    if needs_first_frame(data):
        frames = run_ffprobe(path, argv=first_frame_argv(path, INPUT_DEMUXERS)).get("frames") or []
        frame = frames[0] if frames and isinstance(frames[0], Mapping) else None
    return parse_input_facts(data, size_bytes=path.stat().st_size, first_frame=frame)


def probe_output(path: Path, *, name: str, uri: str, checksum: str | None) -> OutputResult:
    try:
        data = run_ffprobe(path)
    except ProbeFailed as exc:
        # We wrote this file ourselves; if it does not probe, that is our bug, not the user's input.
        raise Internal(f"output {name} is not readable: {exc.message}") from exc
    return parse_output_result(data, name=name, uri=uri, size_bytes=path.stat().st_size, checksum=checksum)
