"""JSON schemas for kubeconform, generated offline: `python -m transkube_dev.kubeschemas --out DIR`.

kubeconform normally downloads schemas from GitHub; here the only network is the package registries, so both
sets are built locally, in kubeconform's file layout (`{{ .ResourceKind }}{{ .KindSuffix }}.json`, e.g.
`deployment-apps-v1.json`, `service-v1.json`, `transcodejob-media-v1alpha1.json`):

- Built-in kinds come from `api/openapi-spec/swagger.json` of the `k8s.io/kubernetes` Go module at the version
  pinned in hack/k8s/go.mod: the OpenAPI document the API server of that release serves at `/openapi/v2` (it is
  generated from the same code), the very server the local cluster runs. The module is already in the Go
  module cache once the control plane is built (`go mod download` reads it from there, or fetches it through
  the Go module proxy). No cluster is needed, so the check is a unit test. The conversion follows
  openapi2jsonschema's `-standalone-strict` flavour, which is what kubeconform's default registry serves:
  every definition a kind reaches is embedded under `definitions`, objects with declared properties are closed
  (`additionalProperties: false`), IntOrString accepts an integer or a string, Quantity a number or a string,
  optional fields accept null (the API server treats null as absent), and `apiVersion`/`kind` must match.
- Our own kinds come from the CRDs' `openAPIV3Schema` (charts/transkube/crds), closed the same way except where
  the CRD sets `x-kubernetes-preserve-unknown-fields`, with `metadata` checked against the real ObjectMeta.
  CEL rules (`x-kubernetes-validations`) are not JSON Schema and are not checked here; the API server's own
  admission does that in the integration tests.

Kinds without a schema (the Prometheus Operator's ServiceMonitor) are skipped explicitly by the caller.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .tools import HACK_DIR, REPO_DIR

Schema = dict[str, Any]

CRD_DIR = REPO_DIR / "charts" / "transkube" / "crds"
# OpenAPI v3.0 (CRDs) uses draft-04 keywords (boolean exclusiveMinimum); kubeconform defaults to draft-04 too.
DRAFT = "http://json-schema.org/draft-04/schema#"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
QUANTITY: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}


def kubernetes_version() -> str:
    """The k8s.io/kubernetes version pinned in hack/k8s/go.mod (the one hack/k8s/build.sh builds)."""
    text = (HACK_DIR / "k8s" / "go.mod").read_text()
    m = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v1\.\S+)", text, re.MULTILINE)
    if not m:
        raise RuntimeError("no k8s.io/kubernetes pin in hack/k8s/go.mod")
    return m.group(1)


def swagger_path(version: str | None = None) -> Path:
    """api/openapi-spec/swagger.json of the pinned k8s.io/kubernetes module (Go module cache or proxy)."""
    version = version or kubernetes_version()
    out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"], cwd=HACK_DIR / "k8s",
                         check=True, capture_output=True, text=True, timeout=600)
    return Path(json.loads(out.stdout)["Dir"]) / "api" / "openapi-spec" / "swagger.json"


def file_name(kind: str, api_version: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for a kind and apiVersion."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0].lower()}-{version.lower()}" if group else f"-{version.lower()}"
    return f"{kind.lower()}{suffix}.json"


# ---- built-in kinds from the API server's OpenAPI v2 -------------------------------------------------------


def _ref_name(ref: str) -> str:
    return ref.removeprefix("#/definitions/")


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield _ref_name(value)
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _closure(root: str, definitions: dict[str, Schema]) -> list[str]:
    seen: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        todo.extend(r for r in _refs(definitions[name]) if r not in seen)
    return seen


def _nullable(schema: Schema) -> Schema:
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    if "$ref" in schema:
        return {"oneOf": [{"type": "null"}, {"$ref": schema["$ref"]}]}
    if "oneOf" in schema or "anyOf" in schema:
        return {"oneOf": [{"type": "null"}, schema]}
    return schema


def _strict(node: Any, *, optional_null: bool) -> Any:
    """Closes objects, maps IntOrString/Quantity formats, lets optional fields be null (recursively)."""
    if isinstance(node, list):
        return [_strict(item, optional_null=optional_null) for item in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _strict(v, optional_null=optional_null) for k, v in value.items()}
        elif key in ("enum", "required", "default", "example", "x-kubernetes-group-version-kind"):
            out[key] = value
        else:
            out[key] = _strict(value, optional_null=optional_null)
    if out.get("format") == "int-or-string" or out.pop("x-kubernetes-int-or-string", False):
        out = {k: v for k, v in out.items() if k not in ("type", "format", "anyOf")} | INT_OR_STRING
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if optional_null and "properties" in out:
        required = set(out.get("required", []))
        out["properties"] = {k: v if k in required else _nullable(v) for k, v in out["properties"].items()}
    return out


def _gvk_pin(schema: Schema, group: str, version: str, kind: str) -> Schema:
    api_version = f"{group}/{version}" if group else version
    props = dict(schema.get("properties", {}))
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    return {**schema, "properties": props, "required": sorted({*schema.get("required", []), "apiVersion", "kind"})}


def builtin_schemas(swagger: dict[str, Any]) -> dict[str, Schema]:
    """File name -> standalone strict schema for every kind the OpenAPI document names."""
    definitions: dict[str, Schema] = swagger["definitions"]
    fixed = {name: (QUANTITY | {"description": d.get("description", "")} if name.endswith(".api.resource.Quantity")
                    else d) for name, d in definitions.items()}
    out: dict[str, Schema] = {}
    for name, definition in fixed.items():
        gvks = definition.get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1 or "kind" not in definition.get("properties", {}):
            continue  # meta types shared by every group (DeleteOptions, WatchEvent) are not manifests
        gvk = gvks[0]
        api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        closure = _closure(name, fixed)
        root = _gvk_pin(copy.deepcopy(definition), gvk["group"], gvk["version"], gvk["kind"])
        schema = {"$schema": DRAFT, **root, "definitions": {n: fixed[n] for n in closure if n != name}}
        out[file_name(gvk["kind"], api_version)] = _strict(schema, optional_null=True)
    return out


# ---- our CRDs ----------------------------------------------------------------------------------------------


def crd_schemas(crd_dir: Path, swagger: dict[str, Any]) -> dict[str, Schema]:
    """File name -> strict schema for every served version of every CRD in crd_dir."""
    definitions: dict[str, Schema] = swagger["definitions"]
    meta = {n: definitions[n] for n in _closure(OBJECT_META, definitions)}
    out: dict[str, Schema] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                root = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                root.setdefault("properties", {})["metadata"] = {"$ref": f"#/definitions/{OBJECT_META}"}
                root = _gvk_pin(root, group, version["name"], kind)
                schema = _strict({"$schema": DRAFT, **root}, optional_null=False)
                # ObjectMeta as the API server defines it (optional fields nullable, like the built-in kinds).
                schema["definitions"] = _strict(meta, optional_null=True)
                out[file_name(kind, f"{group}/{version['name']}")] = schema
    return out


def write(out_dir: Path, *, crd_dir: Path = CRD_DIR, swagger_file: Path | None = None) -> int:
    """Writes every built-in and CRD schema into out_dir; returns how many."""
    swagger = json.loads((swagger_file or swagger_path()).read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    schemas = {**builtin_schemas(swagger), **crd_schemas(crd_dir, swagger)}
    for name, schema in schemas.items():
        (out_dir / name).write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))
    return len(schemas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transkube_dev.kubeschemas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the *.json schemas into")
    parser.add_argument("--crds", type=Path, default=CRD_DIR, help=f"CRD directory (default {CRD_DIR})")
    args = parser.parse_args(argv)
    count = write(args.out, crd_dir=args.crds)
    print(f"wrote {count} schemas to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
