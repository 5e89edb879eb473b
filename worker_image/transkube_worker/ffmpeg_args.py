"""The ffmpeg command line, built from the validated spec. Pure: no I/O, no environment.

Safety: the result is an argv list for execve (never a shell string) and every token comes from a closed
vocabulary in this module or from a spec field that pydantic has already constrained (enums, bounded ints,
regex-checked bitrates). Files are addressed as `file:<absolute path>` so a name can never be read as another
protocol or an option, and the input may only use the `file` protocol (a crafted playlist/concat input cannot
make ffmpeg fetch URLs).

One ffmpeg run produces every output, so the input is demuxed and decoded once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transkube_api.constants import REASON_AUDIO_TRACK_NOT_FOUND, REASON_NO_AUDIO_STREAM, REASON_NO_VIDEO_STREAM
from transkube_api.models import (
    AudioSpec,
    FiltersSpec,
    InputFacts,
    LoudnessSpec,
    OutputSpec,
    TranscodeJobSpec,
    VideoSpec,
    WatermarkSpec,
)

from .errors import InvalidInput
from .playability import (
    DEINTERLACE,
    NVENC_FORMATS,
    Colour,
    Geometry,
    colour_chain,
    constant_rate,
    cpu_profile,
    deinterlaces,
    geometry,
    keeps_hdr,
    output_colour,
    pixel_format,
    rate_text,
    source_colour,
    svtav1_hdr_params,
    x265_hdr_params,
)

Accelerator = Literal["cpu", "nvidia"]

GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "error")

MUXERS: dict[str, str] = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "m4a": "ipod",
                          "mp3": "mp3", "ogg": "ogg", "flac": "flac"}
EXTENSIONS: dict[str, str] = {"mp4": ".mp4", "mov": ".mov", "mkv": ".mkv", "webm": ".webm", "m4a": ".m4a",
                              "mp3": ".mp3", "ogg": ".ogg", "flac": ".flac"}
IMAGE_EXTENSIONS: dict[str, str] = {"jpeg": ".jpg", "webp": ".webp"}
FASTSTART_CONTAINERS = frozenset({"mp4", "mov"})  # moov atom first: playable while still downloading

CPU_VIDEO_ENCODERS: dict[str, str] = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
NVENC_ENCODERS: dict[str, str] = {"h264": "h264_nvenc", "h265": "hevc_nvenc", "av1": "av1_nvenc"}
AUDIO_ENCODERS: dict[str, str] = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame", "flac": "flac"}
LOSSLESS_AUDIO = frozenset({"flac"})  # no bitrate to set

# Demuxers an input may use. Everything that can reference other files or URLs (hls, dash, concat, image2
# sequences, ffmetadata, tee, subtitles with includes...) is absent, so a crafted "video" cannot make ffmpeg read
# the pod's service-account token or any other local file into an output. Names are matched per component of a
# demuxer's name ("mov" matches "mov,mp4,m4a,3gp,3g2,mj2").
INPUT_DEMUXERS = ("mov", "matroska", "avi", "flv", "mpegts", "mpeg", "mxf", "asf", "ogg", "wav", "w64", "aiff",
                  "mp3", "aac", "ac3", "eac3", "flac", "dts", "truehd", "h264", "hevc", "m4v", "mpegvideo", "ivf",
                  "obu", "av1", "nut", "dv", "gxf", "yuv4mpegpipe", "gif", "caf", "wv", "amr", "loas")
# The watermark image: single-image demuxers only (never image2, whose names are patterns).
IMAGE_DEMUXERS = ("png_pipe", "jpeg_pipe", "webp_pipe", "gif", "bmp_pipe")

# hqdn3d luma_spatial:chroma_spatial:luma_tmp:chroma_tmp per strength (medium = the filter's defaults).
DENOISE: dict[str, str] = {"light": "2:1.5:3:2.25", "medium": "4:3:6:4.5", "strong": "8:6:12:9"}
CHANNEL_LAYOUTS: dict[int, str] = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
                                   8: "7.1"}
LOUDNORM_SAMPLE_RATE = 48000  # loudnorm upsamples to 192 kHz internally; resample back unless asked otherwise

# Codecs NVDEC can decode; anything else is decoded in software even on a GPU node.
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp8", "vp9", "mpeg1video", "mpeg2video", "mpeg4", "vc1", "mjpeg"})

# An unset preset means x264's own default, "medium", for every encoder, so `preset` has one meaning
# across codecs instead of each encoder's unrelated default.
DEFAULT_PRESET = "medium"
# libvpx-vp9 in "good" deadline: cpu-used 0 (slowest, best) .. 5 (fastest that still means "good").
VP9_CPU_USED: dict[str, int] = {"ultrafast": 5, "superfast": 5, "veryfast": 4, "faster": 4, "fast": 3,
                                "medium": 2, "slow": 1, "slower": 1, "veryslow": 0}
# SVT-AV1 presets 0 (slowest) .. 13 (fastest).
SVT_AV1_PRESETS: dict[str, int] = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8,
                                   "medium": 7, "slow": 6, "slower": 4, "veryslow": 2}
# NVENC presets p1 (fastest) .. p7 (slowest).
NVENC_PRESETS: dict[str, str] = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3",
                                 "fast": "p3", "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7"}
NVENC_CQ_RANGE = (1, 51)  # cq 0 means "automatic" to NVENC, not lossless, so the lowest we pass is 1

# Constrained VBR for h264/h265 (and NVENC) when a bitrate is given: peaks up to 1.5x the average, VBV buffer
# of 2 s at the average rate. Keeps streaming players' buffers sane without forcing CBR.
MAXRATE_FACTOR = 1.5
BUFSIZE_FACTOR = 2.0


@dataclass(frozen=True)
class Limits:
    """Decoding hardening: the most pixels a decoded frame may have (ffmpeg's -max_pixels, so a crafted header
    cannot make the decoder allocate gigabytes) and the largest file an output may grow to (-fs; 0: no cap)."""

    max_pixels: int = 7680 * 4320
    max_output_bytes: int = 0


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class LoudnormMeasurement:
    """What loudnorm's first (analysis) pass measured; the second pass corrects with it."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    target_offset: float


def output_paths(spec: TranscodeJobSpec, out_dir: Path) -> dict[str, Path]:
    """Local file for each output, named after the output (names are DNS labels, so safe as file names); a
    directory for multi-file outputs (hls, dash, thumbnails, sprite)."""
    paths: dict[str, Path] = {}
    for o in spec.outputs:
        if o.is_prefix:
            paths[o.name] = out_dir / o.name
        elif o.type == "poster":
            paths[o.name] = out_dir / f"{o.name}{IMAGE_EXTENSIONS[o.poster.format if o.poster else 'jpeg']}"
        else:
            assert o.container is not None
            paths[o.name] = out_dir / f"{o.name}{EXTENSIONS[o.container]}"
    return paths


def file_url(path: Path) -> str:
    """`file:` + absolute path: ffmpeg then never interprets the name as a protocol, device or option."""
    return f"file:{path.absolute()}"


def bitrate_bits(value: str) -> int:
    """`2500k` / `4M` / `1.5M` (the spec's BITRATE_PATTERN) as bits per second."""
    scale = {"k": 1_000, "M": 1_000_000}[value[-1]]
    return round(float(value[:-1]) * scale)


def _kbits(bits: float) -> str:
    return f"{round(bits / 1000)}k"


def format_fps(fps: float) -> str:
    """Integral rates as integers, NTSC rates (29.97, 23.976, 59.94 ...) as exact N*1000/1001 fractions."""
    if float(fps).is_integer():
        return str(int(fps))
    ntsc = fps * 1.001
    if abs(ntsc - round(ntsc)) < 0.01:
        return f"{round(ntsc) * 1000}/1001"
    return f"{fps:g}"


def default_video(output: OutputSpec) -> VideoSpec:
    """An unset `video` means the container's default codec with encoder defaults."""
    return output.video or VideoSpec.model_validate({"codec": output.video_codec})


def uses_nvenc(output: OutputSpec, accelerator: Accelerator, facts: InputFacts) -> bool:
    """NVENC encodes this output: a GPU job, a codec NVENC has, and a pixel format it takes (else the CPU
    encoder does it, like vp9)."""
    codec = output.video_codec
    return (accelerator == "nvidia" and codec in NVENC_ENCODERS
            and pixel_format(default_video(output), facts) in NVENC_FORMATS[codec])


@dataclass(frozen=True)
class VideoPlan:
    """How one output's video is made: the filters in order (`pre`: deinterlace, denoise, constant frame rate;
    then `geometry`; then `colour`: tone mapping, colour conversion, pixel format), and the encoder's pixel
    format, profile and colour tags."""

    pre: list[str]
    geometry: Geometry
    colour: list[str]
    pix_fmt: str  # as the encoder takes it (p010le for 10-bit on NVENC)
    profile: str | None
    tags: Colour
    nvenc: bool

    @property
    def filters(self) -> list[str]:
        return [*self.pre, *self.geometry.filters, *self.colour]


def pre_filters(filters: FiltersSpec | None, facts: InputFacts, *, constant_fps: bool = True) -> list[str]:
    """What comes before any size change, in a fixed order: deinterlace (asked for, or the input is interlaced),
    denoise, and for a variable-frame-rate input its constant rate (unless the output sets video.fps)."""
    chain = [DEINTERLACE] if deinterlaces(filters, facts) else []
    if filters is not None and filters.denoise:
        chain.append(f"hqdn3d={DENOISE[filters.denoise]}")
    rate = constant_rate(facts) if constant_fps else None
    if rate is not None:
        chain.append(f"fps={rate_text(rate)}")
    return chain


def plan_video(output: OutputSpec, facts: InputFacts, accelerator: Accelerator = "cpu", *,
               on_gpu: bool = False) -> VideoPlan:
    """The playable default (8-bit 4:2:0, BT.709, square pixels, even size, progressive, constant frame rate)
    or what the spec asks for instead. `on_gpu`: decoded frames stay CUDA frames (see cuda_frames)."""
    video = default_video(output)
    codec = output.video_codec
    nvenc = uses_nvenc(output, accelerator, facts)
    requested = pixel_format(video, facts)
    pix_fmt, profile = NVENC_FORMATS[codec][requested] if nvenc else (
        requested, cpu_profile(codec, requested, video.crf))
    tags = output_colour(video, facts)
    aspect = output.filters.aspect if output.filters else None
    return VideoPlan(
        pre=[] if on_gpu else pre_filters(output.filters, facts, constant_fps=video.fps is None),
        geometry=geometry(video, facts, aspect, on_gpu=on_gpu and nvenc),
        colour=[] if on_gpu else colour_chain(source_colour(facts), tags, facts.pixel_format, pix_fmt),
        pix_fmt=pix_fmt, profile=profile, tags=tags, nvenc=nvenc)


def gpu_ready(output: OutputSpec, facts: InputFacts, accelerator: Accelerator) -> bool:
    """NVENC can take this output's frames straight from NVDEC: nothing to do on the CPU (no deinterlace, frame
    rate, colour or pixel format conversion, no filters) and a plain resize at most."""
    plan = plan_video(output, facts, accelerator)
    return (plan.nvenc and output.filters is None and not plan.pre and not plan.colour
            and all(f.startswith(("scale=", "setsar=")) for f in plan.geometry.filters))


def cuda_frames(spec: TranscodeJobSpec, facts: InputFacts, accelerator: Accelerator) -> bool:
    """Whether decoded frames may stay in GPU memory (`-hwaccel_output_format cuda`).

    Only when every re-encoded video output is NVENC with nothing to do on the CPU (a CPU encoder such as
    libvpx-vp9, or a CPU filter, cannot read CUDA frames) and NVDEC can decode the input (otherwise ffmpeg
    silently decodes in software and the CUDA-only filters would fail). Else frames are copied back to system
    memory automatically by ffmpeg: slower, always correct.
    """
    if accelerator != "nvidia" or facts.video_codec not in NVDEC_CODECS:
        return False
    encoding = [o for o in spec.outputs if o.type == "file" and o.video_codec not in ("copy", "none")]
    return bool(encoding) and all(gpu_ready(o, facts, accelerator) for o in encoding)


def _rate_control_cpu(codec: str, video: VideoSpec) -> list[str]:
    if video.crf is not None:
        args = ["-crf", str(video.crf)]
        # libvpx-vp9 is only in constant-quality mode when the target bitrate is zero.
        return [*args, "-b:v", "0"] if codec == "vp9" else args
    if video.bitrate is not None:
        args = ["-b:v", video.bitrate]
        if codec in ("h264", "h265"):
            bits = bitrate_bits(video.bitrate)
            args += ["-maxrate", _kbits(bits * MAXRATE_FACTOR), "-bufsize", _kbits(bits * BUFSIZE_FACTOR)]
        return args
    return []


def _video_cpu(output: OutputSpec, video: VideoSpec, facts: InputFacts) -> list[str]:
    codec = output.video_codec
    preset = video.preset or DEFAULT_PRESET
    hdr = keeps_hdr(video, facts)
    args = ["-c:v", CPU_VIDEO_ENCODERS[codec]]
    if codec == "h264":
        args += ["-preset", preset]
    elif codec == "h265":
        # x265 logs its banner and stats itself, ignoring -loglevel; keep stderr for real errors. HDR10 metadata
        # is x265's own parameter (ffmpeg 5.1 does not pass the input's on).
        params = ["log-level=error", *(x265_hdr_params(facts) if hdr else [])]
        args += ["-preset", preset, "-x265-params", ":".join(params)]
    elif codec == "vp9":
        # row-mt: libvpx is single-threaded per tile row without it, far slower for no quality gain.
        args += ["-deadline", "good", "-cpu-used", str(VP9_CPU_USED[preset]), "-row-mt", "1"]
    elif codec == "av1":
        args += ["-preset", str(SVT_AV1_PRESETS[preset])]
        params = svtav1_hdr_params(facts) if hdr else []
        if params:
            args += ["-svtav1-params", ":".join(params)]
    return args + _rate_control_cpu(codec, video)


def _video_nvenc(output: OutputSpec, video: VideoSpec) -> list[str]:
    args = ["-c:v", NVENC_ENCODERS[output.video_codec], "-preset", NVENC_PRESETS[video.preset or DEFAULT_PRESET]]
    if video.crf is not None:
        low, high = NVENC_CQ_RANGE
        # -b:v 0: no average-bitrate cap, so cq alone decides quality (the NVENC analogue of crf).
        args += ["-rc", "vbr", "-cq", str(min(max(video.crf, low), high)), "-b:v", "0"]
    elif video.bitrate is not None:
        bits = bitrate_bits(video.bitrate)
        args += ["-rc", "vbr", "-b:v", video.bitrate, "-maxrate", _kbits(bits * MAXRATE_FACTOR),
                 "-bufsize", _kbits(bits * BUFSIZE_FACTOR)]
    return args


WATERMARK_POSITIONS: dict[str, tuple[str, str]] = {
    "top-left": ("{m}", "{m}"), "top-right": ("W-w-{m}", "{m}"), "bottom-left": ("{m}", "H-h-{m}"),
    "bottom-right": ("W-w-{m}", "H-h-{m}"), "center": ("(W-w)/2", "(H-h)/2"),
}


def watermark_graph(source: str, chain: list[str], image_input: int, mark: WatermarkSpec, tag: str) -> str:
    """A filter_complex fragment: the video chain on `source`, then the image (input `image_input`) made
    translucent, scaled to `scale` x the video's width (scale2ref: the video is the reference) and overlaid.
    Ends in the label [tag]."""
    x, y = (v.format(m=mark.margin) for v in WATERMARK_POSITIONS[mark.position])
    return ";".join([
        f"[{source}]{','.join(chain) or 'null'}[{tag}b]",
        f"[{image_input}:v]format=rgba,colorchannelmixer=aa={mark.opacity:g}[{tag}w]",
        # In ffmpeg 5.1's scale2ref, iw/ih are the *reference's* size and main_w/main_h the scaled input's own
        # (ffmpeg 7 renames them rw/rh): width from the video, height keeping the image's aspect ratio.
        f"[{tag}w][{tag}b]scale2ref=w='iw*{mark.scale:g}':h='ow*main_h/main_w'[{tag}ws][{tag}bs]",
        f"[{tag}bs][{tag}ws]overlay=x='{x}':y='{y}':eof_action=repeat:format=auto[{tag}]",
    ])


def video_args(output: OutputSpec, facts: InputFacts, accelerator: Accelerator, on_gpu: bool, *,
               filtered: bool = False) -> list[str]:
    """Output options for the video stream; `on_gpu` means decoded frames are CUDA frames. `filtered`: the
    output's frames come from a filter_complex label that already applied the filters (watermark)."""
    codec = output.video_codec
    if codec == "none":
        return ["-vn"]
    if codec == "copy":
        return ["-c:v", "copy"]
    video = default_video(output)
    plan = plan_video(output, facts, accelerator, on_gpu=on_gpu)
    args = _video_nvenc(output, video) if plan.nvenc else _video_cpu(output, video, facts)
    if plan.profile is not None:
        args += ["-profile:v", plan.profile]
    if codec == "h265" and output.container in ("mp4", "mov"):
        args += ["-tag:v", "hvc1"]  # Apple players only accept HEVC in MP4/MOV tagged hvc1 (ffmpeg uses hev1)
    if not filtered and plan.filters:
        args += ["-vf", ",".join(plan.filters)]
    if video.fps is not None:
        args += ["-r", format_fps(video.fps)]
    return [*args, "-pix_fmt", plan.pix_fmt, *plan.tags.args()]


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def loudnorm_filter(target: LoudnessSpec, measured: LoudnormMeasurement | None, *, analyse: bool = False) -> str:
    """loudnorm for the analysis pass (print the measurement as JSON) or the correcting pass (linear when the
    measurement allows it, which keeps dynamics intact)."""
    base = f"loudnorm=I={_num(target.integrated_lufs)}:TP={_num(target.true_peak_db)}:LRA={_num(target.loudness_range)}"
    if analyse or measured is None:
        return base + ":print_format=json"
    return (f"{base}:measured_I={measured.input_i:.2f}:measured_TP={measured.input_tp:.2f}"
            f":measured_LRA={measured.input_lra:.2f}:measured_thresh={measured.input_thresh:.2f}"
            f":offset={measured.target_offset:.2f}:linear=true:print_format=none")


def audio_filters(audio: AudioSpec | None, measured: LoudnormMeasurement | None, *, analyse: bool = False) -> list[str]:
    """Downmix before loudnorm when both are asked for, so the loudness is that of what listeners hear."""
    if audio is None or audio.loudness is None:
        return []
    chain = []
    if audio.channels is not None:
        chain.append(f"aformat=channel_layouts={CHANNEL_LAYOUTS[audio.channels]}")
    chain.append(loudnorm_filter(audio.loudness, measured, analyse=analyse))
    return chain


def audio_args(output: OutputSpec, measured: LoudnormMeasurement | None = None) -> list[str]:
    codec = output.audio_codec
    if codec == "none":
        return ["-an"]
    if codec == "copy":
        return ["-c:a", "copy"]
    args = ["-c:a", AUDIO_ENCODERS[codec]]
    audio = output.audio
    if audio is not None:
        if audio.bitrate is not None and codec not in LOSSLESS_AUDIO:
            args += ["-b:a", audio.bitrate]
        if audio.channels is not None:
            args += ["-ac", str(audio.channels)]
        chain = audio_filters(audio, measured)
        if chain:
            args += ["-af", ",".join(chain)]
        if audio.sample_rate is not None:
            args += ["-ar", str(audio.sample_rate)]
        elif audio.loudness is not None:
            args += ["-ar", str(LOUDNORM_SAMPLE_RATE)]
    return args


def audio_map(output: OutputSpec, input_index: int = 0) -> str:
    """An explicit track must exist (check_streams says so clearly); the default first track is optional."""
    track = output.audio.track if output.audio else None
    return f"{input_index}:a:{track}" if track is not None else f"{input_index}:a:0?"


def trim_args(output: OutputSpec) -> list[str]:
    """Output-side -ss/-t: frames are decoded from the start and cut exactly (frame-accurate, also for audio)."""
    if output.trim is None:
        return []
    args = []
    if output.trim.start_seconds:
        args += ["-ss", _num(output.trim.start_seconds)]
    length = output.trim.length
    if length is not None:
        args += ["-t", _num(length)]
    return args


def input_args(path: Path, limits: Limits = DEFAULT_LIMITS, *, seek: float | None = None,
               demuxers: tuple[str, ...] = INPUT_DEMUXERS) -> list[str]:
    """One hardened input: only the listed demuxers, only the file protocol, frames no larger than the limit."""
    args = ["-ss", _num(seek)] if seek is not None else []
    return [*args, "-max_pixels", str(limits.max_pixels), "-format_whitelist", ",".join(demuxers),
            "-protocol_whitelist", "file", "-i", file_url(path)]


def output_args(output: OutputSpec, path: Path, facts: InputFacts, accelerator: Accelerator, on_gpu: bool, *,
                video_label: str | None = None, measured: LoudnormMeasurement | None = None,
                limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """Everything for one output file, ending with the file itself (ffmpeg options apply to the next file).
    `video_label`: map the video from this filter_complex label (watermarked) instead of the input."""
    assert output.container is not None
    args: list[str] = []
    # First video and first audio stream. `V`, not `v`: cover art (an attached picture) is not the video.
    # `?`: an input without that stream type gives an output without it instead of an error.
    if output.video_codec != "none":
        args += ["-map", f"[{video_label}]" if video_label else "0:V:0?"]
    if output.audio_codec != "none":
        args += ["-map", audio_map(output)]
    args += video_args(output, facts, accelerator, on_gpu, filtered=video_label is not None)
    args += audio_args(output, measured)
    args += trim_args(output)
    if limits.max_output_bytes:
        args += ["-fs", str(limits.max_output_bytes)]
    if output.container in FASTSTART_CONTAINERS:
        args += ["-movflags", "+faststart"]
    return [*args, "-f", MUXERS[output.container], file_url(path)]


def check_streams(spec: TranscodeJobSpec, facts: InputFacts) -> None:
    """Every output must get the streams it is for, before anything runs: video (file outputs whose video codec,
    given or the container's default, is not none; every image and ladder output), audio (audio-only outputs),
    and an explicitly chosen audio track. Otherwise ffmpeg would write a file without its video (optional maps
    match nothing) or, when all of an output's maps match nothing, pick streams itself (an MP3's cover art as
    the "video"). Each is a permanent InvalidInput with its own reason."""
    has_video, has_audio = facts.video_codec is not None, facts.audio_codec is not None
    for output in spec.outputs:
        if not has_video and (output.type != "file" or output.video_codec != "none"):
            what = f"{output.type} output" if output.type != "file" else f"{output.video_codec} video"
            hint = " (for audio only use an audio container: m4a, mp3, ogg, flac)" if output.type == "file" else ""
            raise InvalidInput(f"output {output.name} needs video ({what}), but the input has no video stream"
                               f"{hint}", reason=REASON_NO_VIDEO_STREAM)
        if output.type == "file" and output.video_codec == "none" and not has_audio:
            raise InvalidInput(f"output {output.name} is audio only, but the input has no audio stream",
                               reason=REASON_NO_AUDIO_STREAM)
        track = output.audio.track if output.audio else None
        streams = facts.audio_streams if facts.audio_streams is not None else int(has_audio)
        if track is not None and track >= streams:
            raise InvalidInput(f"output {output.name} asks for audio track {track}, but the input has {streams} "
                               "audio stream(s) (tracks count from 0)", reason=REASON_AUDIO_TRACK_NOT_FOUND)


def build_argv(spec: TranscodeJobSpec, input_path: Path, outputs: Mapping[str, Path], facts: InputFacts,
               accelerator: Accelerator, *, limits: Limits = DEFAULT_LIMITS, assets: Mapping[str, Path] | None = None,
               loudness: Mapping[str, LoudnormMeasurement] | None = None) -> list[str]:
    """The ffmpeg argv of the file outputs (type file): global options, input options + input (and any
    watermark images), then per output its options + file. Other output types run as their own steps
    (media_args.py). Raises InvalidInput when the input lacks every stream an output needs (see check_streams).
    `assets`: local watermark image per output name; `loudness`: first-pass measurement per output name."""
    files = [o for o in spec.outputs if o.type == "file"]
    missing = [o.name for o in files if o.name not in outputs]
    if missing:
        raise ValueError(f"no local path for outputs {missing}")
    check_streams(spec, facts)
    assets = assets or {}
    argv = ["ffmpeg", *GLOBAL_ARGS]
    on_gpu = cuda_frames(spec, facts, accelerator)
    if any(uses_nvenc(o, accelerator, facts) for o in files):
        # NVDEC decode; without -hwaccel_output_format frames are downloaded to system memory for CPU filters
        # and encoders (NVENC accepts both).
        argv += ["-hwaccel", "cuda"]
        if on_gpu:
            argv += ["-hwaccel_output_format", "cuda"]
    argv += input_args(input_path, limits)
    graphs: list[str] = []
    labels: dict[str, str] = {}
    next_input = 1
    for output in files:
        mark = output.filters.watermark if output.filters else None
        if mark is None or output.video_codec in ("copy", "none"):
            continue
        if output.name not in assets:
            raise ValueError(f"no local watermark image for output {output.name}")
        argv += input_args(assets[output.name], limits, demuxers=IMAGE_DEMUXERS)
        labels[output.name] = f"wm{next_input}"
        chain = plan_video(output, facts, accelerator).filters
        graphs.append(watermark_graph("0:V:0", chain, next_input, mark, labels[output.name]))
        next_input += 1
    if graphs:
        argv += ["-filter_complex", ";".join(graphs)]
    for output in files:
        argv += output_args(output, outputs[output.name], facts, accelerator, on_gpu,
                            video_label=labels.get(output.name),
                            measured=(loudness or {}).get(output.name), limits=limits)
    return argv
