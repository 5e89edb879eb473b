"""Generates docs/api-reference.md from the API models: `python -m transkube_dev.apidocs --write`.

The source is the pydantic models in operator/transkube_api (TranscodeJobSpec, TranscodeJobStatus,
TranscodePresetSpec), read through the same conversion that generates the CRDs (`transkube_api.crdgen`), so the
reference shows exactly what the API server enforces: every field's path, type, default, constraints and
description, and the CEL rules' messages at the node they sit on. tests/unit/test_apidocs.py fails when the
checked-in file drifts from the models.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import generated
from .tools import REPO_DIR

DOC_PATH = REPO_DIR / "docs" / "api-reference.md"
Node = dict[str, Any]

HEADER = """\
# API reference

<!-- Generated from operator/transkube_api by `PYTHONPATH=hack .venv/bin/python -m transkube_dev.apidocs --write`;
     do not edit by hand (tests/unit/test_apidocs.py fails on drift). -->

Every field of `TranscodeJob` and `TranscodePreset` (`media.transkube.dev/v1alpha1`), generated from the pydantic
models that also generate the CRDs, so this is what the API server validates. Paths use `[]` for list items.
The prose guide is [api.md](api.md); media output types are explained in [media.md](media.md).
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`".replace("|", "\\|")


def _type(node: Node) -> str:
    kind = node.get("type", "")
    if node.get("x-kubernetes-preserve-unknown-fields") and not kind:
        return "any"
    if kind == "array":
        return f"[]{_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node and "properties" not in node:
        return f"map[string]{_type(node['additionalProperties'])}"
    return str(kind or "any")


def _constraints(node: Node, required: bool) -> str:
    parts = ["**required**"] if required else []
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None:
        parts.append(f"{'>' if node.get('exclusiveMinimum') else '≥'} {low}")
    if high is not None:
        parts.append(f"{'<' if node.get('exclusiveMaximum') else '≤'} {high}")
    if "multipleOf" in node:
        parts.append(f"multiple of {node['multipleOf']}")
    for key, label in (("minLength", "length ≥"), ("maxLength", "length ≤"), ("minItems", "items ≥"),
                       ("maxItems", "items ≤"), ("minProperties", "keys ≥"), ("maxProperties", "keys ≤")):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern {_code(node['pattern'])}")
    if "format" in node:
        parts.append(f"format {node['format']}")
    if node.get("x-kubernetes-list-type") == "map":
        parts.append("unique by " + ", ".join(_code(k) for k in node.get("x-kubernetes-list-map-keys", [])))
    elif node.get("x-kubernetes-list-type") == "set":
        parts.append("unique items")
    return "; ".join(parts)


def _walk(node: Node, path: str, required: bool, rows: list[str], rules: list[str]) -> None:
    for rule in node.get("x-kubernetes-validations", []) or []:
        where = path + rule.get("fieldPath", "")
        rules.append(f"| `{where}` | {_cell(rule['message'])} |")
    if "." in path:
        default = _code(node["default"]) if "default" in node else ""
        rows.append(f"| `{path}` | {_type(node)} | {default} | {_cell(_constraints(node, required))} | "
                    f"{_cell(node.get('description', ''))} |")
    children: Node = node.get("properties", {})
    needed = set(node.get("required", []))
    for name, child in children.items():
        _walk(child, f"{path}.{name}", name in needed, rows, rules)
    items = node.get("items")
    if isinstance(items, dict) and ("properties" in items or "x-kubernetes-validations" in items):
        for name, child in items.get("properties", {}).items():
            _walk(child, f"{path}[].{name}", name in set(items.get("required", [])), rows, rules)
        for rule in items.get("x-kubernetes-validations", []) or []:
            rules.append(f"| `{path}[]{rule.get('fieldPath', '')}` | {_cell(rule['message'])} |")


def _section(title: str, intro: str, root: Node, prefix: str) -> str:
    rows: list[str] = []
    rules: list[str] = []
    _walk(root, prefix, True, rows, rules)
    out = [f"## {title}", "", intro, "", _cell(root.get("description", "")), "",
           "| field | type | default | constraints | description |", "| --- | --- | --- | --- | --- |", *rows, ""]
    if rules:
        out += [f"### {title}: validation rules (CEL)", "",
                "Checked by the API server on create and update; the message is what a rejected request says.", "",
                "| on | message |", "| --- | --- |", *rules, ""]
    return "\n".join(out)


def render() -> str:
    from transkube_api import crdgen

    job = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    preset = crdgen.preset_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    sections = [
        HEADER,
        _section("TranscodeJob spec", "Written by you (`TranscodeJobSpec`). After creation only `suspend` and "
                 "`cancel` may change.", job["spec"], "spec"),
        _section("TranscodeJob status", "Written by the operator, progress by the worker (`TranscodeJobStatus`); "
                 "read-only for users (status subresource).", job["status"], "status"),
        _section("TranscodePreset spec", "Cluster-scoped reusable settings of one output (`TranscodePresetSpec`); "
                 "`outputs[].preset` names one.", preset["spec"], "spec"),
    ]
    return "\n".join(sections).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    return generated.main(DOC_PATH, render, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
