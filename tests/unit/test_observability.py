"""The Grafana dashboard and the Prometheus alert examples use only metrics the code registers: every
`transkube_*` name in their expressions is a sample name of a metric in the operator's or the shim's registry
(counters as `_total`, histograms as `_bucket`/`_sum`/`_count`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry
from transkube_operator import metrics as operator_metrics
from transkube_shim.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "transkube" / "dashboards" / "transkube.json"
RULES = ROOT / "charts" / "transkube" / "alerts" / "transkube-rules.yaml"
NAME = re.compile(r"\btranskube_[a-zA-Z0-9_]+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created", ""), "gauge": ("",), "info": ("_info",),
            "stateset": ("",), "enum": ("",), "unknown": ("",)}


def sample_names(registry: CollectorRegistry) -> set[str]:
    """What Prometheus stores for each registered metric, whether or not it has samples yet."""
    names = set()
    for family in registry.collect():
        if family.name.startswith("transkube_"):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


@pytest.fixture(scope="module")
def registered() -> set[str]:
    assert operator_metrics.JOBS is not None  # importing the module registers the operator's metrics
    return sample_names(REGISTRY) | sample_names(Metrics().registry)


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets") or []:
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels") or [])

    return list(walk(dash["panels"]))


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(rule.get("alert") or rule.get("record"), str(rule["expr"]))
            for group in doc["groups"] for rule in group["rules"]]


def test_registered_names_as_prometheus_sees_them(registered: set[str]) -> None:
    assert {"transkube_transcodejobs", "transkube_transcodejob_duration_seconds_bucket",
            "transkube_reconciles_total", "transkube_shim_requests_total",
            "transkube_shim_sse_connections"} <= registered


@pytest.mark.parametrize(("where", "exprs"), [("dashboard", dashboard_exprs()), ("alert rules", rule_exprs())])
def test_every_metric_referenced_exists(where: str, exprs: list[tuple[str, str]], registered: set[str]) -> None:
    assert exprs, f"no expressions found in the {where}"
    unknown = {(title, name) for title, expr in exprs for name in NAME.findall(expr) if name not in registered}
    assert not unknown, f"{where} uses metrics the code does not register: {sorted(unknown)}"


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["type"] == "datasource" and v["name"] == "datasource" for v in dash["templating"]["list"])
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]
    # every operator and shim metric is on the dashboard somewhere
    used = {n for _, e in dashboard_exprs() for n in NAME.findall(e)}
    families = {f.name for r in (REGISTRY, Metrics().registry) for f in r.collect() if f.name.startswith("transkube_")}
    missing = {f for f in families if not any(u == f or u.startswith(f + "_") for u in used)}
    assert not missing, f"metrics not on the dashboard: {sorted(missing)}"


def test_rules_shape() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = [rule for group in doc["groups"] for rule in group["rules"]]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names))
    for alert in alerts:
        assert set(alert) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", alert["for"])
        assert alert["expr"].count("(") == alert["expr"].count(")"), alert["alert"]
    # the three the operations guide promises
    assert {"TranskubeJobsStuck", "TranskubeFailureRateHigh", "TranskubeQueueDepthHigh"} <= set(names)


# ---- phases: the dashboard and the alerts name only phases a TranscodeJob can be in ------------------------

PHASE_MATCHER = re.compile(r'\bphase\s*(=~|!~|!=|=)\s*"([^"]*)"')
OPERATIONS = ROOT / "docs" / "operations.md"


def phases_named(expr: str) -> set[str]:
    """Every phase a `phase` label matcher names; regex matchers must be plain alternations of names."""
    named: set[str] = set()
    for op, value in PHASE_MATCHER.findall(expr):
        parts = value.split("|") if op in ("=~", "!~") else [value]
        assert all(re.fullmatch(r"[A-Za-z]+", p) for p in parts), f"not a plain list of phases: {value!r}"
        named.update(parts)
    return named


def about_the_queue(text: str) -> bool:
    return bool(re.search(r"queue", text, re.IGNORECASE))


def panels() -> list[dict[str, Any]]:
    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from walk(panel.get("panels") or [])

    return list(walk(json.loads(DASHBOARD.read_text())["panels"]))


def test_phase_matchers_name_phases_the_model_has_and_the_queue_is_queued() -> None:
    from typing import get_args

    from transkube_api.models import Phase

    phases = set(get_args(Phase))
    used: dict[str, set[str]] = {}
    queue: dict[str, set[str]] = {}
    for panel in panels():
        named = set().union(*(phases_named(t["expr"]) for t in panel.get("targets") or []))
        used[f"panel {panel['title']}"] = named
        if named and about_the_queue(f"{panel['title']} {panel.get('description', '')}"):
            queue[f"panel {panel['title']}"] = named
    doc = yaml.safe_load(RULES.read_text())
    for rule in (r for g in doc["groups"] for r in g["rules"]):
        named = phases_named(str(rule["expr"]))
        used[f"alert {rule['alert']}"] = named
        if named and about_the_queue(rule["alert"]):
            queue[f"alert {rule['alert']}"] = named
    assert used["alert TranskubeQueueDepthHigh"] == {"Queued"}
    assert any(name.startswith("panel") for name in queue), "the dashboard has no queue panel by phase"
    unknown = {where: sorted(named - phases) for where, named in used.items() if named - phases}
    assert not unknown, f"phases the model does not have ({sorted(phases)}): {unknown}"
    wrong = {where: sorted(named) for where, named in queue.items() if named != {"Queued"}}
    assert not wrong, f"queue panels/alerts must count phase Queued (waiting jobs), not: {wrong}"
    # The guide says the same: its phase matchers are real phases, and the queue depth is Queued.
    text = OPERATIONS.read_text()
    assert not phases_named(text) - phases
    (row,) = [line for line in text.splitlines() if line.startswith("| `transkube_transcodejobs` |")]
    assert "`Queued` = queue depth" in row, row
