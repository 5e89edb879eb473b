"""The shim's OpenAPI 3.1 document, the pydantic models and the CRD agree.

The CRD carries OpenAPI 3.0 structural schemas (crdgen inlines refs and rewrites JSON Schema 2020-12); the
shim's document is OpenAPI 3.1, which is JSON Schema 2020-12 as pydantic emits it. `structural()` below spells
out every difference between the two, independently of crdgen, and the test requires that the shim's
components, after it, equal what crdgen puts into the CRD for the same models.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest
import yaml
from transkube_api import crdgen
from transkube_api.models import TranscodeJobSpec, TranscodeJobStatus, TranscodePresetSpec
from transkube_shim import openapi, routes
from transkube_shim.models import COMPONENT_MODELS

Obj = dict[str, Any]
DOC = openapi.document()
COMPONENTS: dict[str, Obj] = DOC["components"]["schemas"]


def structural(node: Any) -> Any:
    """OpenAPI 3.1 schema -> the OpenAPI 3.0 structural form Kubernetes wants. The differences, explicitly:
    - refs are inlined (a structural schema has no $ref);
    - `anyOf: [X, {type: null}]` (3.1's nullable) is X: optional fields are simply absent on the wire, and a
      `default: null` goes with it;
    - numeric `exclusiveMinimum: n` (3.1) is `minimum: n, exclusiveMinimum: true` (3.0);
    - `const: v` is `enum: [v]`;
    - `title` is documentation only; `additionalProperties: false` (pydantic's extra=forbid) is dropped, as
      the API server prunes unknown fields instead of rejecting them (the shim rejects them: 422).
    """
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = COMPONENTS[node["$ref"].rsplit("/", 1)[1]]
        return structural({**target, **{k: v for k, v in node.items() if k != "$ref"}})
    if "anyOf" in node:
        (branch,) = [b for b in node["anyOf"] if b != {"type": "null"}]
        rest = {k: v for k, v in node.items() if k != "anyOf" and not (k == "default" and v is None)}
        return structural({**branch, **rest})
    out: Obj = {}
    for key, value in node.items():
        if key in ("title", "additionalProperties") or (key == "default" and value is None):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key in ("properties",):
            out[key] = {k: structural(v) for k, v in value.items()}
        elif key == "items":
            out[key] = structural(value)
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        out["type"] = "integer" if all(isinstance(v, int) for v in out["enum"]) else "string"
    return out


def crd_version_schema(crd: Obj | None = None) -> Obj:
    return dict((crd or crdgen.crd())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize(("component", "crd_field"), [("TranscodeJobSpec", "spec"),
                                                      ("TranscodeJobStatus", "status"),
                                                      ("TranscodePresetSpec", "preset spec")])
def test_shim_components_equal_the_crd_schema(component: str, crd_field: str) -> None:
    ours = structural(COMPONENTS[component])
    if crd_field == "preset spec":  # the TranscodePreset CRD's spec; it has no immutability rules
        theirs = dict(crd_version_schema(crdgen.preset_crd())["properties"]["spec"])
        theirs.pop("description")
        ours.pop("description", None)
        assert ours == theirs
        return
    theirs = dict(crd_version_schema()["properties"][crd_field])
    # What the CRD adds around the model: a description of the field, and (spec) the immutability rules.
    theirs.pop("description")
    ours.pop("description", None)
    if crd_field == "spec":
        rules = theirs.pop("x-kubernetes-validations")
        assert rules[: len(crdgen.immutability_rules())] == crdgen.immutability_rules()
        extra = rules[len(crdgen.immutability_rules()):]
        assert ours.pop("x-kubernetes-validations", []) == extra
    assert ours == theirs


def test_shim_components_are_the_models_own_schemas() -> None:
    for model in (TranscodeJobSpec, TranscodeJobStatus, TranscodePresetSpec):
        raw = model.model_json_schema(by_alias=True, mode="validation", ref_template=openapi.REF)
        defs = raw.pop("$defs", {})
        assert COMPONENTS[model.__name__] == raw
        for name, schema in defs.items():
            assert COMPONENTS[name] == schema, name


def test_crd_file_in_the_repo_is_what_crdgen_makes() -> None:
    on_disk = yaml.safe_load(crdgen.CRD_PATHS[0].read_text())
    assert on_disk == crdgen.crd(), "crds/ is stale: run python -m transkube_api.crdgen --write"


def _validator(component: str) -> Any:
    text = json.dumps({"$ref": f"#/$defs/{component}", "$defs": COMPONENTS})
    return jsonschema_rs.validator_for(json.loads(text.replace("#/components/schemas/", "#/$defs/")))


def test_example_specs_validate_against_the_document_the_model_and_the_crd() -> None:
    docs = list(yaml.safe_load_all((crdgen.REPO / "examples" / "transcodejob.yaml").read_text()))
    specs = [d["spec"] for d in docs if d and d.get("kind") == "TranscodeJob"]
    assert specs
    validator = _validator("TranscodeJobSpec")
    for spec in specs:
        TranscodeJobSpec.model_validate(spec)
        validator.validate(spec)
    bad = {**specs[0], "outputs": [{**specs[0]["outputs"][0], "container": "avi"}]}
    assert not validator.is_valid(bad)
    assert not validator.is_valid({**specs[0], "retryLimit": 11})


def test_document_shape() -> None:
    assert DOC["openapi"] == "3.1.0"
    for model in COMPONENT_MODELS:
        assert model.__name__ in COMPONENTS
    refs = {m for m in json.dumps(DOC).split('"#/components/schemas/')[1:]}
    for ref in refs:
        assert ref.split('"', 1)[0] in COMPONENTS
    for path, methods in DOC["paths"].items():
        for method, op in methods.items():
            assert op["responses"], (path, method)
            if path.startswith("/api/"):
                assert "401" in op["responses"] and "default" in op["responses"]
    assert DOC["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/TranscodeJobSpec"}


def test_presets_are_typed_by_the_operator_models() -> None:
    """GET /presets items carry the TranscodePreset CRD's spec model; preset-job overrides are the output
    settings of OutputSpec (its base OutputSettings), not copies."""
    listed = DOC["paths"]["/api/v1/presets"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/PresetList"}
    assert COMPONENTS["PresetList"]["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Preset"}
    assert COMPONENTS["Preset"]["properties"]["spec"]["$ref"] == "#/components/schemas/TranscodePresetSpec"
    overrides = COMPONENTS["PresetJobRequest"]["properties"]["overrides"]["anyOf"]
    assert {"$ref": "#/components/schemas/OutputSettings"} in overrides
    settings = set(COMPONENTS["OutputSettings"]["properties"])
    assert settings == set(TranscodePresetSpec.model_fields) - {"description"} == \
        {f for f in COMPONENTS["OutputSpec"]["properties"] if f not in ("name", "uri", "preset")}
    assert "PresetSettings" not in COMPONENTS and "OutputOverrides" not in COMPONENTS
    validator = _validator("PresetList")
    builtins = [d for d in yaml.safe_load_all(
        (crdgen.REPO / "charts" / "transkube" / "templates" / "presets.yaml").read_text().split("\n", 1)[1]
        .replace("{{- include \"transkube.labels\" . | nindent 4 }}", "{}").replace("{{- end }}", ""))
        if d]
    assert len(builtins) == 5
    items = [{"name": d["metadata"]["name"], "spec": TranscodePresetSpec.model_validate(d["spec"]).wire()}
             for d in builtins]
    validator.validate({"items": items})


def test_every_operation_has_a_route_and_every_route_an_operation() -> None:
    assert set(routes.HANDLERS) == {op.operation_id for op in openapi.OPERATIONS}
    assert len({(op.method, op.path) for op in openapi.OPERATIONS}) == len(openapi.OPERATIONS)


def test_retry_dead_letter_and_stats_are_documented() -> None:
    jobs_path = DOC["paths"]["/api/v1/jobs"]["get"]
    params = {p["name"]: p for p in jobs_path["parameters"]}
    pattern = re.compile(params["failureCategory"]["schema"]["pattern"])
    assert pattern.fullmatch("Transient") and pattern.fullmatch("BadInput,Stalled") and not pattern.match("Flaky")
    assert re.compile(params["status"]["schema"]["pattern"]).fullmatch("queued,pending")
    retry = DOC["paths"]["/api/v1/jobs/{name}/retry"]["post"]
    assert retry["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
    assert "201" not in retry["responses"] and "manualRetry" in retry["description"]
    job = COMPONENTS["Job"]["properties"]
    assert "retryOf" not in job and "retryPending" in job and "webhooks" in job
    stats = COMPONENTS["QueueStats"]
    assert {"queued", "starting", "pools", "failedByCategory"} <= set(stats["required"])
    assert stats["properties"]["pools"]["additionalProperties"] == {"$ref": "#/components/schemas/PoolStats"}
    _validator("QueueStats").validate({
        "queued": 1, "starting": 0, "running": 2, "suspended": 0, "succeeded": 3, "failed": 1, "cancelled": 0,
        "failedByCategory": {"Transient": 1}, "pools": {"cpu": {"queued": 1, "starting": 0, "running": 2,
                                                                "capacity": 4}}})
    preset_job = set(COMPONENTS["PresetJobRequest"]["properties"])
    assert {"priority", "pool", "webhooks", "retryBackoffSeconds", "stallTimeoutSeconds",
            "ttlSecondsAfterFinished"} <= preset_job
