"""Pure helpers of the dev node agent: Kubernetes $(VAR) expansion, quantities, downward API fields."""

from __future__ import annotations

import pytest
from transkube_dev.nodeagent import ConfigError, expand, field_ref, parse_quantity, resource_field_ref
from transkube_dev.nodeagent_config import CPU_NODE


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("plain $ sign", env) == "plain $ sign"


@pytest.mark.parametrize(("raw", "value"), [("500m", 0.5), ("2", 2), ("1Gi", 2**30), ("128M", 128e6), (3, 3)])
def test_parse_quantity(raw: str, value: float) -> None:
    assert parse_quantity(raw) == value


def test_parse_quantity_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="bad quantity"):
        parse_quantity("12 cores")


POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}, "annotations": {"a": "b"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa",
             "containers": [{"name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}}]},
}


def test_field_ref() -> None:
    assert field_ref(POD, "metadata.name") == "p"
    assert field_ref(POD, "metadata.labels['app']") == "x"
    assert field_ref(POD, "metadata.annotations['a']") == "b"
    assert field_ref(POD, "spec.nodeName") == "n1"
    assert field_ref(POD, "metadata.labels") == 'app="x"'
    with pytest.raises(ConfigError):
        field_ref(POD, "spec.nope")


def test_resource_field_ref_rounds_up_and_defaults_to_node() -> None:
    assert resource_field_ref(POD, "c", {"resource": "limits.cpu"}, CPU_NODE) == "2"
    assert resource_field_ref(POD, "c", {"resource": "limits.memory", "divisor": "1Mi"}, CPU_NODE) == "1024"
    assert resource_field_ref(POD, "c", {"resource": "requests.cpu", "divisor": "1m"}, CPU_NODE) == "1500"
    no_limits = {**POD, "spec": {**POD["spec"], "containers": [{"name": "c"}]}}
    assert resource_field_ref(no_limits, "c", {"resource": "limits.cpu"}, CPU_NODE) == CPU_NODE.cpu
