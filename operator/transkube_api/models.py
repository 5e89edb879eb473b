"""TranscodeJob spec and status. These models generate the CRD's OpenAPI schema (crdgen.py), validate
specs in the operator, worker and shim, and carry the CEL rules the API server enforces.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/[^\s]+$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
BITRATE_PATTERN = r"^[1-9][0-9]*(\.[0-9]+)?[kM]$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"

VideoCodec = Literal["h264", "h265", "vp9", "av1", "copy", "none"]
AudioCodec = Literal["aac", "opus", "mp3", "copy", "none"]
ContainerFormat = Literal["mp4", "webm", "mkv", "mov"]
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
    "mkv": {"video": ("h264", "h265", "vp9", "av1", "copy", "none"), "audio": ("aac", "mp3", "opus", "copy", "none")},
    "webm": {"video": ("vp9", "av1", "copy", "none"), "audio": ("opus", "copy", "none")},
}
# What an output gets when it does not say.
DEFAULT_CODECS: dict[str, tuple[str, str]] = {
    "mp4": ("h264", "aac"), "mov": ("h264", "aac"), "mkv": ("h264", "aac"), "webm": ("vp9", "opus"),
}


def _rules(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    out = []
    for rule in rules:
        entry = {"rule": rule[0], "message": rule[1]}
        if len(rule) > 2:
            entry["fieldPath"] = rule[2]
        out.append(entry)
    return {"x-kubernetes-validations": out}


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SecretReference(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253, pattern=NAME_PATTERN,
                               description="Name of a Secret in the TranscodeJob's namespace.")]


class InputSpec(ApiModel):
    uri: Annotated[str, Field(max_length=1024, pattern=S3_URI_PATTERN,
                              description="The source object, as s3://bucket/key.")]
    credentials_secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret whose keys are exported to the worker as environment variables: "
                    "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL_S3 and AWS_REGION. "
                    "When unset, the operator's default storage credentials are used.",
    )


class VideoSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_rules(
        ("!(has(self.crf) && has(self.bitrate))", "crf and bitrate are mutually exclusive", ".crf"),
        ("!(has(self.resolution) && (has(self.width) || has(self.height)))",
         "resolution and width/height are mutually exclusive", ".resolution"),
        ("!(self.codec in ['h264', 'h265']) || !has(self.crf) || self.crf <= 51",
         "crf must be at most 51 for h264 and h265", ".crf"),
        ("!(self.codec in ['copy', 'none']) || !(has(self.width) || has(self.height) || has(self.resolution) || "
         "has(self.crf) || has(self.bitrate) || has(self.preset) || has(self.fps) || has(self.pixelFormat))",
         "codec copy/none takes no encoding settings", ".codec"),
    ))

    codec: VideoCodec = Field(
        description="Video codec: h264, h265, vp9, av1, copy (no re-encode) or none (drop video).")
    width: Annotated[int, Field(ge=16, le=7680, multiple_of=2)] | None = Field(
        default=None, description="Output width in pixels (even). With only one of width/height the other keeps "
                                  "the aspect ratio.")
    height: Annotated[int, Field(ge=16, le=4320, multiple_of=2)] | None = Field(
        default=None, description="Output height in pixels (even).")
    resolution: NamedResolution | None = Field(
        default=None, description="Named output height (e.g. 720p); the width keeps the aspect ratio.")
    crf: Annotated[int, Field(ge=0, le=63)] | None = Field(
        default=None, description="Constant quality (lower is better; 0-51 for h264/h265, 0-63 for vp9/av1). "
                                  "Mutually exclusive with bitrate.")
    bitrate: Annotated[str, Field(max_length=12, pattern=BITRATE_PATTERN)] | None = Field(
        default=None, description="Target average bitrate such as 2500k or 4M. Mutually exclusive with crf.")
    preset: Preset | None = Field(
        default=None, description="Speed/efficiency trade-off, in x264 terms; mapped to each encoder's own scale.")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(default=None, description="Output frame rate.")
    pixel_format: PixelFormat | None = Field(default=None, description="Output pixel format.")

    @model_validator(mode="after")
    def _exclusive(self) -> VideoSpec:
        if self.crf is not None and self.bitrate is not None:
            raise ValueError("crf and bitrate are mutually exclusive")
        if self.resolution is not None and (self.width is not None or self.height is not None):
            raise ValueError("resolution and width/height are mutually exclusive")
        if self.codec in ("h264", "h265") and self.crf is not None and self.crf > 51:
            raise ValueError("crf must be at most 51 for h264 and h265")
        settings = (self.width, self.height, self.resolution, self.crf, self.bitrate, self.preset, self.fps,
                    self.pixel_format)
        if self.codec in ("copy", "none") and any(v is not None for v in settings):
            raise ValueError("codec copy/none takes no encoding settings")
        return self


class AudioSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_rules(
        ("!(self.codec in ['copy', 'none']) || !(has(self.bitrate) || has(self.channels) || has(self.sampleRate))",
         "codec copy/none takes no encoding settings", ".codec"),
    ))

    codec: AudioCodec = Field(description="Audio codec: aac, opus, mp3, copy (no re-encode) or none (drop audio).")
    bitrate: Annotated[str, Field(max_length=12, pattern=BITRATE_PATTERN)] | None = Field(
        default=None, description="Audio bitrate such as 128k.")
    channels: Annotated[int, Field(ge=1, le=8)] | None = Field(default=None, description="Channel count (2 = stereo).")
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] | None = Field(
        default=None, description="Sample rate in Hz.")

    @model_validator(mode="after")
    def _copy_plain(self) -> AudioSpec:
        settings = (self.bitrate, self.channels, self.sample_rate)
        if self.codec in ("copy", "none") and any(v is not None for v in settings):
            raise ValueError("codec copy/none takes no encoding settings")
        return self


def _codec_rules() -> dict[str, Any]:
    rules: list[tuple[str, str, str]] = []
    for container, kinds in CONTAINER_CODECS.items():
        for kind in ("video", "audio"):
            allowed = ", ".join(f"'{c}'" for c in kinds[kind])
            rules.append((
                f"self.container != '{container}' || !has(self.{kind}) || self.{kind}.codec in [{allowed}]",
                f"{container} cannot carry that {kind} codec; allowed: {', '.join(kinds[kind])}",
                f".{kind}.codec",
            ))
    rules.append(("!(has(self.video) && self.video.codec == 'none' && has(self.audio) && self.audio.codec == 'none')",
                  "an output needs video or audio", ".video.codec"))
    return _rules(*rules)


class OutputSpec(ApiModel):
    model_config = ConfigDict(json_schema_extra=_codec_rules())

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)] = Field(
        description="Name of this output, unique within the job; status.outputs uses it.")
    uri: Annotated[str, Field(max_length=1024, pattern=S3_URI_PATTERN)] = Field(
        description="Where the output object is written, as s3://bucket/key.")
    container: ContainerFormat = Field(description="Container format: mp4, webm, mkv or mov.")
    video: VideoSpec | None = Field(
        default=None, description="Video settings; unset means the container's default codec (h264, vp9 for webm).")
    audio: AudioSpec | None = Field(
        default=None, description="Audio settings; unset means the container's default codec (aac, opus for webm).")

    @model_validator(mode="after")
    def _codecs_fit(self) -> OutputSpec:
        for kind, spec in (("video", self.video), ("audio", self.audio)):
            allowed = CONTAINER_CODECS[self.container][kind]
            if spec is not None and spec.codec not in allowed:
                raise ValueError(f"{self.container} cannot carry that {kind} codec; allowed: {', '.join(allowed)}")
        if self.video and self.video.codec == "none" and self.audio and self.audio.codec == "none":
            raise ValueError("an output needs video or audio")
        return self

    @property
    def video_codec(self) -> str:
        return self.video.codec if self.video else DEFAULT_CODECS[self.container][0]

    @property
    def audio_codec(self) -> str:
        return self.audio.codec if self.audio else DEFAULT_CODECS[self.container][1]


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


IMMUTABLE_EXCEPT = ("suspend", "cancel")


class TranscodeJobSpec(ApiModel):
    input: InputSpec = Field(description="The source media.")
    outputs: Annotated[list[OutputSpec], Field(min_length=1, max_length=10)] = Field(
        description="What to produce: one or more outputs, all from one decode of the input.",
        json_schema_extra={
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            **_rules(("self.all(x, self.exists_one(y, y.uri == x.uri))", "output URIs must be unique")),
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

    @model_validator(mode="after")
    def _unique_uris(self) -> TranscodeJobSpec:
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError("output names must be unique")
        uris = [o.uri for o in self.outputs]
        if len(set(uris)) != len(uris):
            raise ValueError("output URIs must be unique")
        if self.input.uri in uris:
            raise ValueError("an output cannot overwrite the input")
        return self


# ---- status ------------------------------------------------------------------------------------

Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended"]
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


class OutputResult(ApiModel):
    name: str = Field(description="The output's name from spec.outputs.")
    uri: str = Field(description="Where it was written.")
    size_bytes: int | None = Field(default=None, description="Object size.")
    duration_seconds: float | None = Field(default=None, description="Probed duration of the output.")
    video_codec: str | None = Field(default=None, description="Probed video codec.")
    audio_codec: str | None = Field(default=None, description="Probed audio codec.")
    width: int | None = Field(default=None, description="Probed width.")
    height: int | None = Field(default=None, description="Probed height.")
    checksum: str | None = Field(default=None, description="sha256:<hex> of the object's bytes.")


class AcceleratorStatus(ApiModel):
    requested: Literal["cpu", "nvidia"] = Field(description="What the spec asked for.")
    effective: Literal["cpu", "nvidia"] = Field(description="What the current Job runs on.")
    reason: str | None = Field(default=None, description="Why effective differs from requested.")


class TranscodeJobStatus(ApiModel):
    model_config = ConfigDict(frozen=False)

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
