"""The ffmpeg command line, built from the validated spec. Pure: no I/O, no environment.

Safety: the result is an argv list for execve (never a shell string) and every token comes from a closed
vocabulary in this module or from a spec field that pydantic has already constrained (enums, bounded ints,
regex-checked bitrates). Files are addressed as `file:<absolute path>` so a name can never be read as another
protocol or an option, and the input may only use the `file` protocol (a crafted playlist/concat input cannot
make ffmpeg fetch URLs).

One ffmpeg run produces every output, so the input is demuxed and decoded once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from transkube_api.models import RESOLUTION_HEIGHTS, InputFacts, OutputSpec, TranscodeJobSpec, VideoSpec

from .errors import InvalidInput

Accelerator = Literal["cpu", "nvidia"]

GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-y", "-nostats", "-progress", "pipe:1", "-loglevel", "error")

MUXERS: dict[str, str] = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm"}
EXTENSIONS: dict[str, str] = {"mp4": ".mp4", "mov": ".mov", "mkv": ".mkv", "webm": ".webm"}
FASTSTART_CONTAINERS = frozenset({"mp4", "mov"})  # moov atom first: playable while still downloading

CPU_VIDEO_ENCODERS: dict[str, str] = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
NVENC_ENCODERS: dict[str, str] = {"h264": "h264_nvenc", "h265": "hevc_nvenc", "av1": "av1_nvenc"}
AUDIO_ENCODERS: dict[str, str] = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame"}

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


def output_paths(spec: TranscodeJobSpec, out_dir: Path) -> dict[str, Path]:
    """Local file for each output, named after the output (names are DNS labels, so safe as file names)."""
    return {o.name: out_dir / f"{o.name}{EXTENSIONS[o.container]}" for o in spec.outputs}


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


def uses_nvenc(output: OutputSpec, accelerator: Accelerator) -> bool:
    return accelerator == "nvidia" and output.video_codec in NVENC_ENCODERS


def cuda_frames(spec: TranscodeJobSpec, facts: InputFacts, accelerator: Accelerator) -> bool:
    """Whether decoded frames may stay in GPU memory (`-hwaccel_output_format cuda`).

    Only when every re-encoded video output is NVENC (a CPU encoder such as libvpx-vp9 cannot read CUDA frames),
    none asks for a pixel format (format conversion is done by the CPU path), and NVDEC can decode the input
    (otherwise ffmpeg silently decodes in software and the CUDA-only filters would fail). Else frames are
    copied back to system memory automatically by ffmpeg: slower, always correct.
    """
    if accelerator != "nvidia" or facts.video_codec not in NVDEC_CODECS:
        return False
    encoding = [o for o in spec.outputs if o.video_codec not in ("copy", "none")]
    return bool(encoding) and all(
        uses_nvenc(o, accelerator) and not (o.video and o.video.pixel_format) for o in encoding
    )


def scale_filter(video: VideoSpec, on_gpu: bool) -> str | None:
    """`scale=W:H`, or `-2` for the side that keeps the aspect ratio (and stays even, as encoders need)."""
    if video.resolution is not None:
        width, height = -2, RESOLUTION_HEIGHTS[video.resolution]
    elif video.width is not None or video.height is not None:
        width = video.width if video.width is not None else -2
        height = video.height if video.height is not None else -2
    else:
        return None
    return f"{'scale_cuda' if on_gpu else 'scale'}={width}:{height}"


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


def _video_cpu(output: OutputSpec, video: VideoSpec) -> list[str]:
    codec = output.video_codec
    preset = video.preset or DEFAULT_PRESET
    args = ["-c:v", CPU_VIDEO_ENCODERS[codec]]
    if codec == "h264":
        args += ["-preset", preset]
    elif codec == "h265":
        # x265 logs its banner and stats itself, ignoring -loglevel; keep stderr for real errors.
        args += ["-preset", preset, "-x265-params", "log-level=error"]
    elif codec == "vp9":
        # row-mt: libvpx is single-threaded per tile row without it, far slower for no quality gain.
        args += ["-deadline", "good", "-cpu-used", str(VP9_CPU_USED[preset]), "-row-mt", "1"]
    elif codec == "av1":
        args += ["-preset", str(SVT_AV1_PRESETS[preset])]
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


def video_args(output: OutputSpec, accelerator: Accelerator, on_gpu: bool) -> list[str]:
    """Output options for the video stream; `on_gpu` means decoded frames are CUDA frames."""
    codec = output.video_codec
    if codec == "none":
        return ["-vn"]
    if codec == "copy":
        return ["-c:v", "copy"]
    # An unset `video` means the container's default codec with encoder defaults.
    video = output.video or VideoSpec.model_validate({"codec": codec})
    nvenc = uses_nvenc(output, accelerator)
    args = _video_nvenc(output, video) if nvenc else _video_cpu(output, video)
    if codec == "h265" and output.container in ("mp4", "mov"):
        args += ["-tag:v", "hvc1"]  # Apple players only accept HEVC in MP4/MOV tagged hvc1 (ffmpeg uses hev1)
    scale = scale_filter(video, on_gpu=on_gpu and nvenc)
    if scale:
        args += ["-vf", scale]
    if video.fps is not None:
        args += ["-r", format_fps(video.fps)]
    if video.pixel_format is not None:
        args += ["-pix_fmt", video.pixel_format]
    return args


def audio_args(output: OutputSpec) -> list[str]:
    codec = output.audio_codec
    if codec == "none":
        return ["-an"]
    if codec == "copy":
        return ["-c:a", "copy"]
    args = ["-c:a", AUDIO_ENCODERS[codec]]
    audio = output.audio
    if audio is not None:
        if audio.bitrate is not None:
            args += ["-b:a", audio.bitrate]
        if audio.channels is not None:
            args += ["-ac", str(audio.channels)]
        if audio.sample_rate is not None:
            args += ["-ar", str(audio.sample_rate)]
    return args


def output_args(output: OutputSpec, path: Path, accelerator: Accelerator, on_gpu: bool) -> list[str]:
    """Everything for one output file, ending with the file itself (ffmpeg options apply to the next file)."""
    args: list[str] = []
    # First video and first audio stream. `V`, not `v`: cover art (an attached picture) is not the video.
    # `?`: an input without that stream type gives an output without it instead of an error.
    if output.video_codec != "none":
        args += ["-map", "0:V:0?"]
    if output.audio_codec != "none":
        args += ["-map", "0:a:0?"]
    args += video_args(output, accelerator, on_gpu)
    args += audio_args(output)
    if output.container in FASTSTART_CONTAINERS:
        args += ["-movflags", "+faststart"]
    return [*args, "-f", MUXERS[output.container], file_url(path)]


def check_streams(spec: TranscodeJobSpec, facts: InputFacts) -> None:
    """Every output must get at least one stream from the input. Needed because when all of an output's
    optional maps match nothing, ffmpeg silently falls back to automatic stream selection (e.g. encoding an
    MP3's cover art as the "video") instead of failing."""
    for output in spec.outputs:
        wants = [kind for kind, codec in (("video", output.video_codec), ("audio", output.audio_codec))
                 if codec != "none"]
        has = {"video": facts.video_codec is not None, "audio": facts.audio_codec is not None}
        if not any(has[kind] for kind in wants):
            raise InvalidInput(f"output {output.name} needs {' or '.join(wants)}, but the input has none")


def build_argv(spec: TranscodeJobSpec, input_path: Path, outputs: dict[str, Path], facts: InputFacts,
               accelerator: Accelerator) -> list[str]:
    """The complete ffmpeg argv: global options, input options + input, then per output its options + file.
    Raises InvalidInput when the input lacks every stream an output needs (see check_streams)."""
    missing = [o.name for o in spec.outputs if o.name not in outputs]
    if missing:
        raise ValueError(f"no local path for outputs {missing}")
    check_streams(spec, facts)
    argv = ["ffmpeg", *GLOBAL_ARGS]
    on_gpu = cuda_frames(spec, facts, accelerator)
    if any(uses_nvenc(o, accelerator) for o in spec.outputs):
        # NVDEC decode; without -hwaccel_output_format frames are downloaded to system memory for CPU filters
        # and encoders (NVENC accepts both).
        argv += ["-hwaccel", "cuda"]
        if on_gpu:
            argv += ["-hwaccel_output_format", "cuda"]
    argv += ["-protocol_whitelist", "file", "-i", file_url(input_path)]
    for output in spec.outputs:
        argv += output_args(output, outputs[output.name], accelerator, on_gpu)
    return argv
