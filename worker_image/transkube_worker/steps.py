"""The ffmpeg runs of one attempt, in order. Pure: from the validated spec, the probed facts and local paths.

- analysis steps (loudnorm's first pass, one per output that normalises loudness): their measurements feed
  the argv of the real steps, so they are planned and run first;
- one step for all file outputs (one decode, ffmpeg_args.build_argv);
- one step per hls/dash package, thumbnails, sprite and poster output (media_args).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from transkube_api.models import InputFacts, OutputSpec, TranscodeJobSpec

from .ffmpeg_args import DEFAULT_LIMITS, Accelerator, Limits, LoudnormMeasurement, build_argv, check_streams
from .media_args import loudnorm_analysis_argv, poster_argv, sprite_argv, stream_argv, thumbnails_argv

IMAGE_STEP_SECONDS = 1.0  # weight of a seek-and-grab step in the progress bar


@dataclass(frozen=True)
class Step:
    name: str  # "files", or the output's name
    argv: list[str]
    media_seconds: float  # how much media time the step's -progress will run through (progress weighting)


def media_seconds(output: OutputSpec, facts: InputFacts) -> float:
    duration = facts.duration_seconds or 0.0
    if output.trim is None:
        return duration
    end = output.trim.start_seconds + output.trim.length if output.trim.length is not None else duration
    return max(0.0, min(end, duration) - output.trim.start_seconds)


def needs_loudness_pass(output: OutputSpec) -> bool:
    return (output.type in ("file", "hls", "dash") and output.audio is not None
            and output.audio.loudness is not None and output.audio_codec not in ("copy", "none"))


def analysis_steps(spec: TranscodeJobSpec, input_path: Path, facts: InputFacts,
                   limits: Limits = DEFAULT_LIMITS) -> list[Step]:
    return [Step(o.name, loudnorm_analysis_argv(o, input_path, limits=limits), media_seconds(o, facts))
            for o in spec.outputs if needs_loudness_pass(o) and facts.audio_codec is not None]


def media_steps(spec: TranscodeJobSpec, input_path: Path, paths: Mapping[str, Path], facts: InputFacts,
                accelerator: Accelerator, *, limits: Limits = DEFAULT_LIMITS,
                assets: Mapping[str, Path] | None = None,
                loudness: Mapping[str, LoudnormMeasurement] | None = None) -> list[Step]:
    """Every step that writes outputs. Raises InvalidInput when the input cannot feed an output."""
    check_streams(spec, facts)
    assets = assets or {}
    loudness = loudness or {}
    steps: list[Step] = []
    files = [o for o in spec.outputs if o.type == "file"]
    if files:
        argv = build_argv(spec, input_path, paths, facts, accelerator, limits=limits, assets=assets,
                          loudness=loudness)
        steps.append(Step("files", argv, max(media_seconds(o, facts) for o in files)))
    duration = facts.duration_seconds or 0.0
    for o in spec.outputs:
        if o.type in ("hls", "dash"):
            steps.append(Step(o.name, stream_argv(o, input_path, paths[o.name], facts, limits=limits,
                                                  watermark=assets.get(o.name), measured=loudness.get(o.name)),
                              media_seconds(o, facts)))
        elif o.type == "thumbnails":
            weight = duration if o.thumbnails and o.thumbnails.interval_seconds else IMAGE_STEP_SECONDS
            steps.append(Step(o.name, thumbnails_argv(o, input_path, paths[o.name], facts, limits=limits), weight))
        elif o.type == "sprite":
            steps.append(Step(o.name, sprite_argv(o, input_path, paths[o.name], facts, limits=limits), duration))
        elif o.type == "poster":
            steps.append(Step(o.name, poster_argv(o, input_path, paths[o.name], facts, limits=limits),
                              IMAGE_STEP_SECONDS))
    return steps
