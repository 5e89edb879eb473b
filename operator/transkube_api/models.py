"""TranscodeJob spec and status. These models generate the CRD's OpenAPI schema (crdgen.py), validate
specs in the operator, worker and shim, and carry the CEL rules the API server enforces.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from .s3uri import S3Uri

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
BITRATE_PATTERN = r"^[1-9][0-9]*(\.[0-9]+)?[kM]$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"

VideoCodec = Literal["h264", "h265", "vp9", "av1", "copy", "none"]
AudioCodec = Literal["aac", "opus", "mp3", "flac", "copy", "none"]
ContainerFormat = Literal["mp4", "webm", "mkv", "mov", "m4a", "mp3", "ogg", "flac"]
# Audio-only containers: an output in one of these has no video.
AUDIO_CONTAINERS = ("m4a", "mp3", "ogg", "flac")
Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
PixelFormat = Literal["yuv420p", "yuv420p10le", "yuv422p", "yuv444p"]
NamedResolution = Literal["2160p", "1440p", "1080p", "720p", "480p", "360p", "240p"]
RESOLUTION_HEIGHTS: dict[str, int] = {"2160p": 2160, "1440p": 1440, "1080p": 1080, "720p": 720, "480p": 480,
                                      "360p": 360, "240p": 240}

# Which codecs each container can carry (ffmpeg's muxers, restricted to what players accept).
# Both the pydantic validators and the CRD's CEL rules are generated from this one table.
CONTAINER_CODECS: dict[str, dict[str, tuple[str, ...]]] = {
    "mp4": {"video": ("h264", "h265", "vp9", "av1", "copy", "none"), "audio": ("aac", "mp3", "opus", "copy", "none")},
    "mov": {"video": ("h264", "h265", "copy", "none"), "audio": ("aac", "mp3", "copy", "none")},
    "mkv": {"video": ("h264", "h265", "vp9", "av1", "copy", "none"),
            "audio": ("aac", "mp3", "opus", "flac", "copy", "none")},
    "webm": {"video": ("vp9", "av1", "copy", "none"), "audio": ("opus", "copy", "none")},
    "m4a": {"video": ("none",), "audio": ("aac", "copy")},
    "mp3": {"video": ("none",), "audio": ("mp3", "copy")},
    "ogg": {"video": ("none",), "audio": ("opus", "flac", "copy")},
    "flac": {"video": ("none",), "audio": ("flac", "copy")},
}
# What an output gets when it does not say.
DEFAULT_CODECS: dict[str, tuple[str, str]] = {
    "mp4": ("h264", "aac"), "mov": ("h264", "aac"), "mkv": ("h264", "aac"), "webm": ("vp9", "opus"),
    "m4a": ("none", "aac"), "mp3": ("none", "mp3"), "ogg": ("none", "opus"), "flac": ("none", "flac"),
}


def _rules(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    out = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if len(rule) > 2:
            entry["fieldPath"] = rule[2]
        out.append(entry)
    return {"x-kubernetes-validations": out}


def _in(values: Sequence[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretReference(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN,
                               description="Name of a Secret in the TranscodeJob's namespace.")]


class InputSpec(ApiModel):
    uri: S3Uri = Field(description="The source object, as s3://bucket/key (the key taken literally; see "
                                   "docs/api.md, \"Object URIs\").")
    credentials_secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret whose keys are exported to the worker as environment variables: "
                    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL_S3 and AWS_REGION. "
                    "When unset, the operator's default storage credentials are used.",
    )


@dataclass(frozen=True)
class Rule:
    """One constraint, stated twice from one place: as CEL for the API server and as a Python predicate for the
    model validators (operator, worker, shim). `ok(model)` is True when the model satisfies the rule."""

    cel: str
    message: str
    ok: Callable[[Any], bool]
    field_path: str | None = None


def _cel(rules: Sequence[Rule]) -> dict[str, Any]:
    return _rules(*[(r.cel, r.message, r.field_path) if r.field_path else (r.cel, r.message) for r in rules])


def _enforce(model: Any, rules: Sequence[Rule]) -> None:
    for rule in rules:
        if not rule.ok(model):
            raise ValueError(rule.message)


# Pixel formats each encoder may be asked for (the CEL rule and the pydantic check come from this table). Unset
# means the playable default: 8-bit 4:2:0 (yuv420p), or 10-bit 4:2:0 for an HDR input kept as HDR.
CODEC_PIXEL_FORMATS: dict[str, tuple[str, ...]] = {
    "h264": ("yuv420p", "yuv420p10le", "yuv422p", "yuv444p"),
    "h265": ("yuv420p", "yuv420p10le", "yuv422p", "yuv444p"),
    "vp9": ("yuv420p", "yuv420p10le", "yuv422p", "yuv444p"),
    "av1": ("yuv420p", "yuv420p10le"),
}
DynamicRange = Literal["sdr", "hdr"]
HDR_CODECS = ("h265", "vp9", "av1")  # codecs whose 10-bit HDR players decode (not h264)
HDR_PIXEL_FORMATS = ("yuv420p10le",)


# Codecs that take fewer than every PixelFormat: the only ones the rule needs to name.
_RESTRICTED = [(c, f) for c, f in CODEC_PIXEL_FORMATS.items() if set(f) != set(get_args(PixelFormat))]


def _pixel_format_ok(v: Any) -> bool:
    return v.pixel_format is None or v.codec not in CODEC_PIXEL_FORMATS or \
        v.pixel_format in CODEC_PIXEL_FORMATS[v.codec]


VIDEO_RULES = (
    Rule("!(has(self.crf) && has(self.bitrate))", "crf and bitrate are mutually exclusive",
         lambda v: v.crf is None or v.bitrate is None, ".crf"),
    Rule("!(has(self.resolution) && (has(self.width) || has(self.height)))",
         "resolution and width/height are mutually exclusive",
         lambda v: v.resolution is None or (v.width is None and v.height is None), ".resolution"),
    Rule("!(self.codec in ['h264', 'h265']) || !has(self.crf) || self.crf <= 51",
         "crf must be at most 51 for h264 and h265",
         lambda v: v.codec not in ("h264", "h265") or v.crf is None or v.crf <= 51, ".crf"),
    Rule("!(self.codec in ['copy', 'none']) || !(has(self.width) || has(self.height) || has(self.resolution) || "
         "has(self.crf) || has(self.bitrate) || has(self.preset) || has(self.fps) || has(self.pixelFormat) || "
         "has(self.dynamicRange))",
         "codec copy/none takes no encoding settings",
         lambda v: v.codec not in ("copy", "none") or all(x is None for x in (
             v.width, v.height, v.resolution, v.crf, v.bitrate, v.preset, v.fps, v.pixel_format, v.dynamic_range)),
         ".codec"),
    Rule("!has(self.pixelFormat) || " + " && ".join(
        f"(self.codec != '{codec}' || self.pixelFormat in {_in(formats)})" for codec, formats in _RESTRICTED),
         "; ".join(f"{codec} takes pixelFormat {' or '.join(formats)}" for codec, formats in _RESTRICTED),
         _pixel_format_ok, ".pixelFormat"),
    Rule(f"!has(self.dynamicRange) || self.dynamicRange != 'hdr' || self.codec in {_in(HDR_CODECS)}",
         "dynamicRange hdr needs codec h265, vp9 or av1 (browsers do not play 10-bit h264)",
         lambda v: v.dynamic_range != "hdr" or v.codec in HDR_CODECS, ".dynamicRange"),
    Rule("!has(self.dynamicRange) || self.dynamicRange != 'hdr' || !has(self.pixelFormat) || "
         f"self.pixelFormat in {_in(HDR_PIXEL_FORMATS)}",
         "dynamicRange hdr needs a 10-bit pixelFormat (yuv420p10le) or none",
         lambda v: v.dynamic_range != "hdr" or v.pixel_format is None or v.pixel_format in HDR_PIXEL_FORMATS,
         ".pixelFormat"),
)


class VideoSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_cel(VIDEO_RULES))

    codec: VideoCodec = Field(
        description="Video codec: h264, h265, vp9, av1, copy (no re-encode) or none (drop video).")
    width: Annotated[int, Field(ge=16, le=7680, multiple_of=2)] | None = Field(
        default=None, description="Output width in pixels (even). With only one of width/height the other keeps "
                                  "the display aspect ratio; with both the frame is exactly width x height (square "
                                  "pixels).")
    height: Annotated[int, Field(ge=16, le=4320, multiple_of=2)] | None = Field(
        default=None, description="Output height in pixels (even).")
    resolution: NamedResolution | None = Field(
        default=None, description="Named size (e.g. 720p) of the short side: 1280x720 for a landscape input, "
                                  "720x1280 for a portrait one; the other side keeps the display aspect ratio.")
    crf: Annotated[int, Field(ge=0, le=63)] | None = Field(
        default=None, description="Constant quality (lower is better; 0-51 for h264/h265, 0-63 for vp9/av1). "
                                  "Mutually exclusive with bitrate.")
    bitrate: Annotated[str, Field(max_length=12, pattern=BITRATE_PATTERN)] | None = Field(
        default=None, description="Target average bitrate such as 2500k or 4M. Mutually exclusive with crf.")
    preset: Preset | None = Field(
        default=None, description="Speed/efficiency trade-off, in x264 terms; mapped to each encoder's own scale.")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(default=None, description="Output frame rate.")
    pixel_format: PixelFormat | None = Field(
        default=None, description="Output pixel format. Unset: yuv420p (8-bit 4:2:0, what every browser and device "
                                  "decodes), or yuv420p10le for an HDR input kept with dynamicRange hdr. "
                                  "yuv420p10le, yuv422p and yuv444p are for archives and editing (not av1's "
                                  "4:2:2/4:4:4).")
    dynamic_range: DynamicRange | None = Field(
        default=None, description="sdr (default): HDR inputs (PQ or HLG) are tone-mapped to SDR BT.709. hdr: an "
                                  "HDR input stays HDR (10-bit, its transfer, BT.2020, HDR10 metadata carried "
                                  "over); h265, vp9 or av1 only. SDR inputs stay SDR either way.")

    @model_validator(mode="after")
    def _check(self) -> VideoSpec:
        _enforce(self, VIDEO_RULES)
        return self


class LoudnessSpec(ApiModel):
    integrated_lufs: Annotated[float, Field(ge=-70, le=-5)] = Field(
        default=-23.0, description="Target integrated loudness in LUFS (EBU R128: -23; streaming services: -14..-16).")
    true_peak_db: Annotated[float, Field(ge=-9, le=0)] = Field(
        default=-1.0, description="Maximum true peak in dBTP.")
    loudness_range: Annotated[float, Field(ge=1, le=20)] = Field(
        default=7.0, description="Target loudness range (LRA) in LU.")


AUDIO_RULES = (
    Rule("!(self.codec in ['copy', 'none']) || !(has(self.bitrate) || has(self.channels) || has(self.sampleRate) "
         "|| has(self.loudness))",
         "codec copy/none takes no encoding settings",
         lambda a: a.codec not in ("copy", "none") or all(
             v is None for v in (a.bitrate, a.channels, a.sample_rate, a.loudness)), ".codec"),
    Rule("self.codec != 'none' || !has(self.track)", "codec none takes no track",
         lambda a: a.codec != "none" or a.track is None, ".track"),
)


class AudioSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_cel(AUDIO_RULES))

    codec: AudioCodec = Field(
        description="Audio codec: aac, opus, mp3, flac, copy (no re-encode) or none (drop audio).")
    bitrate: Annotated[str, Field(max_length=12, pattern=BITRATE_PATTERN)] | None = Field(
        default=None, description="Audio bitrate such as 128k.")
    channels: Annotated[int, Field(ge=1, le=8)] | None = Field(
        default=None, description="Channel count (2 = stereo); fewer channels than the input downmixes.")
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] | None = Field(
        default=None, description="Sample rate in Hz.")
    track: Annotated[int, Field(ge=0, le=31)] | None = Field(
        default=None, description="Which audio stream of the input to use, counting audio streams from 0; "
                                  "unset means the first.")
    loudness: LoudnessSpec | None = Field(
        default=None, description="EBU R128 loudness normalisation (two-pass loudnorm: measure, then correct).")

    @model_validator(mode="after")
    def _copy_plain(self) -> AudioSpec:
        _enforce(self, AUDIO_RULES)
        return self


# ---- adaptive streaming ------------------------------------------------------------------------------

StreamCodec = Literal["h264", "h265"]


class RenditionSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_rules(
        ("has(self.resolution) != has(self.height)", "a rendition needs exactly one of resolution and height"),
    ))

    resolution: NamedResolution | None = Field(
        default=None, description="Named size of this rendition's short side (e.g. 720p: 1280x720, or 720x1280 for "
                                  "a portrait input); the other side keeps the display aspect ratio.")
    height: Annotated[int, Field(ge=16, le=4320, multiple_of=2)] | None = Field(
        default=None, description="The short side in pixels (even): the height of a landscape input's rendition, "
                                  "the width of a portrait one's; the other side keeps the display aspect ratio.")
    bitrate: Annotated[str, Field(max_length=12, pattern=BITRATE_PATTERN)] = Field(
        description="Average video bitrate of this rendition, such as 2500k (peaks are capped at 1.5x).")

    @model_validator(mode="after")
    def _one_size(self) -> RenditionSpec:
        if (self.resolution is None) == (self.height is None):
            raise ValueError("a rendition needs exactly one of resolution and height")
        return self

    @property
    def pixel_height(self) -> int:
        return RESOLUTION_HEIGHTS[self.resolution] if self.resolution else int(self.height or 0)


class AutoLadderSpec(ApiModel):
    max_renditions: Annotated[int, Field(ge=1, le=8)] = Field(
        default=4, description="At most this many renditions, the highest that do not upscale the input.")


STREAMING_RULES = (
    Rule("!(has(self.renditions) && has(self.autoLadder))", "renditions and autoLadder are mutually exclusive",
         lambda s: s.renditions is None or s.auto_ladder is None, ".renditions"),
    Rule("!has(self.renditions) || self.renditions.all(r, self.renditions.exists_one(q, "
         "(has(q.height) ? q.height : 0) == (has(r.height) ? r.height : 0) && "
         "(has(q.resolution) ? q.resolution : '') == (has(r.resolution) ? r.resolution : '')))",
         "rendition sizes must be unique",
         lambda s: s.renditions is None or len({(r.height, r.resolution) for r in s.renditions}) == len(s.renditions),
         ".renditions"),
)


class StreamingSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_cel(STREAMING_RULES))

    segment_seconds: Annotated[int, Field(ge=1, le=30)] = Field(
        default=4, description="Segment length in seconds; keyframes are forced at every segment boundary in every "
                               "rendition, so renditions switch cleanly.")
    renditions: Annotated[list[RenditionSpec], Field(min_length=1, max_length=8)] | None = Field(
        default=None, description="The ladder, highest first or in any order. Mutually exclusive with autoLadder; "
                                  "with neither, the automatic ladder applies.")
    auto_ladder: AutoLadderSpec | None = Field(
        default=None, description="Derive the ladder from the probed input: never upscale, a fixed bitrate per "
                                  "height (see docs/media.md), at most maxRenditions.")
    codec: StreamCodec = Field(default="h264", description="Video codec of every rendition: h264 or h265.")
    preset: Preset | None = Field(default=None, description="Encoder speed/efficiency trade-off (x264 names).")
    also_hls: bool = Field(
        default=False, description="For type dash: also write HLS playlists (master.m3u8) over the same CMAF "
                                   "segments.")

    @model_validator(mode="after")
    def _check(self) -> StreamingSpec:
        _enforce(self, STREAMING_RULES)
        return self


# ---- images ------------------------------------------------------------------------------------------

ImageFormat = Literal["jpeg", "webp"]


class ThumbnailsSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_rules(
        ("has(self.times) != has(self.intervalSeconds)", "thumbnails need exactly one of times and intervalSeconds"),
    ))

    times: Annotated[list[Annotated[float, Field(ge=0, le=86400)]], Field(min_length=1, max_length=100)] | None = \
        Field(default=None, description="Take one image at each of these times (seconds from the start).")
    interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] | None = Field(
        default=None, description="Take one image every this many seconds, starting at 0.")
    format: ImageFormat = Field(default="jpeg", description="Image format: jpeg or webp.")
    width: Annotated[int, Field(ge=16, le=3840)] | None = Field(
        default=None, description="Image width; with only one of width/height the other keeps the aspect ratio.")
    height: Annotated[int, Field(ge=16, le=2160)] | None = Field(default=None, description="Image height.")

    @model_validator(mode="after")
    def _one_schedule(self) -> ThumbnailsSpec:
        if (self.times is None) == (self.interval_seconds is None):
            raise ValueError("thumbnails need exactly one of times and intervalSeconds")
        return self


class SpriteSpec(ApiModel):
    interval_seconds: Annotated[float, Field(ge=0.1, le=3600)] = Field(
        default=5.0, description="One tile every this many seconds.")
    columns: Annotated[int, Field(ge=1, le=50)] = Field(default=10, description="Tiles per row of the sheet.")
    tile_width: Annotated[int, Field(ge=32, le=640, multiple_of=2)] = Field(
        default=160, description="Width of one tile in pixels; the height keeps the input's aspect ratio.")
    format: ImageFormat = Field(default="jpeg", description="Image format of the sheet: jpeg or webp.")


class PosterSpec(ApiModel):
    time_seconds: Annotated[float, Field(ge=0, le=86400)] | None = Field(
        default=None, description="When to take the frame; unset means at 10% of the input's duration.")
    format: ImageFormat = Field(default="jpeg", description="Image format: jpeg or webp (the URI's extension "
                                                            "is not checked).")
    width: Annotated[int, Field(ge=16, le=7680)] | None = Field(
        default=None, description="Image width; with only one of width/height the other keeps the aspect ratio.")
    height: Annotated[int, Field(ge=16, le=4320)] | None = Field(default=None, description="Image height.")


# ---- edits and filters -------------------------------------------------------------------------------

TRIM_RULES = (
    Rule("!(has(self.endSeconds) && has(self.durationSeconds))", "endSeconds and durationSeconds are mutually "
         "exclusive", lambda t: t.end_seconds is None or t.duration_seconds is None, ".endSeconds"),
    Rule("!has(self.endSeconds) || self.endSeconds > self.startSeconds", "endSeconds must be after startSeconds",
         lambda t: t.end_seconds is None or t.end_seconds > t.start_seconds, ".endSeconds"),
)


class TrimSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_cel(TRIM_RULES))

    start_seconds: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=0.0, description="Start of the kept part, in seconds from the input's start (frame-accurate).")
    end_seconds: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None, description="End of the kept part (seconds from the input's start).")
    duration_seconds: Annotated[float, Field(gt=0, le=86400)] | None = Field(
        default=None, description="Length of the kept part; mutually exclusive with endSeconds.")

    @model_validator(mode="after")
    def _check(self) -> TrimSpec:
        _enforce(self, TRIM_RULES)
        return self

    @property
    def length(self) -> float | None:
        if self.duration_seconds is not None:
            return self.duration_seconds
        if self.end_seconds is not None:
            return self.end_seconds - self.start_seconds
        return None


WatermarkPosition = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


class WatermarkSpec(ApiModel):
    uri: S3Uri = Field(
        description="The watermark image (PNG with alpha, JPEG or WebP), as s3://bucket/key; read with the input's "
                    "credentials.")
    position: WatermarkPosition = Field(
        default="bottom-right", description="top-left, top-right, bottom-left, bottom-right or center.")
    scale: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.15, description="Watermark width as a fraction of the video's width (aspect ratio kept).")
    opacity: Annotated[float, Field(ge=0, le=1)] = Field(default=0.8, description="0 (invisible) to 1 (opaque).")
    margin: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=16, description="Distance from the edges in pixels (ignored for center).")


ASPECT_PATTERN = r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$"


class AspectSpec(ApiModel):
    ratio: Annotated[str, Field(max_length=9, pattern=ASPECT_PATTERN)] = Field(
        description="Target display aspect ratio such as 16:9, 1:1 or 9:16.")
    mode: Literal["crop", "pad"] = Field(
        default="crop", description="crop (center, cut the excess) or pad (letterbox/pillarbox in black).")


class FiltersSpec(ApiModel):
    deinterlace: bool | None = Field(
        default=None, description="Deinterlace (bwdif, one frame per frame): true always, false never; unset: when "
                                  "the probe says the input is interlaced (status.input.interlaced).")
    denoise: Literal["light", "medium", "strong"] | None = Field(
        default=None, description="Spatio-temporal denoise (hqdn3d) strength.")
    aspect: AspectSpec | None = Field(default=None, description="Crop or pad to a target aspect ratio.")
    watermark: WatermarkSpec | None = Field(default=None, description="Overlay an image from S3.")


# ---- quality -----------------------------------------------------------------------------------------

QualityMetric = Literal["psnr", "ssim", "vmaf"]

QUALITY_RULES = (
    Rule("!has(self.gate) || self.gate.metric in self.metrics", "the gate's metric must be one of metrics",
         lambda q: q.gate is None or q.gate.metric in q.metrics, ".gate.metric"),
    Rule("!has(self.gate) || self.gate.metric != 'ssim' || self.gate.min <= 1.0",
         "an ssim gate's min is at most 1", lambda q: q.gate is None or q.gate.metric != "ssim" or q.gate.min <= 1,
         ".gate.min"),
    Rule("self.metrics.all(m, self.metrics.exists_one(n, n == m))", "metrics must be unique",
         lambda q: len(set(q.metrics)) == len(q.metrics), ".metrics"),
)


def _default_metrics() -> list[QualityMetric]:
    return ["psnr", "ssim"]


class QualityGateSpec(ApiModel):
    metric: QualityMetric = Field(description="Which metric to compare: psnr (dB), ssim (0-1) or vmaf (0-100).")
    min: Annotated[float, Field(ge=0, le=100)] = Field(description="Lowest acceptable value of the metric.")
    on_fail: Literal["fail", "reencode"] = Field(
        default="fail", description="Below min: fail the job (QualityBelowThreshold), or re-encode this output once "
                                    "at a higher quality (crf -6, or bitrate x1.5) and fail only if that is still "
                                    "below (file outputs only; hls/dash gates every rendition and can only fail).")


class QualitySpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_cel(QUALITY_RULES))

    metrics: Annotated[list[QualityMetric], Field(min_length=1, max_length=3)] = Field(
        default_factory=_default_metrics, json_schema_extra={"default": ["psnr", "ssim"]},
        description="Metrics to compute against the source: psnr, ssim, vmaf (only where ffmpeg has libvmaf; "
                    "status.outputs[].metrics.unavailable lists what could not be computed).")
    gate: QualityGateSpec | None = Field(default=None, description="Optional minimum of one metric.")

    @model_validator(mode="after")
    def _check(self) -> QualitySpec:
        _enforce(self, QUALITY_RULES)
        return self


OutputType = Literal["file", "hls", "dash", "thumbnails", "sprite", "poster"]
PREFIX_TYPES = ("hls", "dash", "thumbnails", "sprite")  # multi-file outputs: the URI is a prefix ending in /
STREAM_TYPES = ("hls", "dash")
EDITABLE_TYPES = ("file", "hls", "dash")


def _codec_check(container: str, kind: str, allowed: tuple[str, ...]) -> Callable[[Any], bool]:
    def ok(o: Any) -> bool:
        spec = getattr(o, kind)
        return bool(o.container != container or spec is None or spec.codec in allowed)
    return ok


def _output_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = []
    for container, kinds in CONTAINER_CODECS.items():
        for kind in ("video", "audio"):
            allowed = kinds[kind]
            rules.append(Rule(
                f"!has(self.container) || self.container != '{container}' || !has(self.{kind}) || "
                f"self.{kind}.codec in {_in(allowed)}",
                f"{container} cannot carry that {kind} codec; allowed: {', '.join(allowed)}",
                _codec_check(container, kind, allowed),
                f".{kind}.codec",
            ))
    rules += [
        Rule("!(has(self.video) && self.video.codec == 'none' && has(self.audio) && self.audio.codec == 'none')",
             "an output needs video or audio",
             lambda o: not (o.video and o.video.codec == "none" and o.audio and o.audio.codec == "none"),
             ".video.codec"),
        Rule("self.type == 'file' ? has(self.container) : !has(self.container)",
             "file outputs need a container; other output types take none",
             lambda o: (o.type == "file") == (o.container is not None), ".container"),
        Rule(f"(self.type in {_in(PREFIX_TYPES)}) == self.uri.endsWith('/')",
             "hls, dash, thumbnails and sprite outputs take a URI prefix ending in /; file and poster outputs an "
             "object key", lambda o: (o.type in PREFIX_TYPES) == o.uri.endswith("/"), ".uri"),
        Rule(f"!has(self.streaming) || self.type in {_in(STREAM_TYPES)}", "streaming is only for hls and dash outputs",
             lambda o: o.streaming is None or o.type in STREAM_TYPES, ".streaming"),
        Rule("!has(self.streaming) || !self.streaming.alsoHls || self.type == 'dash'",
             "streaming.alsoHls is only for dash outputs",
             lambda o: o.streaming is None or not o.streaming.also_hls or o.type == "dash", ".streaming.alsoHls"),
        Rule("has(self.thumbnails) == (self.type == 'thumbnails')", "thumbnails outputs need thumbnails, and only they",
             lambda o: (o.thumbnails is not None) == (o.type == "thumbnails"), ".thumbnails"),
        Rule("!has(self.sprite) || self.type == 'sprite'", "sprite is only for sprite outputs",
             lambda o: o.sprite is None or o.type == "sprite", ".sprite"),
        Rule("!has(self.poster) || self.type == 'poster'", "poster is only for poster outputs",
             lambda o: o.poster is None or o.type == "poster", ".poster"),
        Rule("!has(self.video) || self.type == 'file'", "video is only for file outputs (hls/dash use streaming)",
             lambda o: o.video is None or o.type == "file", ".video"),
        Rule(f"!has(self.audio) || self.type == 'file' || (self.type in {_in(STREAM_TYPES)} && "
             "self.audio.codec in ['aac', 'none'])",
             "hls/dash audio is aac or none; image outputs take no audio",
             lambda o: o.audio is None or o.type == "file" or (o.type in STREAM_TYPES and o.audio.codec in
                                                                ("aac", "none")), ".audio"),
        Rule(f"!(has(self.trim) || has(self.filters)) || self.type in {_in(EDITABLE_TYPES)}",
             "trim and filters are only for file, hls and dash outputs",
             lambda o: (o.trim is None and o.filters is None) or o.type in EDITABLE_TYPES, ".trim"),
        Rule(f"!has(self.filters) || ((!has(self.video) || !(self.video.codec in ['copy', 'none'])) && "
             f"(!has(self.container) || !(self.container in {_in(AUDIO_CONTAINERS)})))",
             "filters need re-encoded video",
             lambda o: o.filters is None or ((o.video is None or o.video.codec not in ("copy", "none")) and
                                             o.container not in AUDIO_CONTAINERS), ".filters"),
        Rule(f"!has(self.quality) || self.type in {_in(STREAM_TYPES)} || (self.type == 'file' && "
             "(!has(self.video) || !(self.video.codec in ['copy', 'none'])) && "
             f"(!has(self.container) || !(self.container in {_in(AUDIO_CONTAINERS)})))",
             "quality is only for file outputs with re-encoded video and for hls/dash outputs",
             lambda o: o.quality is None or o.type in STREAM_TYPES or (
                 o.type == "file" and (o.video is None or o.video.codec not in ("copy", "none"))
                 and o.container not in AUDIO_CONTAINERS), ".quality"),
        Rule(f"!has(self.quality) || !has(self.quality.gate) || !(self.type in {_in(STREAM_TYPES)}) || "
             "!has(self.quality.gate.onFail) || self.quality.gate.onFail != 'reencode'",
             "quality.gate.onFail reencode is only for file outputs; an hls/dash gate can only fail the job",
             lambda o: o.quality is None or o.quality.gate is None or o.type not in STREAM_TYPES
             or o.quality.gate.on_fail != "reencode", ".quality"),
        Rule("!has(self.quality) || !has(self.video) || !has(self.video.fps)",
             "quality cannot be measured with video.fps (frames would not line up with the source)",
             lambda o: o.quality is None or o.video is None or o.video.fps is None, ".quality"),
    ]
    return tuple(rules)


SETTINGS_RULES = _output_rules()


def _unless_preset(rule: Rule) -> Rule:
    """An output that names a preset is only partial until the operator merges the preset into it, so rules that
    depend on the output's type (which the preset may set) wait for the merge; the merged output is checked in
    full (InvalidPreset)."""
    ok = rule.ok
    return Rule(f"has(self.preset) || ({rule.cel})", rule.message,
                lambda o: o.preset is not None or ok(o), rule.field_path)


# Rules of a job's output: the settings rules, type-dependent ones waived while a preset is unresolved.
OUTPUT_RULES = tuple(_unless_preset(r) if "self.type" in r.cel else r for r in SETTINGS_RULES)
# Rules of a TranscodePreset: complete settings, except that there is no URI yet.
PRESET_RULES = tuple(r for r in SETTINGS_RULES if "self.uri" not in r.cel)
PRESET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class OutputSettings(ApiModel):
    """What an output produces, without where it goes: shared by job outputs and TranscodePresets."""

    type: OutputType = Field(
        default="file", description="file (one media file), hls or dash (an adaptive-streaming package of CMAF "
                                    "segments), thumbnails, sprite (sheet + WebVTT storyboard) or poster (one "
                                    "image).")
    container: ContainerFormat | None = Field(
        default=None, description="For file outputs (required, here or from the preset): mp4, webm, mkv, mov, "
                                  "or audio-only m4a, mp3, ogg, flac.")
    video: VideoSpec | None = Field(
        default=None, description="Video settings of a file output; unset means the container's default codec "
                                  "(h264, vp9 for webm, none for audio containers).")
    audio: AudioSpec | None = Field(
        default=None, description="Audio settings (file, hls, dash); unset means the container's default codec "
                                  "(aac; opus for webm/ogg, mp3 for mp3, flac for flac).")
    streaming: StreamingSpec | None = Field(
        default=None, description="hls/dash: segment length, ladder (explicit or automatic), codec.")
    thumbnails: ThumbnailsSpec | None = Field(default=None, description="thumbnails: when, format and size.")
    sprite: SpriteSpec | None = Field(default=None, description="sprite: tile interval, layout, size and format.")
    poster: PosterSpec | None = Field(default=None, description="poster: when, format and size.")
    trim: TrimSpec | None = Field(default=None, description="Keep only part of the input (file, hls, dash).")
    filters: FiltersSpec | None = Field(
        default=None, description="Video filters applied before scaling (file, hls, dash): deinterlace, denoise, "
                                  "aspect crop/pad, watermark.")
    quality: QualitySpec | None = Field(
        default=None, description="file outputs with re-encoded video, and hls/dash (every rendition): measure "
                                  "quality against the source (status.outputs[].metrics, or "
                                  "status.outputs[].renditions[].metrics) and optionally gate on it.")


class OutputSpec(OutputSettings):
    model_config = ConfigDict(json_schema_extra=_cel(OUTPUT_RULES))

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] = Field(
        description="Name of this output, unique within the job; status.outputs uses it.")
    uri: S3Uri = Field(
        description="Where the output is written: s3://bucket/key for file and poster outputs, a prefix "
                    "s3://bucket/path/ (ending in /) for hls, dash, thumbnails and sprite outputs.")
    preset: Annotated[str, Field(min_length=1, max_length=253, pattern=PRESET_NAME_PATTERN)] | None = Field(
        default=None, description="Name of a TranscodePreset whose settings this output starts from; settings the "
                                  "output gives override the preset's (see docs/api.md). The operator resolves it "
                                  "once, when it creates the Job, and records the result in status.resolvedOutputs.")

    @model_validator(mode="after")
    def _codecs_fit(self) -> OutputSpec:
        _enforce(self, OUTPUT_RULES)
        return self

    @property
    def video_codec(self) -> str:
        if self.video:
            return self.video.codec
        if self.container:
            return DEFAULT_CODECS[self.container][0]
        if self.type in STREAM_TYPES:
            return self.streaming.codec if self.streaming else "h264"
        return "none"  # images: decoded frames, no video stream

    @property
    def audio_codec(self) -> str:
        if self.audio:
            return self.audio.codec
        if self.container:
            return DEFAULT_CODECS[self.container][1]
        return "aac" if self.type in STREAM_TYPES else "none"

    @property
    def is_prefix(self) -> bool:
        if self.preset is not None:  # unresolved: the preset may set the type
            return self.uri.endswith("/")
        return self.type in PREFIX_TYPES


class TranscodePresetSpec(OutputSettings):
    """A TranscodePreset's spec: one output's settings without name and URI."""

    model_config = ConfigDict(json_schema_extra=_cel(PRESET_RULES))

    description: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="What the preset is for, for humans.")

    @model_validator(mode="after")
    def _codecs_fit(self) -> TranscodePresetSpec:
        _enforce(self, PRESET_RULES)
        return self


class AcceleratorSpec(ApiModel):
    type: Literal["cpu", "nvidia"] = Field(
        default="cpu", description="cpu, or nvidia for NVENC encoding and CUDA decoding on a GPU node.")
    fallback: Literal["wait", "cpu"] = Field(
        default="wait", description="For nvidia: wait for a GPU node, or run on CPU if no GPU node takes the job "
                                    "within fallbackAfterSeconds.")
    fallback_after_seconds: Annotated[int, Field(ge=10, le=86400)] = Field(
        default=300, description="How long a GPU job may stay unschedulable before fallback: cpu applies.")


class ResourceList(ApiModel):
    cpu: Annotated[str, Field(max_length=16, pattern=QUANTITY_PATTERN)] | None = Field(
        default=None, description="CPU quantity, such as 2 or 500m.")
    memory: Annotated[str, Field(max_length=16, pattern=QUANTITY_PATTERN)] | None = Field(
        default=None, description="Memory quantity, such as 2Gi.")


class ResourcesSpec(ApiModel):
    requests: ResourceList | None = Field(default=None, description="Worker resource requests.")
    limits: ResourceList | None = Field(default=None, description="Worker resource limits.")


# Spec fields (wire names) that may change after creation; the rest are immutable (a CEL transition rule).
IMMUTABLE_EXCEPT = ("suspend", "cancel", "priority", "manualRetry", "ttlSecondsAfterFinished")

WebhookEvent = Literal["queued", "started", "progress", "succeeded", "failed", "cancelled"]
WEBHOOK_EVENTS: tuple[str, ...] = ("queued", "started", "progress", "succeeded", "failed", "cancelled")


class WebhookSecretRef(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN)] = Field(
        description="Name of a Secret in the TranscodeJob's namespace holding the signing secret.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        default="secret", description="The Secret's key whose value is the Standard Webhooks secret "
                                      "(whsec_<base64>).")


class WebhookSpec(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] = Field(
        description="Names the subscription in status.webhooks and in delivery ids.")
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s/@]+(/[^\s]*)?$")] = Field(
        description="Where to POST the events (https; http only where the operator allows it). Resolved once "
                    "per delivery and refused when it points at a loopback, private, link-local or metadata "
                    "address the operator does not allow.")
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=6)] = Field(
        description="Which events to send: queued, started, progress (throttled), succeeded, failed, cancelled.",
        json_schema_extra={"x-kubernetes-list-type": "set"})
    secret_ref: WebhookSecretRef = Field(description="The signing secret (Standard Webhooks, HMAC-SHA256).")
    progress_interval_seconds: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=30, description="At most one progress event per this many seconds.")


class TranscodeJobSpec(ApiModel):
    input: InputSpec = Field(description="The source media.")
    outputs: Annotated[list[OutputSpec], Field(min_length=1, max_length=10)] = Field(
        description="What to produce: one or more outputs, all from one decode of the input.",
        json_schema_extra={
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            **_rules(("self.all(x, self.exists_one(y, y.uri == x.uri))", "output URIs must be unique"),
                     ("self.all(x, self.all(y, x.name == y.name || !x.uri.endsWith('/') || !y.uri.startsWith(x.uri)))",
                      "an output cannot be written under another output's URI prefix")),
        },
    )
    accelerator: AcceleratorSpec = Field(default_factory=AcceleratorSpec,
                                         description="Where to encode: CPU, or NVIDIA GPU with a fallback policy.",
                                         json_schema_extra={"default": {}})
    resources: ResourcesSpec | None = Field(default=None, description="Overrides the worker's default resources.")
    retry_limit: Annotated[int, Field(ge=0, le=10)] = Field(
        default=2, description="Retries after a failed attempt (the Job's backoffLimit). Bad input is never retried.")
    deadline_seconds: Annotated[int, Field(ge=30, le=604800)] | None = Field(
        default=None, description="Wall-clock limit for the whole job, retries included (activeDeadlineSeconds).")
    suspend: bool = Field(default=False, description="Pause (true) or resume (false) the job.")
    cancel: bool = Field(default=False, description="Stop the job for good and remove partial outputs.")
    priority: Annotated[int, Field(ge=-50, le=50)] = Field(
        default=0, description="Admission order within the pool: higher first, FIFO within a priority; waiting "
                               "jobs age upwards so none starves. May change while the job is queued.")
    pool: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] | None = Field(
        default=None, description="The capacity pool to queue in (operator config); by default the pool for "
                                  "accelerator.type (cpu or gpu).")
    retry_backoff_seconds: Annotated[list[Annotated[int, Field(ge=0, le=86400)]], Field(
        min_length=1, max_length=10)] | None = Field(
        default=None, description="Delay before each retry (the last entry repeats); the operator's schedule "
                                  "when unset. Bad input is never retried.")
    stall_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] | None = Field(
        default=None, description="Kill and retry an attempt whose ffmpeg made no progress for this long "
                                  "(the operator's default when unset).")
    manual_retry: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=0, description="Raise by one to retry a Failed job: a fresh Job starts, the attempt history "
                               "stays in status. Cannot decrease.")
    webhooks: Annotated[list[WebhookSpec], Field(max_length=5)] | None = Field(
        default=None, description="Signed event deliveries (Standard Webhooks) for this job.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=31536000)] | None = Field(
        default=None, description="Delete this TranscodeJob this long after it finished (the operator's "
                                  "retention when unset; none by default). Pending webhook deliveries go first.")

    @model_validator(mode="after")
    def _unique_uris(self) -> TranscodeJobSpec:
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError("output names must be unique")
        uris = [o.uri for o in self.outputs]
        if len(set(uris)) != len(uris):
            raise ValueError("output URIs must be unique")
        for x in self.outputs:
            if x.is_prefix and any(y.name != x.name and y.uri.startswith(x.uri) for y in self.outputs):
                raise ValueError("an output cannot be written under another output's URI prefix")
        if self.input.uri in uris or any(o.is_prefix and self.input.uri.startswith(o.uri) for o in self.outputs):
            raise ValueError("an output cannot overwrite the input")
        return self


# ---- status ------------------------------------------------------------------------------------

Phase = Literal["Queued", "Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended"]
# Every Failed job gets one (status.failureCategory, label transkube.dev/failure-category): the dead-letter view.
FailureCategory = Literal["BadInput", "Unsupported", "Config", "Quality", "Transient", "Internal", "Stalled",
                          "Timeout", "Quota"]
# How one attempt ended, and so whether it counted against retryLimit.
FailureClass = Literal["Permanent", "Transient", "Internal", "Disruption", "Stalled"]
Stage = Literal["Pending", "Downloading", "Probing", "Transcoding", "Uploading", "Done"]


class Condition(ApiModel):
    model_config = ConfigDict(frozen=False)

    type: Annotated[str, Field(max_length=316)] = Field(
        description="Condition type: Ready, Succeeded, Reconciling, Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: Annotated[str, Field(max_length=1024)] = Field(description="CamelCase reason for the last transition.")
    message: Annotated[str, Field(max_length=32768)] = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The spec generation this reflects.")


class Progress(ApiModel):
    model_config = ConfigDict(frozen=False)

    stage: Stage = Field(description="Pending, Downloading, Probing, Transcoding, Uploading or Done.")
    percent: Annotated[float, Field(ge=0, le=100)] = Field(default=0, description="Overall progress, 0-100.")
    fps: float | None = Field(default=None, description="Frames encoded per second.")
    speed: float | None = Field(default=None, description="Encoding speed relative to real time (2.0 = 2x).")
    eta_seconds: int | None = Field(default=None, description="Estimated seconds until the transcode finishes.")
    eta: str | None = Field(default=None, description="The same estimate for humans, such as 1m05s.")
    updated_at: str | None = Field(default=None, description="When the worker last wrote progress (RFC 3339).")


class MasteringDisplay(ApiModel):
    """SMPTE ST 2086 mastering display colour volume (HDR10 static metadata): CIE 1931 xy chromaticities and
    luminance in cd/m2."""

    red: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(description="x, y of the red primary.")
    green: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(description="x, y of green.")
    blue: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(description="x, y of blue.")
    white_point: Annotated[list[float], Field(min_length=2, max_length=2)] = Field(description="x, y of white.")
    max_luminance: float = Field(description="Peak luminance in cd/m2.")
    min_luminance: float = Field(description="Black level in cd/m2.")


class InputFacts(ApiModel):
    duration_seconds: float | None = Field(default=None, description="Probed duration.")
    width: int | None = Field(default=None, description="Probed video width.")
    height: int | None = Field(default=None, description="Probed video height.")
    video_codec: str | None = Field(default=None, description="Probed video codec.")
    audio_codec: str | None = Field(default=None, description="Probed audio codec.")
    frame_rate: float | None = Field(default=None, description="Probed frame rate.")
    bitrate: int | None = Field(default=None, description="Probed overall bitrate in bits/s.")
    size_bytes: int | None = Field(default=None, description="Input object size.")
    format_name: str | None = Field(default=None, description="Probed container format.")
    stream_count: int | None = Field(default=None, description="Number of streams of all kinds.")
    audio_streams: int | None = Field(default=None, description="Number of audio streams (audio.track counts "
                                                                "these from 0).")
    rotation: int | None = Field(default=None, description="Display rotation of the video in degrees "
                                                           "(width/height above are after it: upright).")
    sample_aspect_ratio: str | None = Field(
        default=None, description="Shape of a pixel, such as 4:3 for anamorphic video (the display width is width "
                                  "x this); unset for square pixels.")
    pixel_format: str | None = Field(default=None, description="Probed pixel format, such as yuv420p10le.")
    bit_depth: int | None = Field(default=None, description="Bits per sample of the video.")
    color_primaries: str | None = Field(default=None, description="Probed colour primaries (bt709, bt2020...).")
    color_transfer: str | None = Field(default=None, description="Probed transfer characteristics (bt709, "
                                                                 "smpte2084 (PQ), arib-std-b67 (HLG)...).")
    color_space: str | None = Field(default=None, description="Probed matrix coefficients (bt709, bt2020nc...).")
    color_range: str | None = Field(default=None, description="tv (limited) or pc (full).")
    hdr: Literal["pq", "hlg"] | None = Field(
        default=None, description="The input's HDR transfer: pq (HDR10 and the like) or hlg; unset for SDR.")
    mastering_display: MasteringDisplay | None = Field(
        default=None, description="HDR10 mastering display metadata, when the input carries it.")
    max_cll: int | None = Field(default=None, description="HDR10 maximum content light level (cd/m2).")
    max_fall: int | None = Field(default=None, description="HDR10 maximum frame-average light level (cd/m2).")
    interlaced: bool | None = Field(
        default=None, description="True when the video is coded as interlaced fields (outputs are deinterlaced "
                                  "unless filters.deinterlace is false).")
    base_frame_rate: float | None = Field(
        default=None, description="ffprobe's r_frame_rate: the rate every timestamp fits on.")
    variable_frame_rate: bool | None = Field(
        default=None, description="True when frames are not evenly spaced (frameRate, the average, differs from "
                                  "baseFrameRate); outputs are then made constant-rate.")


class QualityMetrics(ApiModel):
    psnr: float | None = Field(default=None, description="Mean PSNR over all frames and planes, in dB (identical "
                                                         "frames count as 100).")
    ssim: float | None = Field(default=None, description="Mean SSIM over all frames and planes, 0-1.")
    vmaf: float | None = Field(default=None, description="Mean VMAF score, 0-100.")
    unavailable: list[QualityMetric] | None = Field(
        default=None, description="Requested metrics this worker could not compute (vmaf without libvmaf).")


class RenditionResult(ApiModel):
    width: int | None = Field(default=None, description="Probed width.")
    height: int | None = Field(default=None, description="Probed height.")
    bitrate: int | None = Field(default=None, description="Target video bitrate in bits/s.")
    playlist: str | None = Field(default=None, description="Media playlist of this rendition (HLS), relative.")
    metrics: QualityMetrics | None = Field(
        default=None, description="Quality of this rendition against the source, for outputs with quality set.")


class OutputResult(ApiModel):
    name: str = Field(description="The output's name from spec.outputs.")
    uri: str = Field(description="Where it was written.")
    size_bytes: int | None = Field(default=None, description="Object size.")
    duration_seconds: float | None = Field(default=None, description="Probed duration of the output.")
    video_codec: str | None = Field(default=None, description="Probed video codec.")
    audio_codec: str | None = Field(default=None, description="Probed audio codec.")
    width: int | None = Field(default=None, description="Probed width.")
    height: int | None = Field(default=None, description="Probed height.")
    checksum: str | None = Field(default=None, description="sha256:<hex> of the object's bytes (file and poster "
                                                           "outputs).")
    type: str | None = Field(default=None, description="The output's type, for other than file outputs.")
    files: list[str] | None = Field(
        default=None, description="Multi-file outputs: every object written, relative to the URI prefix.")
    renditions: list[RenditionResult] | None = Field(
        default=None, description="hls/dash: the renditions of the ladder, highest first.")
    playlist: str | None = Field(
        default=None, description="hls/dash: the entry point relative to the prefix (master.m3u8 or manifest.mpd).")
    metrics: QualityMetrics | None = Field(
        default=None, description="Quality against the source, for file outputs with quality set (hls/dash: per "
                                  "rendition, in renditions[].metrics).")
    reencoded: bool | None = Field(
        default=None, description="True when the quality gate re-encoded this output at a higher quality.")


class PresetUse(ApiModel):
    output: str = Field(description="The output (spec.outputs[].name) that named the preset.")
    preset: str = Field(description="The TranscodePreset's name.")
    generation: int | None = Field(default=None, description="The preset's metadata.generation that was used.")


class AcceleratorStatus(ApiModel):
    requested: Literal["cpu", "nvidia"] = Field(description="What the spec asked for.")
    effective: Literal["cpu", "nvidia"] = Field(description="What the current Job runs on.")
    reason: str | None = Field(default=None, description="Why effective differs from requested.")


class QueueStatus(ApiModel):
    pool: str = Field(description="The pool the job queues in.")
    priority: int = Field(description="spec.priority as last seen.")
    position: int | None = Field(default=None, description="1-based place in the pool's queue while waiting.")
    reason: str | None = Field(default=None, description="Why it waits: PoolCapacity or NamespaceConcurrency.")
    enqueued_time: str | None = Field(default=None, description="When the job joined the queue (RFC 3339).")
    admitted_time: str | None = Field(default=None, description="When it was admitted to run (RFC 3339).")


class AttemptRecord(ApiModel):
    attempt: int = Field(description="1-based attempt number (across manual retries).")
    round: int = Field(default=0, description="Which manual retry the attempt belongs to (0: the first run).")
    pod: str = Field(description="The worker pod.")
    node: str | None = Field(default=None, description="Where it ran.")
    start_time: str | None = Field(default=None, description="When the pod was created (RFC 3339).")
    finish_time: str | None = Field(default=None, description="When it ended (RFC 3339).")
    exit_code: int | None = Field(default=None, description="The worker's exit code.")
    reason: str | None = Field(default=None, description="Why it ended (CamelCase).")
    message: str | None = Field(default=None, description="Detail of the failure.")
    failure_class: FailureClass | None = Field(
        default=None, description="Permanent (not retried), Transient or Internal (retried, counted), Disruption "
                                  "(retried, not counted) or Stalled (killed by the watchdog, counted).")
    counted: bool | None = Field(default=None, description="Whether the failure counted against retryLimit.")


class WebhookState(ApiModel):
    name: str = Field(description="spec.webhooks[].name.")
    disabled: bool | None = Field(default=None, description="True once the receiver answered 410 Gone.")
    disabled_reason: str | None = Field(default=None, description="Why deliveries stopped.")
    last_progress_time: str | None = Field(default=None, description="When the last progress event was queued.")
    last_progress_percent: float | None = Field(
        default=None, description="The percent of the last progress event queued (an unchanged percent is not "
                                  "sent again).")
    progress_events: int | None = Field(default=None, description="Progress events queued so far (numbers their ids).")


class WebhookDelivery(ApiModel):
    id: str = Field(description="The webhook-id header: the same on every attempt, so receivers can dedupe.")
    webhook: str = Field(description="spec.webhooks[].name.")
    type: str = Field(description="Event type, such as transcodejob.succeeded.")
    event_time: str = Field(description="When the event happened (RFC 3339).")
    state: Literal["Pending", "Delivered", "Failed", "Abandoned"] = Field(
        description="Pending (to send or retry), Delivered (2xx), Failed (schedule exhausted) or Abandoned "
                    "(the subscription was disabled).")
    attempts: int = Field(default=0, description="POSTs made so far.")
    next_attempt_time: str | None = Field(default=None, description="When the next POST is due (RFC 3339).")
    last_attempt_time: str | None = Field(default=None, description="When the last POST was made (RFC 3339).")
    response_status: int | None = Field(default=None, description="HTTP status of the last response.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed.")
    data: dict[str, Any] | None = Field(
        default=None, description="Event data captured when the event happened (progress events).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class CleanupStatus(ApiModel):
    state: Literal["Running", "Succeeded", "Failed"] = Field(description="Running, Succeeded or Failed.")
    job_name: str = Field(description="The cleanup Job.")
    start_time: str | None = Field(default=None, description="When it was started (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When it finished (RFC 3339).")
    message: str | None = Field(default=None, description="What it removed, or why it failed.")


class TranscodeJobStatus(ApiModel):
    # A transition rule: the API server refuses any status write that changes or drops resolvedOutputs.
    model_config = ConfigDict(frozen=False, json_schema_extra=_rules(
        ("!has(oldSelf.resolvedOutputs) || (has(self.resolvedOutputs) && "
         "self.resolvedOutputs == oldSelf.resolvedOutputs)",
         "status.resolvedOutputs is written once and never changed", ".resolvedOutputs"),
    ))

    observed_generation: int | None = Field(default=None, description="The spec generation the status reflects.")
    phase: Phase | None = Field(
        default=None, description="Pending, Running, Succeeded, Failed, Cancelled or Suspended.")
    reason: str | None = Field(default=None, description="Why the job is in this phase (CamelCase), on failure.")
    message: str | None = Field(default=None, description="Human-readable detail of the reason.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Succeeded, and Reconciling/Stalled while true.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    progress: Progress | None = Field(default=None, description="Live progress, written by the worker.")
    input: InputFacts | None = Field(default=None, description="Facts about the input, probed by the worker.")
    outputs: list[OutputResult] = Field(default_factory=list, description="What was written, once it was.")
    attempts: int = Field(default=0, description="Attempts started so far.")
    job_name: str | None = Field(default=None, description="The batch Job running this TranscodeJob.")
    accelerator: AcceleratorStatus | None = Field(default=None, description="Requested and effective accelerator.")
    start_time: str | None = Field(default=None, description="When the first attempt started (RFC 3339).")
    completion_time: str | None = Field(default=None, description="When the job reached a final phase (RFC 3339).")
    # Plain objects in the CRD (each a spec.outputs[] item, checked by the OutputSpec model whenever the operator
    # writes or reads them): a second typed copy of the output schema would blow the CRD's CEL cost budget.
    resolved_outputs: Annotated[list[Annotated[dict[str, Any], Field(json_schema_extra={
        "x-kubernetes-preserve-unknown-fields": True})]], Field(max_length=10)] | None = Field(
        default=None, description="When outputs name presets: every output with its preset merged in (an outputs[] "
                                  "item without preset), as the worker runs it. Written once, when the Job is "
                                  "created; later preset edits never change it.")
    presets: Annotated[list[PresetUse], Field(max_length=10)] | None = Field(
        default=None, description="Which preset (and which generation of it) each preset output was resolved from.")
    queue: QueueStatus | None = Field(default=None, description="Pool, priority and place in the admission queue.")
    failure_category: FailureCategory | None = Field(
        default=None, description="On Failed: BadInput, Unsupported, Config, Quality, Transient, Internal, Stalled, "
                                  "Timeout or Quota (also the label transkube.dev/failure-category).")
    attempt_history: Annotated[list[AttemptRecord], Field(max_length=50)] | None = Field(
        default=None, description="Every attempt and how it ended, kept across manual retries (the latest 50).")
    next_attempt_time: str | None = Field(
        default=None, description="While waiting to retry: when the next attempt may start (RFC 3339).")
    manual_retries: int | None = Field(default=None, description="The spec.manualRetry value last acted on.")
    webhooks: Annotated[list[WebhookState], Field(max_length=5)] | None = Field(
        default=None, description="Per subscription: disabled or not, and progress throttling.")
    cleanup: CleanupStatus | None = Field(
        default=None, description="After a Failed or Cancelled job whose last attempt was killed before it could "
                                  "clean up (SIGKILL, OOM, node loss): the Job that removed its partial outputs.")
    webhook_deliveries: Annotated[list[WebhookDelivery], Field(max_length=100)] | None = Field(
        default=None, description="The outbox: one entry per event and subscription, with its delivery state. "
                                  "Written before any POST, so a restart neither loses nor repeats a delivery.")
