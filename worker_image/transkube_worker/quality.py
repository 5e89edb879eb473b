"""Quality metrics of an encoded output against its source: PSNR, SSIM and (where ffmpeg has libvmaf) VMAF, and
the quality gate's re-encode settings. The argv builders and parsers are pure; `available_filters` runs ffmpeg.

Frames line up and compare like with like because the reference is the source through the output's own filters
(ffmpeg_args.plan_video: deinterlace, denoise, constant frame rate, square pixels, aspect crop/pad, size, and
the colour path: tone mapping, colour conversion, pixel format), cut to the output's trim the way ffmpeg's
output-side -ss cut the encode (see trim_filter); both sides are in the output's pixel format and start at
timestamp 0. A watermark is not applied to the reference. An hls/dash output is measured rendition by
rendition, each against the source scaled to that rendition's size (its init and media segments joined into one
local fragmented MP4, see join_rendition).
"""

from __future__ import annotations

import functools
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from transkube_api.models import InputFacts, OutputSpec, QualityMetrics, VideoSpec

from .ffmpeg_args import DEFAULT_LIMITS, Limits, _num, bitrate_bits, input_args, plan_video, pre_filters
from .playability import BT709, colour_chain, output_frame_rate, pixel_format, source_colour, source_geometry
from .transcode import tail_lines

METRIC_FILTERS: dict[str, str] = {"psnr": "psnr", "ssim": "ssim", "vmaf": "libvmaf"}
PSNR_CAP = 100.0  # identical frames have infinite PSNR; JSON has no infinity
# Encoder defaults when an output sets neither crf nor bitrate (libx264, libx265, libvpx-vp9 in crf mode,
# SVT-AV1); the re-encode starts from these.
DEFAULT_CRF: dict[str, int] = {"h264": 23, "h265": 28, "vp9": 31, "av1": 35}
REENCODE_CRF_STEP = 6  # the re-encode lowers crf by this much (about twice the bitrate for x264)...
REENCODE_BITRATE_FACTOR = 1.5  # ...or raises the bitrate by this factor

# Muxers without variable frame rate: ffmpeg's output -ss there keeps the frame on screen at the start time
# (constant-frame-rate sync); in mkv/webm (variable frame rate) the first frame at or after it.
CFR_CONTAINERS = ("mp4", "mov")

PSNR_LINE = re.compile(r"PSNR y:\S+ u:\S+ v:\S+ average:(\S+)")
SSIM_LINE = re.compile(r"SSIM Y:.* All:([0-9.]+)")
VMAF_LINE = re.compile(r"VMAF score[:=]\s*([0-9.]+)")


@dataclass(frozen=True)
class QualityOutcome:
    metrics: QualityMetrics | None  # file outputs
    reencoded: bool = False
    renditions: tuple[QualityMetrics, ...] = ()  # hls/dash: one per rendition, in ladder order (highest first)


@functools.cache
def available_filters() -> frozenset[str]:
    """Filter names this ffmpeg build has (`ffmpeg -filters`)."""
    try:
        proc = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[T.][S.][C.]?\s+(\S+)\s", proc.stdout, re.MULTILINE))


def computable(requested: list[str], filters: frozenset[str]) -> tuple[list[str], list[str]]:
    """(metrics to compute, metrics this ffmpeg cannot compute), in the requested order."""
    ok = [m for m in requested if METRIC_FILTERS[m] in filters]
    return ok, [m for m in requested if m not in ok]


def cfr_sync(output: OutputSpec, stream_count: int | None) -> bool:
    """Whether ffmpeg 5.1's automatic video sync is constant-frame-rate for this output: muxers without variable
    frame rate (mp4, mov), unless the input has a single stream (then it uses variable-frame-rate sync). The hls
    and dash muxers have no variable frame rate either, and their video comes out of a filter graph (not straight
    from the input), so the single-stream exception never applies to them."""
    if output.type in ("hls", "dash"):
        return True
    return output.container in CFR_CONTAINERS and stream_count != 1


def join_rendition(parts: list[Path], dest: Path) -> Path:
    """Concatenate a rendition's init and media segments (media_args.rendition_parts) into one fragmented MP4.

    Why not read the rendition through its playlist: the hls (and dash) demuxers open whatever URIs a playlist
    names, so they are kept out of the demuxer whitelist of every input. Our own playlists would be safe to read
    (written by ffmpeg in this attempt into the scratch dir, naming only sibling segment files, and read with
    -protocol_whitelist file), but a CMAF init segment followed by its media segments is itself a valid fragmented
    MP4: the joined file goes through the same hardened input as the source (mov demuxer only, file protocol,
    max_pixels), and HLS and DASH renditions are measured the same way."""
    with dest.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    return dest


def trim_filter(output: OutputSpec, frame_rate: float | None, cfr: bool) -> str | None:
    """The reference's cut, as output-side -ss cuts the encode: with constant-frame-rate sync the first frame is
    the one nearest startSeconds (ties: the earlier), with variable-frame-rate sync the first at or after it;
    for the trim's length (the comparison stops at the shorter side anyway)."""
    if output.trim is None:
        return None
    start = output.trim.start_seconds
    if start and frame_rate and cfr:
        start = max(0.0, start - 0.5 / frame_rate - 0.0005)
    parts = [f"start={start:.6f}".rstrip("0").rstrip(".")] if start else []
    if output.trim.length is not None:
        parts.append(f"duration={_num(output.trim.length + (output.trim.start_seconds - start))}")
    return f"trim={':'.join(parts)}" if parts else None


def reference_chain(output: OutputSpec, facts: InputFacts, width: int, height: int) -> tuple[list[str], str]:
    """The source's filters to look like the output (`width` x `height`, as probed), and the pixel format both
    sides are compared in."""
    cut = trim_filter(output, output_frame_rate(facts), cfr_sync(output, facts.stream_count))
    trim = [cut] if cut else []
    if output.type in ("hls", "dash"):
        square, _ = source_geometry(facts, output.filters.aspect if output.filters else None)
        colour = colour_chain(source_colour(facts), BT709, facts.pixel_format, "yuv420p")
        return [*pre_filters(output.filters, facts), *square, *trim, f"scale={width}:{height}", *colour], "yuv420p"
    plan = plan_video(output, facts)
    size = [] if (plan.geometry.width, plan.geometry.height) == (width, height) else [f"scale={width}:{height}"]
    compare = pixel_format(output.video, facts)
    return [*plan.pre, *trim, *plan.geometry.filters, *size, *plan.colour], compare


def quality_argv(output: OutputSpec, encoded: Path, source: Path, facts: InputFacts, width: int, height: int,
                 metrics: list[str], *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """ffmpeg comparing `encoded` (input 0, the distorted side) with `source` (input 1, the reference); the
    summaries go to stderr (loglevel info), progress to stdout. `facts`: the source's (probed). Outputs with
    video.fps are not measurable (the API refuses quality with it): ffmpeg's -r picks frames by its sync logic,
    which no reference filter reproduces."""
    if not metrics:
        raise ValueError("no metric to compute")
    chain, compare = reference_chain(output, facts, width, height)
    chain += [f"format={compare}", "setpts=PTS-STARTPTS"]
    n = len(metrics)
    graph = [f"[0:V:0]format={compare},setpts=PTS-STARTPTS,split={n}" + "".join(f"[d{i}]" for i in range(n)),
             f"[1:V:0]{','.join(chain)},split={n}" + "".join(f"[r{i}]" for i in range(n))]
    for i, metric in enumerate(metrics):
        # libvmaf takes the distorted stream first, like psnr/ssim.
        options = "=shortest=1" if metric in ("psnr", "ssim") else ""
        graph.append(f"[d{i}][r{i}]{METRIC_FILTERS[metric]}{options}")
    return ["ffmpeg", "-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "info",
            *input_args(encoded, limits), *input_args(source, limits), "-filter_complex", ";".join(graph),
            "-f", "null", "-"]


def parse_metrics(stderr: str, metrics: list[str], unavailable: list[str]) -> QualityMetrics:
    """The summary lines of psnr/ssim/libvmaf; raises ValueError when a computed metric printed none."""
    values: dict[str, float] = {}
    for metric, pattern in (("psnr", PSNR_LINE), ("ssim", SSIM_LINE), ("vmaf", VMAF_LINE)):
        if metric not in metrics:
            continue
        found = pattern.findall(stderr)
        if not found:
            raise ValueError(f"ffmpeg printed no {metric} result: {tail_lines(stderr, 300)}")
        raw = found[-1]
        value = float(raw) if raw not in ("inf", "nan") else PSNR_CAP
        values[metric] = round(min(value, PSNR_CAP) if math.isfinite(value) else PSNR_CAP, 4)
    return QualityMetrics(**values, unavailable=list(unavailable) or None)  # type: ignore[arg-type]


def boosted(output: OutputSpec) -> OutputSpec:
    """The output re-encoded at a higher quality: bitrate x1.5 when it sets a bitrate, else crf -6 (from the
    encoder's default crf when it sets neither)."""
    codec = output.video_codec
    video = output.video or VideoSpec.model_validate({"codec": codec})
    if video.bitrate is not None:
        bits = bitrate_bits(video.bitrate) * REENCODE_BITRATE_FACTOR
        update: dict[str, object] = {"bitrate": f"{round(bits / 1000)}k"}
    else:
        crf = video.crf if video.crf is not None else DEFAULT_CRF[codec]
        update = {"crf": max(0, crf - REENCODE_CRF_STEP)}
    return output.model_copy(update={"video": video.model_copy(update=update)})


def gate_value(metrics: QualityMetrics, metric: str) -> float | None:
    value = getattr(metrics, metric)
    return float(value) if value is not None else None
