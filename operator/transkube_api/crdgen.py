"""Generates the CRDs (TranscodeJob, TranscodePreset) from the pydantic models: `python -m transkube_api.crdgen
--write`.

pydantic emits JSON Schema 2020-12; Kubernetes wants a structural OpenAPI v3.0 schema, so refs are
inlined, nullable unions collapsed, titles dropped and exclusive bounds rewritten. A unit test fails when
the files in crds/ and the chart drift from what this produces.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .constants import (
    CATEGORY,
    GROUP,
    KIND,
    PLURAL,
    PRESET_KIND,
    PRESET_PLURAL,
    PRESET_SHORT_NAME,
    PRESET_SINGULAR,
    SHORT_NAME,
    SINGULAR,
    VERSION,
)
from .models import IMMUTABLE_EXCEPT, TranscodeJobSpec, TranscodeJobStatus, TranscodePresetSpec
from .scope import admission_policy

REPO = Path(__file__).resolve().parents[2]
CRD_DIRS = (REPO / "crds", REPO / "charts" / "transkube" / "crds")
CRD_FILE = f"{PLURAL}.{GROUP}.yaml"
PRESET_CRD_FILE = f"{PRESET_PLURAL}.{GROUP}.yaml"
CRD_PATHS = tuple(d / CRD_FILE for d in CRD_DIRS)
PRESET_CRD_PATHS = tuple(d / PRESET_CRD_FILE for d in CRD_DIRS)
# The storage-scope ValidatingAdmissionPolicy's spec; the chart's template wraps it (.Files.Get).
POLICY_PATH = REPO / "charts" / "transkube" / "files" / "storage-scope-policy.yaml"

_DROP = {"title", "additionalProperties", "$defs"}


def to_openapi(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node -> a structural OpenAPI v3 node."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return to_openapi({**target, **extra}, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural schema: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", 0) is None:
            del rest["default"]
        return to_openapi({**branches[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: to_openapi(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = to_openapi(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    if "enum" in out and "type" not in out:
        kinds = {type(v) for v in out["enum"]}
        out["type"] = "integer" if kinds == {int} else "string"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_openapi(raw, raw.get("$defs", {}))


def immutability_rules() -> list[dict[str, str]]:
    """Transition rules: after creation only suspend and cancel may change, and cancel only to true."""
    clauses = []
    schema = TranscodeJobSpec.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        if name in IMMUTABLE_EXCEPT:
            continue
        always_present = name in required or prop.get("default") is not None
        if always_present:
            clauses.append(f"self.{name} == oldSelf.{name}")
        else:
            clauses.append(f"has(self.{name}) == has(oldSelf.{name}) && "
                           f"(!has(self.{name}) || self.{name} == oldSelf.{name})")
    return [
        {"rule": " && ".join(clauses),
         "message": f"spec is immutable after creation, except {', '.join(IMMUTABLE_EXCEPT)}"},
        {"rule": "!oldSelf.cancel || self.cancel", "message": "cancel cannot be undone", "fieldPath": ".cancel"},
        {"rule": "self.manualRetry >= oldSelf.manualRetry", "message": "manualRetry cannot decrease",
         "fieldPath": ".manualRetry"},
    ]


def crd() -> dict[str, Any]:
    spec_schema = model_schema(TranscodeJobSpec)
    spec_schema["description"] = "What to transcode: the input, the outputs and how to run. Yours to write."
    spec_schema["x-kubernetes-validations"] = immutability_rules()
    status_schema = model_schema(TranscodeJobStatus)
    status_schema["description"] = "Where the job stands, written by the operator (and progress by the worker)."
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
        {"name": "Progress", "type": "number", "jsonPath": ".status.progress.percent", "description": "Percent done."},
        {"name": "ETA", "type": "string", "jsonPath": ".status.progress.eta", "description": "Estimated time left."},
        {"name": "Stage", "type": "string", "jsonPath": ".status.progress.stage", "priority": 1,
         "description": "Worker stage."},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1,
         "description": "Why it failed, if it did."},
        {"name": "Pool", "type": "string", "jsonPath": ".status.queue.pool", "priority": 1,
         "description": "Capacity pool."},
        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority", "priority": 1,
         "description": "Admission priority."},
        {"name": "Queue", "type": "integer", "jsonPath": ".status.queue.position", "priority": 1,
         "description": "Place in the queue while Queued."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(kind=KIND, plural=PLURAL, singular=SINGULAR, short_name=SHORT_NAME, categories=["all", CATEGORY],
                scope="Namespaced", columns=columns, subresources={"status": {}},
                description="A TranscodeJob turns one input video in S3-compatible storage into one or more "
                            "outputs by running FFmpeg in a Kubernetes Job.",
                properties={"spec": spec_schema, "status": status_schema},
                # kubectl get tj --field-selector status.phase=Failed,status.failureCategory=Transient
                selectable=[".status.phase", ".status.failureCategory", ".status.queue.pool"])


def preset_crd() -> dict[str, Any]:
    spec_schema = model_schema(TranscodePresetSpec)
    spec_schema["description"] = ("One output's settings without name and URI; outputs[].preset names the preset, "
                                  "and the output's own settings override these.")
    columns: list[dict[str, Any]] = [
        {"name": "Type", "type": "string", "jsonPath": ".spec.type", "description": "Output type."},
        {"name": "Container", "type": "string", "jsonPath": ".spec.container", "description": "Container format."},
        {"name": "Description", "type": "string", "jsonPath": ".spec.description", "priority": 1,
         "description": "What the preset is for."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(kind=PRESET_KIND, plural=PRESET_PLURAL, singular=PRESET_SINGULAR, short_name=PRESET_SHORT_NAME,
                categories=[CATEGORY], scope="Cluster", columns=columns, subresources=None,
                description="A TranscodePreset holds reusable output settings (cluster-wide) that "
                            "TranscodeJob outputs reference by name.",
                properties={"spec": spec_schema})


def _crd(*, kind: str, plural: str, singular: str, short_name: str, categories: list[str], scope: str,
         columns: list[dict[str, Any]], subresources: dict[str, Any] | None, description: str,
         properties: dict[str, Any], selectable: list[str] | None = None) -> dict[str, Any]:
    """The CustomResourceDefinition envelope shared by our kinds (one served, stored version)."""
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if subresources is not None:
        version["subresources"] = subresources
    version["additionalPrinterColumns"] = columns
    if selectable:
        version["selectableFields"] = [{"jsonPath": path} for path in selectable]
    version["schema"] = {"openAPIV3Schema": {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            **properties,
        },
    }}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "transkube"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": singular,
                      "shortNames": [short_name], "categories": categories},
            "scope": scope,
            "versions": [version],
        },
    }


HEADER = "# Generated from operator/transkube_api/models.py by `python -m transkube_api.crdgen --write`.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=120)


def render_preset() -> str:
    return HEADER + yaml.safe_dump(preset_crd(), sort_keys=False, width=120)


def render_policy() -> str:
    max_outputs = int(TranscodeJobSpec.model_json_schema(by_alias=True)["properties"]["outputs"]["maxItems"])
    return (HEADER.replace("models.py", "scope.py") +
            yaml.safe_dump(admission_policy(max_outputs), sort_keys=False, width=100))


def rendered() -> dict[Path, str]:
    """Every generated file and its content."""
    job, preset = render(), render_preset()
    return {**{p: job for p in CRD_PATHS}, **{p: preset for p in PRESET_CRD_PATHS}, POLICY_PATH: render_policy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the CRD files instead of printing")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render() + "---\n" + render_preset())
        return 0
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
