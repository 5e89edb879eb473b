"""yamllint (config: .yamllint.yaml) over the YAML we ship: values.yaml, Chart.yaml, the CRDs, examples/, the
alert rules, and the chart as Helm renders it (templates/ are Go templates; their output is what must be YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transkube_dev import tools
from yamllint import linter
from yamllint.config import YamlLintConfig

from .test_chart import ALL_ON, CHART, helm

CONFIG = YamlLintConfig(file=str(tools.REPO_DIR / ".yamllint.yaml"))
FILES = sorted([CHART / "values.yaml", CHART / "Chart.yaml", tools.REPO_DIR / ".yamllint.yaml",
                *(CHART / "crds").glob("*.yaml"), *(tools.REPO_DIR / "crds").glob("*.yaml"),
                *(tools.REPO_DIR / "examples").glob("*.yaml"), *(CHART / "alerts").glob("*.yaml")])


def problems(text: str, name: str) -> list[str]:
    return [f"{name}:{p.line}:{p.column}: {p.desc} ({p.rule})" for p in linter.run(text, CONFIG)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(tools.REPO_DIR)))
def test_yaml_file_is_lint_clean(path: Path) -> None:
    assert problems(path.read_text(), str(path.relative_to(tools.REPO_DIR))) == []


@pytest.mark.parametrize("sets", [[], ALL_ON, ["--set", "shim.enabled=false", "--set", "presets.builtin=false"]],
                         ids=["defaults", "all-on", "minimal"])
def test_rendered_chart_is_lint_clean(sets: list[str]) -> None:
    rendered = helm("template", "t", str(CHART), "--namespace", "transkube-system", *sets).stdout
    assert "kind: Deployment" in rendered
    assert problems(rendered, "helm template") == []


def test_the_config_is_not_vacuous() -> None:
    assert problems("a: [1 ,2]\nb:  yes\nc: 1\nc: 2\n", "bad.yaml")
