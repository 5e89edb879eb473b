"""ffmpeg command lines of the outputs that are not single media files: adaptive-streaming packages (HLS/DASH
ladders), thumbnails, sprite sheets with their WebVTT storyboard, posters, and the loudnorm analysis pass.
Pure, like ffmpeg_args: argv lists built from the validated spec and the probed facts, never shell strings.

Each of these runs as its own ffmpeg process (a "step"); the file outputs share one process (ffmpeg_args).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from transkube_api.constants import REASON_NO_VIDEO_STREAM
from transkube_api.models import InputFacts, OutputSpec, RenditionSpec, StreamingSpec

from .errors import InvalidInput, Unsupported
from .ffmpeg_args import (
    BUFSIZE_FACTOR,
    DEFAULT_LIMITS,
    DEFAULT_PRESET,
    GLOBAL_ARGS,
    IMAGE_DEMUXERS,
    MAXRATE_FACTOR,
    Limits,
    LoudnormMeasurement,
    _kbits,
    _num,
    audio_args,
    audio_filters,
    audio_map,
    bitrate_bits,
    file_url,
    input_args,
    pre_filters,
    trim_args,
    watermark_graph,
)
from .playability import (
    BT709,
    DEINTERLACE,
    colour_chain,
    cpu_profile,
    deinterlaces,
    display_size,
    even_floor,
    even_near,
    image_colour,
    output_frame_rate,
    sample_aspect,
    short_side_size,
    source_colour,
    source_geometry,
)

# The automatic ladder: (height, h264 bitrate). h265 gets AUTO_H265_FACTOR of it. Heights are of the short side,
# so a portrait input gets the same ladder turned on its side.
AUTO_LADDER: tuple[tuple[int, str], ...] = (
    (2160, "12M"), (1440, "8M"), (1080, "5M"), (720, "2800k"), (480, "1400k"), (360, "800k"), (240, "400k"),
)
AUTO_H265_FACTOR = 0.6
TINY_BITRATE = "300k"  # an input below the lowest rung gets one rendition at its own size
DEFAULT_AUDIO_BITRATE = "128k"
HLS_MASTER = "master.m3u8"
DASH_MANIFEST = "manifest.mpd"
MAX_SPRITE_TILES = 2500
MAX_IMAGE_SIDE = 16383  # WebP's limit, and far beyond what a player wants for a sprite
JPEG_QUALITY = "3"  # mjpeg -q:v: 2 (best) .. 31
WEBP_QUALITY = "80"


@dataclass(frozen=True)
class Rendition:
    height: int  # of the short side
    bitrate: str
    portrait: bool = False

    @property
    def name(self) -> str:
        return f"{self.height}p"


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def short_side(facts: InputFacts) -> tuple[int, bool]:
    """(short side, portrait?) of the displayed input (upright, square pixels)."""
    size = display_size(facts)
    if size is None:
        raise InvalidInput("the input has no video size; an adaptive-streaming ladder needs video",
                           reason=REASON_NO_VIDEO_STREAM)
    width, height = size
    return round(min(width, height)), height > width


def auto_ladder(facts: InputFacts, max_renditions: int, codec: str) -> list[Rendition]:
    """The highest `max_renditions` rungs that do not upscale the input, highest first."""
    short, portrait = short_side(facts)
    factor = AUTO_H265_FACTOR if codec == "h265" else 1.0
    rungs = [(h, rate) for h, rate in AUTO_LADDER if h <= short][:max_renditions]
    if not rungs:
        rungs = [(_even(short) if short >= 2 else 2, TINY_BITRATE)]
    return [Rendition(h, _kbits(bitrate_bits(rate) * factor), portrait) for h, rate in rungs]


def ladder(streaming: StreamingSpec | None, facts: InputFacts) -> list[Rendition]:
    """The renditions to encode, highest first: the spec's own list, or the automatic ladder."""
    codec = streaming.codec if streaming else "h264"
    if streaming is not None and streaming.renditions:
        _, portrait = short_side(facts)
        rungs = [Rendition(r.pixel_height, r.bitrate, portrait) for r in streaming.renditions]
        return sorted(rungs, key=lambda r: -r.height)
    max_renditions = streaming.auto_ladder.max_renditions if streaming and streaming.auto_ladder else 4
    return auto_ladder(facts, max_renditions, codec)


def rendition_size(r: Rendition, width: float, height: float) -> tuple[int, int]:
    """The rendition's short side is its height; the long side keeps the source's display aspect (even)."""
    return short_side_size(r.height, width, height)


def explicit_rendition(spec: RenditionSpec) -> Rendition:
    return Rendition(spec.pixel_height, spec.bitrate)


STREAM_PIX_FMT = "yuv420p"  # every rendition: 8-bit 4:2:0 SDR BT.709, what every HLS/DASH player decodes


def _video_encoder_args(codec: str, preset: str, renditions: list[Rendition], segment: int,
                        fps: float | None) -> list[str]:
    encoder = "libx264" if codec == "h264" else "libx265"
    args = ["-c:v", encoder, "-preset", preset, "-pix_fmt", STREAM_PIX_FMT,
            "-profile:v", str(cpu_profile(codec, STREAM_PIX_FMT, None)), *BT709.args()]
    for i, r in enumerate(renditions):
        bits = bitrate_bits(r.bitrate)
        args += [f"-b:v:{i}", r.bitrate, f"-maxrate:v:{i}", _kbits(bits * MAXRATE_FACTOR),
                 f"-bufsize:v:{i}", _kbits(bits * BUFSIZE_FACTOR)]
    # Keyframes at every segment boundary, in every rendition, and no scene-cut keyframes between them: segments
    # start with a keyframe at the same instant in every rendition, so players can switch at any boundary.
    args += ["-force_key_frames", f"expr:gte(t,n_forced*{segment})"]
    if fps:
        gop = max(1, round(fps * segment))
        args += ["-g", str(gop), "-keyint_min", str(gop)]
    if codec == "h264":
        args += ["-sc_threshold", "0"]
    else:
        args += ["-tag:v", "hvc1", "-x265-params", "log-level=error:scenecut=0:open-gop=0"]
    return args


def stream_argv(output: OutputSpec, input_path: Path, out_dir: Path, facts: InputFacts, *,
                limits: Limits = DEFAULT_LIMITS, watermark: Path | None = None,
                measured: LoudnormMeasurement | None = None) -> list[str]:
    """One ffmpeg run for an hls/dash package: decode once, filter once, split into one scaled branch per
    rendition, encode each with aligned keyframes, and let the muxer write CMAF (fMP4) segments and playlists."""
    streaming = output.streaming or StreamingSpec()
    renditions = ladder(output.streaming, facts)
    segment = streaming.segment_seconds
    with_audio = output.audio_codec != "none" and facts.audio_codec is not None
    argv = ["ffmpeg", *GLOBAL_ARGS, *input_args(input_path, limits)]
    aspect = output.filters.aspect if output.filters else None
    square, size = source_geometry(facts, aspect)
    if size is None:
        raise InvalidInput(f"output {output.name}: the input has no video size", reason=REASON_NO_VIDEO_STREAM)
    width, height = size
    chain = pre_filters(output.filters, facts) + square
    mark = output.filters.watermark if output.filters else None
    graph: list[str] = []
    source = "0:V:0"
    if mark is not None:
        if watermark is None:
            raise ValueError(f"no local watermark image for output {output.name}")
        argv += input_args(watermark, limits, demuxers=IMAGE_DEMUXERS)
        graph.append(watermark_graph(source, chain, 1, mark, "wm"))
        source, chain = "wm", []
    n = len(renditions)
    split = ",".join([*chain, f"split={n}"]) + "".join(f"[s{i}]" for i in range(n))
    graph.append(f"[{source}]{split}")
    # Every rendition keeps the input's display aspect ratio exactly (an even width cannot always do that with
    # square pixels, e.g. 426x240 for 16:9; DASH refuses mixed aspect ratios in one adaptation set).
    dar = f"setdar={round(width)}/{round(height)}"
    # Colour last, per rendition: tone mapping at the rendition's size costs less than at the source's.
    colour = colour_chain(source_colour(facts), BT709, facts.pixel_format, STREAM_PIX_FMT)
    for i, r in enumerate(renditions):
        w, h = rendition_size(r, width, height)
        graph.append(f"[s{i}]{','.join([f'scale={w}:{h}', dar, *colour])}[v{i}]")
    argv += ["-filter_complex", ";".join(graph)]
    for i in range(n):
        argv += ["-map", f"[v{i}]"]
    if with_audio:
        argv += ["-map", audio_map(output)]
    argv += _video_encoder_args(streaming.codec, streaming.preset or DEFAULT_PRESET, renditions, segment,
                                output_frame_rate(facts))
    if with_audio:
        audio = audio_args(output, measured)
        if "-b:a" not in audio:
            audio += ["-b:a", DEFAULT_AUDIO_BITRATE]
        argv += audio
    else:
        argv += ["-an"]
    argv += trim_args(output)
    if output.type == "hls":
        streams = [f"v:{i},agroup:audio,name:{r.name}" if with_audio else f"v:{i},name:{r.name}"
                   for i, r in enumerate(renditions)]
        if with_audio:
            streams.append("a:0,agroup:audio,name:audio,default:yes")
        argv += ["-f", "hls", "-hls_time", str(segment), "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
                 "-hls_flags", "independent_segments", "-hls_fmp4_init_filename", "init_%v.mp4",
                 "-hls_segment_filename", file_url(out_dir / "seg_%v_%05d.m4s"), "-master_pl_name", HLS_MASTER,
                 "-var_stream_map", " ".join(streams), file_url(out_dir / "stream_%v.m3u8")]
    else:
        sets = "id=0,streams=v" + (" id=1,streams=a" if with_audio else "")
        argv += ["-f", "dash", "-seg_duration", str(segment), "-use_template", "1", "-use_timeline", "1",
                 "-init_seg_name", "init_$RepresentationID$.mp4",
                 "-media_seg_name", "seg_$RepresentationID$_$Number%05d$.m4s", "-adaptation_sets", sets]
        if streaming.also_hls:
            argv += ["-hls_playlist", "1", "-hls_master_name", HLS_MASTER]
        argv += [file_url(out_dir / DASH_MANIFEST)]
    return argv


def rendition_key(output: OutputSpec, index: int, rendition: Rendition) -> str:
    """What names a rendition's files: its name in HLS (var_stream_map), its representation id in DASH."""
    return rendition.name if output.type == "hls" else str(index)


def rendition_parts(out_dir: Path, key: str) -> list[Path]:
    """A rendition's CMAF files in play order: its init segment, then its media segments by number. Together they
    are one fragmented MP4 (what a player appends to its buffer), so they can be read without any playlist."""
    segments: list[tuple[int, Path]] = []
    for p in out_dir.glob(f"seg_{key}_*.m4s"):
        number = p.name[len(f"seg_{key}_"):-len(".m4s")]
        if number.isdigit():
            segments.append((int(number), p))
    init = out_dir / f"init_{key}.mp4"
    if not init.is_file() or not segments:
        raise FileNotFoundError(f"no init segment or no media segments of rendition {key} in {out_dir}")
    return [init, *(p for _, p in sorted(segments))]


def playlist_of(output: OutputSpec) -> str:
    return HLS_MASTER if output.type == "hls" else DASH_MANIFEST


# ---- images ----------------------------------------------------------------------------------------------


IMAGE_PIX_FMTS: dict[str, str] = {"jpeg": "yuvj420p", "webp": "yuv420p"}


def image_codec_args(fmt: str) -> list[str]:
    if fmt == "webp":
        return ["-c:v", "libwebp", "-quality", WEBP_QUALITY, "-pix_fmt", IMAGE_PIX_FMTS[fmt]]
    return ["-c:v", "mjpeg", "-q:v", JPEG_QUALITY, "-pix_fmt", IMAGE_PIX_FMTS[fmt]]


def image_size(width: int | None, height: int | None, facts: InputFacts) -> tuple[int, int] | None:
    """The image's size in square pixels: as given, one side from the other by the display aspect ratio, or the
    display size; None when the decoded frame already is that (or the input's size is unknown)."""
    size = display_size(facts)
    if size is None:
        return None
    dw, dh = size
    if width is not None and height is not None:
        return width, height
    if width is not None:
        return width, even_near(width * dh / dw)
    if height is not None:
        return even_near(height * dw / dh), height
    if sample_aspect(facts) == 1:
        return None
    return round(dw), round(dh)


def image_scale(width: int | None, height: int | None, facts: InputFacts) -> tuple[list[str], list[str]]:
    """Sizing filters before the colour conversion (to an even size: zscale works on whole chroma samples) and
    after it (the exact size, when an odd one is asked for). An odd input without a size asked loses its odd
    line, as video outputs do."""
    size = image_size(width, height, facts)
    if size is None:
        if width is not None or height is not None:  # the input's size is unknown: let ffmpeg keep the aspect
            return [f"scale={width if width is not None else -2}:{height if height is not None else -2}",
                    "setsar=1"], []
        if facts.width and facts.height and (facts.width % 2 or facts.height % 2):
            return [f"crop={even_floor(facts.width)}:{even_floor(facts.height)}:0:0"], []
        return [], []
    w, h = size
    if w % 2 or h % 2:
        return [f"scale={even_near(w)}:{even_near(h)}", "setsar=1"], [f"scale={w}:{h}", "setsar=1"]
    return [f"scale={w}:{h}", "setsar=1"], []


def image_chain(facts: InputFacts, fmt: str, scale: tuple[list[str], list[str]], *, fps: str | None = None,
                tile: str | None = None) -> str:
    """Deinterlace (interlaced input), pick frames (`fps`), size, then colour: HDR is tone-mapped, and the pixels
    are converted to what JPEG/WebP decoders assume (BT.601; full range for JPEG)."""
    before, after = scale
    chain = [DEINTERLACE] if deinterlaces(None, facts) else []
    chain += [fps] if fps else []
    chain += before
    chain += colour_chain(source_colour(facts), image_colour(fmt), facts.pixel_format, IMAGE_PIX_FMTS[fmt])
    chain += after
    chain += [tile] if tile else []
    return ",".join(chain)


def _duration(facts: InputFacts) -> float:
    if not facts.duration_seconds:
        raise InvalidInput("the input has no known duration")
    return facts.duration_seconds


def thumbnails_argv(output: OutputSpec, input_path: Path, out_dir: Path, facts: InputFacts, *,
                    limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Images at given times (one fast-seeking input per time, each decoder single-threaded to bound memory) or
    every N seconds (one decode through the fps filter). Files: thumb-00001.jpg, thumb-00002.jpg, ..."""
    spec = output.thumbnails
    assert spec is not None
    ext = ".jpg" if spec.format == "jpeg" else ".webp"
    codec = image_codec_args(spec.format)
    scale = image_scale(spec.width, spec.height, facts)
    argv = ["ffmpeg", *GLOBAL_ARGS]
    if spec.times is not None:
        duration = _duration(facts)
        late = [t for t in spec.times if t >= duration]
        if late:
            raise InvalidInput(f"output {output.name}: thumbnail time {late[0]:g}s is past the input's end "
                               f"({duration:g}s)")
        for t in spec.times:
            argv += ["-threads", "1", *input_args(input_path, limits, seek=t)]
        chain = image_chain(facts, spec.format, scale)
        for i, _ in enumerate(spec.times):
            argv += ["-map", f"{i}:V:0", "-frames:v", "1", *(["-vf", chain] if chain else []), *codec,
                     "-f", "image2", "-update", "1", file_url(out_dir / f"thumb-{i + 1:05d}{ext}")]
        return argv
    assert spec.interval_seconds is not None
    chain = image_chain(facts, spec.format, scale, fps=f"fps=1/{_num(spec.interval_seconds)}")
    return [*argv, *input_args(input_path, limits), "-map", "0:V:0", "-vf", chain, *codec,
            "-f", "image2", "-start_number", "1", file_url(out_dir / f"thumb-%05d{ext}")]


@dataclass(frozen=True)
class SpriteLayout:
    tiles: int
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    interval: float
    duration: float
    image: str


def sprite_layout(output: OutputSpec, facts: InputFacts) -> SpriteLayout:
    spec = output.sprite
    assert output.type == "sprite"
    interval = spec.interval_seconds if spec else 5.0
    columns = spec.columns if spec else 10
    tile_width = spec.tile_width if spec else 160
    fmt = spec.format if spec else "jpeg"
    duration = _duration(facts)
    size = display_size(facts)
    if size is None:
        raise InvalidInput(f"output {output.name}: the input has no video size", reason=REASON_NO_VIDEO_STREAM)
    tiles = max(1, math.ceil(duration / interval - 1e-6))
    if tiles > MAX_SPRITE_TILES:
        raise Unsupported(f"output {output.name}: {tiles} sprite tiles exceed {MAX_SPRITE_TILES}; raise "
                          f"sprite.intervalSeconds")
    columns = min(columns, tiles)
    rows = math.ceil(tiles / columns)
    tile_height = _even(tile_width * size[1] / size[0])
    if columns * tile_width > MAX_IMAGE_SIDE or rows * tile_height > MAX_IMAGE_SIDE:
        raise Unsupported(f"output {output.name}: the sprite sheet would exceed {MAX_IMAGE_SIDE} pixels; raise "
                          f"sprite.intervalSeconds or lower tileWidth")
    return SpriteLayout(tiles, columns, rows, tile_width, tile_height, interval, duration,
                        "sprite" + (".jpg" if fmt == "jpeg" else ".webp"))


def sprite_argv(output: OutputSpec, input_path: Path, out_dir: Path, facts: InputFacts, *,
                limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """One sheet: a frame every interval, scaled to the tile size, laid out by the tile filter."""
    layout = sprite_layout(output, facts)
    fmt = output.sprite.format if output.sprite else "jpeg"
    chain = image_chain(facts, fmt, ([f"scale={layout.tile_width}:{layout.tile_height}", "setsar=1"], []),
                        fps=f"fps=1/{_num(layout.interval)}", tile=f"tile={layout.columns}x{layout.rows}")
    return ["ffmpeg", *GLOBAL_ARGS, *input_args(input_path, limits), "-map", "0:V:0", "-vf", chain,
            "-frames:v", "1", *image_codec_args(fmt), "-f", "image2", "-update", "1",
            file_url(out_dir / layout.image)]


def vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def storyboard_vtt(layout: SpriteLayout) -> str:
    """WebVTT thumbnails track: one cue per tile pointing at its rectangle (#xywh=x,y,w,h) in the sheet."""
    lines = ["WEBVTT", ""]
    for i in range(layout.tiles):
        start = i * layout.interval
        end = min((i + 1) * layout.interval, layout.duration)
        x = (i % layout.columns) * layout.tile_width
        y = (i // layout.columns) * layout.tile_height
        lines += [f"{vtt_time(start)} --> {vtt_time(end)}",
                  f"{layout.image}#xywh={x},{y},{layout.tile_width},{layout.tile_height}", ""]
    return "\n".join(lines)


def poster_time(output: OutputSpec, facts: InputFacts) -> float:
    duration = _duration(facts)
    at = output.poster.time_seconds if output.poster and output.poster.time_seconds is not None else duration * 0.1
    if at >= duration:
        raise InvalidInput(f"output {output.name}: poster time {at:g}s is past the input's end ({duration:g}s)")
    return at


def poster_argv(output: OutputSpec, input_path: Path, path: Path, facts: InputFacts, *,
                limits: Limits = DEFAULT_LIMITS) -> list[str]:
    spec = output.poster
    fmt = spec.format if spec else "jpeg"
    chain = image_chain(facts, fmt, image_scale(spec.width if spec else None, spec.height if spec else None, facts))
    return ["ffmpeg", *GLOBAL_ARGS, *input_args(input_path, limits, seek=poster_time(output, facts)),
            "-map", "0:V:0", "-frames:v", "1", *(["-vf", chain] if chain else []), *image_codec_args(fmt),
            *(["-fs", str(limits.max_output_bytes)] if limits.max_output_bytes else []),
            "-f", "image2", "-update", "1", file_url(path)]


# ---- loudness analysis -----------------------------------------------------------------------------------

ANALYSIS_ARGS = ("-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "info")


def loudnorm_analysis_argv(output: OutputSpec, input_path: Path, *, limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """The first loudnorm pass: the same audio (track, trim, downmix) the output gets, measured, nothing
    written. loudnorm prints its measurement as JSON at the end, on stderr."""
    chain = audio_filters(output.audio, None, analyse=True)
    return ["ffmpeg", *ANALYSIS_ARGS, *input_args(input_path, limits), "-map", audio_map(output), "-vn",
            *trim_args(output), "-af", ",".join(chain), "-f", "null", "-"]


LOUDNORM_JSON = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.DOTALL)


def parse_loudnorm(stderr: str) -> LoudnormMeasurement:
    """The last JSON block loudnorm printed. -inf (digital silence) cannot be corrected: InvalidInput."""
    blocks = LOUDNORM_JSON.findall(stderr)
    if not blocks:
        raise InvalidInput("loudness analysis printed no measurement (no audio?)")
    data: Mapping[str, str] = json.loads(blocks[-1])
    try:
        values = {k: float(data[k]) for k in ("input_i", "input_tp", "input_lra", "input_thresh", "target_offset")}
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"loudness analysis gave an unusable measurement: {exc}") from exc
    if not all(math.isfinite(v) for v in values.values()):
        raise InvalidInput("the audio is silent: its loudness cannot be normalised")
    return LoudnormMeasurement(**values)
