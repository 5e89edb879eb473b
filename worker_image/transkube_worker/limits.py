"""Input limits: what a job may ask the worker to decode. Pure checks on the object size (before download) and
on the probed facts (before transcoding); each breach fails the job as InvalidInput with its own reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from transkube_api.constants import (
    LIMIT_DEFAULTS,
    REASON_DURATION_LIMIT,
    REASON_INPUT_TOO_LARGE,
    REASON_RESOLUTION_LIMIT,
    REASON_TOO_MANY_STREAMS,
)
from transkube_api.models import InputFacts

from .errors import Internal, InvalidInput
from .ffmpeg_args import Limits


@dataclass(frozen=True)
class InputLimits:
    max_input_bytes: int = LIMIT_DEFAULTS["TRANSKUBE_MAX_INPUT_BYTES"]  # 0: none
    max_duration_seconds: int = LIMIT_DEFAULTS["TRANSKUBE_MAX_DURATION_SECONDS"]
    max_pixels: int = LIMIT_DEFAULTS["TRANSKUBE_MAX_PIXELS"]
    max_streams: int = LIMIT_DEFAULTS["TRANSKUBE_MAX_STREAMS"]
    max_output_bytes: int = LIMIT_DEFAULTS["TRANSKUBE_MAX_OUTPUT_BYTES"]  # 0: none

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> InputLimits:
        values: dict[str, int] = {}
        for name, default in LIMIT_DEFAULTS.items():
            raw = env.get(name, "").strip() or str(default)
            try:
                value = int(raw)
            except ValueError:
                raise Internal(f"{name} must be an integer, not {raw!r}") from None
            if value < 0:
                raise Internal(f"{name} must be >= 0, not {value}")
            values[name.removeprefix("TRANSKUBE_").lower()] = value
        return cls(**values)

    @property
    def ffmpeg(self) -> Limits:
        """What ffmpeg itself enforces while decoding and muxing."""
        return Limits(max_pixels=self.max_pixels or Limits().max_pixels, max_output_bytes=self.max_output_bytes)


def check_size(size: int | None, limits: InputLimits) -> None:
    if limits.max_input_bytes and size is not None and size > limits.max_input_bytes:
        raise InvalidInput(f"the input is {size} bytes, more than the limit of {limits.max_input_bytes}",
                           reason=REASON_INPUT_TOO_LARGE)


def check_facts(facts: InputFacts, limits: InputLimits) -> None:
    if limits.max_duration_seconds and (facts.duration_seconds or 0) > limits.max_duration_seconds:
        raise InvalidInput(f"the input lasts {facts.duration_seconds:g}s, more than the limit of "
                           f"{limits.max_duration_seconds}s", reason=REASON_DURATION_LIMIT)
    if limits.max_pixels and facts.width and facts.height and facts.width * facts.height > limits.max_pixels:
        raise InvalidInput(f"the input is {facts.width}x{facts.height}, more than the limit of "
                           f"{limits.max_pixels} pixels per frame", reason=REASON_RESOLUTION_LIMIT)
    if limits.max_streams and (facts.stream_count or 0) > limits.max_streams:
        raise InvalidInput(f"the input has {facts.stream_count} streams, more than the limit of "
                           f"{limits.max_streams}", reason=REASON_TOO_MANY_STREAMS)
