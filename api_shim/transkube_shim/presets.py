"""TranscodePresets (cluster-scoped `transcodepresets.media.transkube.dev`, v1alpha1). The shim owns none of their
semantics: a preset's spec is `transkube_api.models.TranscodePresetSpec` (the model the CRD is generated from),
and a preset job is an ordinary TranscodeJob whose one output names the preset (`outputs[0].preset`), which the
operator resolves by its merge rule (`transkube_api.presets`, docs/api.md "Presets") and records in
`status.resolvedOutputs`/`status.presets`. The shim only runs that same merge beforehand, so a combination that
cannot work is a 422 before anything is created. Without the CRD the list is empty and a preset job is a 422
preset_not_found."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from transkube_api.constants import GROUP
from transkube_api.models import OUTPUT_RULES, SETTINGS_RULES, OutputSpec, TranscodeJobSpec, TranscodePresetSpec
from transkube_api.presets import PresetError, resolve_output

from .errors import ApiError, field_path, from_validation_error
from .kube import Kube
from .models import PRESET_JOB_SPEC_FIELDS, PresetJobRequest

PRESET_VERSION = "v1alpha1"
PRESET_PLURAL = "transcodepresets"
Obj = dict[str, Any]
log = logging.getLogger(__name__)

# Where a field of the job's output comes from in the request body.
_REQUEST_FIELDS = {"name": "outputName", "uri": "outputUri", "preset": "preset"}


def spec_of(obj: Obj) -> TranscodePresetSpec | None:
    """A preset CR -> its spec, typed by the CRD's own model; None if it does not validate (version skew)."""
    try:
        return TranscodePresetSpec.model_validate(obj.get("spec") or {})
    except ValidationError:
        return None


def preset_view(obj: Obj) -> Obj | None:
    """A preset CR -> the API's `Preset` ({name, spec}); None if its spec does not validate."""
    spec = spec_of(obj)
    if spec is None:
        return None
    return {"name": obj["metadata"]["name"], "spec": spec.wire()}


def request_field(loc: Sequence[int | str]) -> str:
    """A location in the job's output -> the request field it came from: name/uri are outputName/outputUri,
    everything else is an override."""
    path = field_path(loc)
    if loc and isinstance(loc[0], str) and loc[0] in _REQUEST_FIELDS:
        return _REQUEST_FIELDS[loc[0]] + path[len(loc[0]):]
    return f"overrides.{path}" if path else "overrides"


def request_path(spec_field: str) -> str:
    """A field of the spec build_spec makes (input.uri, outputs[0].filters.watermark.uri) -> the request field it
    came from (input.uri, overrides.filters.watermark.uri)."""
    head = "outputs[0]."
    if not spec_field.startswith(head):
        return spec_field
    return request_field(spec_field[len(head):].split("."))


def _output_error(exc: ValidationError) -> ApiError:
    """A validation error of the job's output -> 422 naming the request field. An output-level rule (no
    location of its own) is named by the rule's fieldPath, as the API server would name it."""
    err = from_validation_error(exc)
    first = exc.errors(include_url=False)[0]
    loc: list[int | str] = [p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    if not loc:
        rule = next((r for r in (*OUTPUT_RULES, *SETTINGS_RULES) if r.message == err.message and r.field_path),
                    None)
        if rule is not None and rule.field_path:
            loc = list(rule.field_path.lstrip(".").split("."))
    return ApiError(422, "validation_error", err.message, request_field(loc))


def job_output(preset_name: str, request: PresetJobRequest) -> Obj:
    """The job's one output (wire form): name, URI, the preset's name, and the overrides the request gives
    (unset and null fields are not overrides)."""
    overrides = request.overrides.model_dump(by_alias=True, exclude_unset=True, exclude_none=True, mode="json") \
        if request.overrides is not None else {}
    return {"name": request.output_name or preset_name[:63], "uri": request.output_uri, "preset": preset_name,
            **overrides}


def build_spec(preset_name: str, preset_spec: Obj, request: PresetJobRequest) -> TranscodeJobSpec:
    """Request -> the TranscodeJobSpec to create (its output names the preset; the operator merges it). Checked
    first as the operator will check it: the output alone (OutputSpec), then merged with the preset's spec
    (`resolve_output`), then the whole spec. Raises ApiError 422 naming the request field."""
    output = job_output(preset_name, request)
    try:
        OutputSpec.model_validate(output)
    except ValidationError as exc:
        raise _output_error(exc) from exc
    try:
        resolve_output(output, preset_spec)
    except PresetError as exc:
        cause = exc.__cause__
        if isinstance(cause, ValidationError) and str(exc).startswith("the preset is not valid"):
            raise ApiError(422, "preset_invalid", f"preset {preset_name!r}: {exc}", "preset") from exc
        if isinstance(cause, ValidationError):
            raise ApiError(422, "validation_error", str(exc), _output_error(cause).field) from exc
        raise ApiError(422, "validation_error", str(exc), "overrides.type") from exc
    spec: Obj = {"input": request.input.wire(), "outputs": [output]}
    for field in PRESET_JOB_SPEC_FIELDS:
        value = getattr(request, field)
        if value is not None:
            spec[field] = value
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
    """Every installed preset, by name. One whose spec this shim's model refuses (only possible with a CRD of
    another version than the shim's) is left out with a warning."""
    if not await installed(kube):
        return []
    items = []
    for obj in await kube.list_cluster_objects(GROUP, PRESET_VERSION, PRESET_PLURAL):
        view = preset_view(obj)
        if view is None:
            log.warning("TranscodePreset %r does not validate against this shim's model; not listed",
                        obj.get("metadata", {}).get("name"))
            continue
        items.append(view)
    return sorted(items, key=lambda p: str(p["name"]))


async def get_preset(kube: Kube, name: str) -> Obj:
    """The preset's stored spec (wire form), as the operator will read it."""
    missing = ApiError(422, "preset_not_found", f"no preset named {name!r}", "preset")
    if not await installed(kube):
        raise missing
    try:
        obj = await kube.get_cluster_object(GROUP, PRESET_VERSION, PRESET_PLURAL, name)
    except ApiError as exc:
        if exc.status == 404:
            raise missing from exc
        raise
    spec: Obj = obj.get("spec") or {}
    return spec
