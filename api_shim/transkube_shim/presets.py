"""TranscodePresets (cluster-scoped `transcodepresets.media.transkube.dev`, v1alpha1; `spec` holds one output's
settings: container, video, audio). The kind is built separately; everything the shim assumes about it is
in this module. Without the CRD the list is empty and a preset job is a 422 preset_not_found."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from transkube_api.constants import GROUP
from transkube_api.models import OutputSpec, TranscodeJobSpec

from .errors import ApiError, from_validation_error
from .kube import Kube
from .models import PresetJobRequest, PresetSettings

PRESET_VERSION = "v1alpha1"
PRESET_PLURAL = "transcodepresets"
Obj = dict[str, Any]


def settings_of(obj: Obj) -> PresetSettings | None:
    """A preset CR -> its output settings (fields the shim doesn't know are ignored); None if unusable."""
    spec = obj.get("spec") or {}
    try:
        return PresetSettings.model_validate({k: spec[k] for k in ("container", "video", "audio") if k in spec})
    except ValidationError:
        return None


def _merge(base: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any] | None:
    if override is None:
        return base
    merged = dict(base or {})
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)  # null removes a preset's setting (e.g. crf, to set a bitrate)
        else:
            merged[key] = value
    return merged


def build_spec(preset_name: str, settings: PresetSettings, request: PresetJobRequest) -> TranscodeJobSpec:
    """Preset + overrides -> a TranscodeJobSpec, validated by the same model as any other."""
    base = settings.wire()
    overrides = request.overrides
    output: Obj = {
        "name": request.output_name or preset_name[:63],
        "uri": request.output_uri,
        "container": (overrides.container if overrides and overrides.container else base["container"]),
    }
    video = _merge(base.get("video"), overrides.video if overrides else None)
    audio = _merge(base.get("audio"), overrides.audio if overrides else None)
    if video is not None:
        output["video"] = video
    if audio is not None:
        output["audio"] = audio
    spec: Obj = {"input": request.input.wire(), "outputs": [output]}
    for field in ("accelerator", "resources", "retry_limit", "deadline_seconds"):
        value = getattr(request, field)
        if value is not None:
            spec[field] = value
    try:
        OutputSpec.model_validate(output)
    except ValidationError as exc:
        raise from_validation_error(exc, prefix="overrides") from exc
    try:
        return TranscodeJobSpec.model_validate(spec)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


async def installed(kube: Kube) -> bool:
    try:
        return PRESET_PLURAL in await kube.api_resources(GROUP, PRESET_VERSION)
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise


async def list_presets(kube: Kube) -> list[Obj]:
    if not await installed(kube):
        return []
    items = []
    for obj in await kube.list_cluster_objects(GROUP, PRESET_VERSION, PRESET_PLURAL):
        settings = settings_of(obj)
        if settings is not None:
            items.append({"name": obj["metadata"]["name"], "spec": settings.wire()})
    return sorted(items, key=lambda p: str(p["name"]))


async def get_preset(kube: Kube, name: str) -> PresetSettings:
    missing = ApiError(422, "preset_not_found", f"no preset named {name!r}", "preset")
    if not await installed(kube):
        raise missing
    try:
        obj = await kube.get_cluster_object(GROUP, PRESET_VERSION, PRESET_PLURAL, name)
    except ApiError as exc:
        if exc.status == 404:
            raise missing from exc
        raise
    settings = settings_of(obj)
    if settings is None:
        raise ApiError(422, "preset_invalid", f"preset {name!r} has settings this API cannot use", "preset")
    return settings
