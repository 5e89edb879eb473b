"""Generates charts/transkube/values.schema.json from values.yaml: `python -m transkube_dev.values_schema --write`.

values.yaml stays the one place where settings and their docs live; the schema is inferred from it (types
of the defaults, `# --` comments as descriptions) and closes every object, so Helm rejects a typo such as
`shim.prot` at install time. Maps meant to hold user keys (selectors, annotations, resources) stay open.
tests/unit/test_chart.py fails when the checked-in schema drifts from values.yaml.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

from . import generated
from .tools import REPO_DIR

CHART = REPO_DIR / "charts" / "transkube"
SCHEMA_PATH = CHART / "values.schema.json"
# Objects whose keys are the user's (label selectors, annotations, resource lists, ...).
OPEN_MAPS = {"nodeSelector", "annotations", "affinity", "podAnnotations", "resources.requests", "resources.limits",
             # Maps keyed by the platform team's own names: pools, per-namespace quotas.
             "scheduling.pools", "scheduling.quotas", "scheduling.defaultQuota",
             # Storage confinement: per-namespace and per-tenant entries.
             "storageScope.namespaces", "storageScope.tenants"}
# Lists of objects we don't constrain further (tolerations, NetworkPolicy peers, topology spread).
FREE_LISTS = {"tolerations", "from", "topologySpreadConstraints"}
# Numbers whose integer default doesn't make them integers (fractional seconds; `--set-json key=0.5`).
NUMBERS = {"webhooks.timeoutSeconds", "worker.progressIntervalSeconds",
           "operator.leaderElection.renewDeadlineSeconds", "operator.leaderElection.retryPeriodSeconds"}


def _descriptions(text: str) -> dict[str, str]:
    """`# -- text` comments, keyed by the dotted path of the key they precede (continuation lines joined)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if pending:
            out[path] = " ".join(pending)
            pending = []
        stack.append((indent, key))
    return out


def _schema(value: Any, path: str, docs: dict[str, str]) -> dict[str, Any]:
    key = path.rsplit(".", 1)[-1]
    parent_and_key = ".".join(path.split(".")[-2:])
    node: dict[str, Any]
    if isinstance(value, bool):
        node = {"type": "boolean"}
    elif isinstance(value, int) and path in NUMBERS:
        node = {"type": "number"}
    elif isinstance(value, int):
        node = {"type": "integer"}
    elif isinstance(value, float):
        node = {"type": "number"}
    elif isinstance(value, str):
        node = {"type": "string"}
    elif isinstance(value, list):
        if key in FREE_LISTS or not value:
            node = {"type": "array"}
        else:
            node = {"type": "array", "items": _schema(value[0], path + "[]", docs)}
    elif isinstance(value, dict):
        if key in OPEN_MAPS or parent_and_key in OPEN_MAPS:
            node = {"type": "object"}
        else:
            node = {"type": "object", "additionalProperties": False,
                    "properties": {k: _schema(v, f"{path}.{k}" if path else k, docs) for k, v in value.items()}}
    else:
        node = {}
    if path in docs:
        node["description"] = docs[path]
    return node


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    schema = {"$schema": "https://json-schema.org/draft-07/schema#", "title": "transkube chart values",
              **_schema(yaml.safe_load(text), "", _descriptions(text))}
    return json.dumps(schema, indent=2) + "\n"


def main(argv: list[str]) -> int:
    return generated.main(SCHEMA_PATH, render, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
