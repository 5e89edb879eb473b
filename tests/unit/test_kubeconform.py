"""The rendered chart (every optional feature on, CRDs and `helm test` hooks included) and the examples pass
kubeconform -strict against schemas generated offline (hack/transkube_dev/kubeschemas.py): the built-in kinds
from the pinned Kubernetes release's own OpenAPI document, ours from the CRDs. ServiceMonitor (a Prometheus
Operator CRD) has no schema here and is skipped explicitly."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from transkube_dev import kubeschemas, tools

from .test_chart import ALL_ON, CHART, helm

EVERYTHING = [*ALL_ON, "--set", "shim.jwt.hs256SecretName=jwt", "--set", "shim.jwt.rs256PublicKey=pem",
              "--set", "shim.storageSecret=s3", "--set", "shim.ingress.tlsSecretName=tls",
              "--set", "shim.corsOrigins[0]=https://app.example.com", "--set", "storage.endpoint=http://s3:9000",
              "--set", "gpu.runtimeClassName=nvidia", "--set", "operator.watchNamespaces[0]=media"]


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kubeschemas")
    assert kubeschemas.write(out) > 100
    return out


def kubeconform(schemas: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    binary = tools.ensure_kubeconform()
    return subprocess.run([str(binary), "-strict", "-summary", "-schema-location",
                           f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", *args],
                          input=stdin, capture_output=True, text=True, timeout=120, check=False)


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    m = re.search(r"(\d+) resources? found.*Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)",
                  result.stdout)
    assert m, result.stdout + result.stderr
    return dict(zip(("found", "valid", "invalid", "errors", "skipped"), map(int, m.groups()), strict=True))


def test_rendered_chart_passes_kubeconform_strict(schemas: Path) -> None:
    manifest = helm("template", "t", str(CHART), "--namespace", "transkube-system", "--include-crds",
                    *EVERYTHING).stdout
    result = kubeconform(schemas, "-skip", "ServiceMonitor", stdin=manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = summary(result)
    kinds = set(re.findall(r"^kind: (\w+)$", manifest, re.MULTILINE))
    assert {"CustomResourceDefinition", "Deployment", "Service", "Ingress", "NetworkPolicy", "PodDisruptionBudget",
            "ClusterRole", "Role", "Pod", "TranscodePreset"} <= kinds
    assert counts["skipped"] == manifest.count("kind: ServiceMonitor") >= 1
    assert counts["valid"] == counts["found"] - counts["skipped"]


def test_examples_pass_kubeconform_strict(schemas: Path) -> None:
    examples = sorted(str(p) for p in (tools.REPO_DIR / "examples").glob("*.yaml"))
    result = kubeconform(schemas, *examples)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result)["valid"] >= len(examples)


def test_the_schemas_are_strict(schemas: Path) -> None:
    """Not vacuous: typos, wrong types and a bad spec are caught, in built-in kinds and in ours."""
    bad = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labelz: {a: b}}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, ports: [{containerPort: "80"}]}]
---
apiVersion: media.transkube.dev/v1alpha1
kind: TranscodeJob
metadata: {name: j}
spec:
  input: {uri: s3://bucket/in.mp4}
  inputt: {}
  outputs: [{name: o, uri: s3://bucket/out.mp4, container: mp4}]
---
apiVersion: v1
kind: Service
metadata: {name: s}
spec: {ports: [{port: 80, targetPort: http}], selector: {a: b}}
"""
    result = kubeconform(schemas, "-output", "text", stdin=bad)
    assert result.returncode == 1
    assert summary(result) == {"found": 3, "valid": 1, "invalid": 2, "errors": 0, "skipped": 0}
    assert "'labelz' not allowed" in result.stdout and "containerPort': got string, want integer" in result.stdout
    assert "'inputt' not allowed" in result.stdout
