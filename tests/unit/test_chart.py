"""The Helm chart, rendered offline: lint-clean, typo-proof values, hardened workloads."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from transkube_dev import tools, values_schema

CHART = tools.REPO_DIR / "charts" / "transkube"
ALL_ON = ["--set", "shim.ingress.enabled=true", "--set", "shim.podDisruptionBudget.enabled=true",
          "--set", "shim.networkPolicy.enabled=true", "--set", "serviceMonitor.enabled=true"]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    _, binary = tools.ensure_kubectl_helm()
    return subprocess.run([str(binary), *args], check=check, capture_output=True, text=True, timeout=120)


def rendered(*sets: str) -> list[dict[str, Any]]:
    out = helm("template", "t", str(CHART), "--namespace", "transkube-system", *sets).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_values_schema_is_generated_from_values_yaml() -> None:
    assert values_schema.SCHEMA_PATH.read_text() == values_schema.render(), \
        "run: PYTHONPATH=hack .venv/bin/python -m transkube_dev.values_schema --write"


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART), *ALL_ON, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("typo", ["shim.prot=80", "operatorr.livenessPort=1", "limits.maxStream=3"])
def test_a_typo_in_values_is_rejected(typo: str) -> None:
    result = helm("template", "t", str(CHART), "--set", typo, check=False)
    assert result.returncode != 0
    assert "additional properties" in result.stderr.lower() or "additionalproperties" in result.stderr.lower()


def test_every_workload_is_hardened() -> None:
    pods = [d["spec"]["template"]["spec"] for d in rendered(*ALL_ON) if d["kind"] == "Deployment"]
    assert len(pods) == 2  # operator and shim
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["limits"] and c["livenessProbe"]


def test_every_object_carries_the_recommended_labels() -> None:
    for doc in rendered(*ALL_ON):
        labels = doc["metadata"].get("labels") or {}
        if doc["kind"] in ("TranscodePreset",):
            continue
        assert labels.get("app.kubernetes.io/name") == "transkube", doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/instance") == "t"


def test_shim_rbac_is_scoped() -> None:
    docs = rendered()
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "t-shim")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                              "resourceNames": ["transkube-shim-api-keys"], "verbs": ["get"]}]
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "t-shim")
    assert all("secrets" not in r["resources"] for r in cluster_role["rules"])


def test_disabling_the_shim_removes_it() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered("--set", "shim.enabled=false")}
    assert not any(name.endswith("-shim") for _, name in kinds)
    assert Path(CHART / "values.schema.json").exists()


def test_every_value_is_documented() -> None:
    import json

    def undocumented(node: dict[str, Any], path: str = "") -> list[str]:
        out = []
        for key, prop in (node.get("properties") or {}).items():
            here = f"{path}.{key}" if path else key
            if not prop.get("description"):
                out.append(here)
            out += undocumented(prop, here)
        return out

    assert undocumented(json.loads(values_schema.render())) == [], "add a `# --` comment in values.yaml"


def _shim_docs(*sets: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    docs = rendered(*sets)
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-shim")
    pdb = next((d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "t-shim"), None)
    return deployment, pdb


def test_the_shim_is_highly_available_by_default() -> None:
    deployment, pdb = _shim_docs()
    assert deployment["spec"]["replicas"] == 2
    assert pdb is not None and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    pod = deployment["spec"]["template"]["spec"]
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_one_shim_replica_has_no_pdb_and_own_affinity_wins() -> None:
    deployment, pdb = _shim_docs("--set", "shim.replicas=1",
                                 "--set-json", 'shim.affinity={"nodeAffinity":{"x":1}}')
    assert deployment["spec"]["replicas"] == 1
    assert pdb is None  # minAvailable 1 of 1 would block every drain
    assert deployment["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": {"x": 1}}
