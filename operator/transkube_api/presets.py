"""Pure: merging a TranscodePreset into a job's output (the operator resolves presets with it; the shim may too).

The merge rule (docs/api.md):
- `type`: the preset's, unless the output gives another type than `file` (the default, which is all an unset
  type reads as); an output type that differs from the preset's is an error.
- Objects (video, audio, streaming, ..., and objects inside them) merge key by key, recursively; the output's
  value wins. Lists and scalars are replaced whole.
- Setting one side of a mutually exclusive pair drops the other side inherited from the preset: crf/bitrate,
  resolution/width+height, renditions/autoLadder, times/intervalSeconds, endSeconds/durationSeconds.
- A `video.codec` or `audio.codec` that differs from the preset's replaces the preset's whole video/audio object
  (its settings belonged to the other codec).
- The result must be a valid output on its own; `preset` stays out of it (status.presets records it).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .models import OutputSpec, TranscodePresetSpec

Obj = dict[str, Any]

# Per object path: setting the key drops these keys inherited from the preset.
EXCLUSIVE: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {
    ("video",): {"crf": ("bitrate",), "bitrate": ("crf",), "resolution": ("width", "height"),
                 "width": ("resolution",), "height": ("resolution",)},
    ("streaming",): {"renditions": ("autoLadder",), "autoLadder": ("renditions",)},
    ("thumbnails",): {"times": ("intervalSeconds",), "intervalSeconds": ("times",)},
    ("trim",): {"endSeconds": ("durationSeconds",), "durationSeconds": ("endSeconds",)},
}
CODEC_OBJECTS = ("video", "audio")
NOT_SETTINGS = ("description",)  # preset fields that are not output settings


class PresetError(ValueError):
    """The merge of a preset into an output is not a valid output."""


def merge(base: Obj, override: Obj, path: tuple[str, ...] = ()) -> Obj:
    """`override` merged into `base` (wire dicts), by the rules above."""
    out = dict(base)
    for key, value in override.items():
        for dropped in EXCLUSIVE.get(path, {}).get(key, ()):
            if dropped not in override:
                out.pop(dropped, None)
        inherited = out.get(key)
        replace_whole = (not path and key in CODEC_OBJECTS and isinstance(inherited, dict) and isinstance(value, dict)
                         and value.get("codec") != inherited.get("codec"))
        if isinstance(inherited, dict) and isinstance(value, dict) and not replace_whole:
            out[key] = merge(inherited, value, (*path, key))
        else:
            out[key] = value
    return out


def resolve_output(output: Obj, preset: Obj) -> Obj:
    """A job output (wire dict, naming a preset) with the preset's spec (wire dict) merged in; the result is a
    validated output's wire form. Raises PresetError."""
    name = output.get("name")
    settings = {k: v for k, v in preset.items() if k not in NOT_SETTINGS}
    try:
        TranscodePresetSpec.model_validate(settings)
    except ValidationError as exc:
        raise PresetError(f"the preset is not valid: {_first(exc)}") from exc
    own = {k: v for k, v in output.items() if k != "preset"}
    preset_type = settings.get("type", "file")
    own_type = own.pop("type", "file")
    if own_type not in ("file", preset_type):
        raise PresetError(f"output type {own_type} does not match the preset's type {preset_type}")
    merged = merge(settings, own)
    merged["type"] = preset_type
    try:
        return OutputSpec.model_validate(merged).wire()
    except ValidationError as exc:
        raise PresetError(f"output {name} with its preset is not valid: {_first(exc)}") from exc


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where + ': ' if where else ''}{err['msg']}"
