"""The docs, checked without a cluster (fast): every shell block is run by tests/integration/test_docs.py or
listed with its reason, parses, and has no placeholders; `kubectl wait` always has a timeout; facts the docs
state that can be checked mechanically (cited files, the CRDs, the distribution's name, phases, the CLI's
validation errors) are checked."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import get_args

import pytest
import yaml
from transkube_api.models import Phase
from transkube_cli.main import main
from transkube_dev import doccmds

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = doccmds.all_blocks(ROOT)
SH = [b for b in BLOCKS if b.lang == doccmds.RUNNABLE]
RUN = doccmds.runnable(BLOCKS)
DOCS = doccmds.doc_files(ROOT)
NOTES = ROOT / "charts" / "transkube" / "templates" / "NOTES.txt"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_every_block_has_a_known_language() -> None:
    unknown = [(b.where, b.lang) for b in BLOCKS if b.lang != doccmds.RUNNABLE and b.lang not in doccmds.ILLUSTRATIVE]
    assert not unknown, f"fences need a language: sh (run) or one of {sorted(doccmds.ILLUSTRATIVE)}: {unknown}"


def test_every_sh_block_is_run_or_listed_with_a_reason() -> None:
    listed = {(b.path, b.key) for b in SH} & set(doccmds.NOT_RUN)
    stale = set(doccmds.NOT_RUN) - listed
    assert not stale, f"NOT_RUN entries that match no ```sh block (first command changed?): {sorted(stale)}"
    assert all(len(reason) > 20 for reason in doccmds.NOT_RUN.values())
    assert len(RUN) + len(listed) == len(SH)
    assert len(RUN) >= 15, [b.where for b in RUN]  # the README's install and tour, cli.md, operations.md, ...


@pytest.mark.parametrize("block", SH, ids=[b.where for b in SH])
def test_sh_blocks_parse(block: doccmds.Block) -> None:
    result = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{block.where}: {result.stderr}"


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_runnable_blocks_have_no_placeholders(block: doccmds.Block) -> None:
    found = doccmds.placeholders(block)
    assert not found, (f"{block.where}: placeholders in commands that are run; use a variable from "
                       f"doccmds.READER_SETTINGS ({', '.join(doccmds.READER_SETTINGS)}): {found}")


def test_variables_the_blocks_read_are_documented_settings() -> None:
    """A runnable block reads only variables it (or an earlier block of its file) sets, or a reader's setting."""
    for path in {b.path for b in RUN}:
        assigned: set[str] = set()
        for block in (b for b in RUN if b.path == path):
            code = "\n".join(doccmds.code_lines(block.text))
            assigned |= set(re.findall(r"(?:^|[\s;(&|])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", code, re.MULTILINE))
            read = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", code)) - {"PATH", "HOME"}
            unknown = read - assigned - set(doccmds.READER_SETTINGS)
            assert not unknown, f"{block.where} reads {sorted(unknown)}: not set before, not a reader's setting"


# ---- kubectl wait: kubectl's default timeout is 30 s, far shorter than a transcode -------------------------

WAIT = re.compile(r"kubectl(?:\s+-n\s+\S+)?\s+wait\b[^\n`;|&]*")


@pytest.mark.parametrize("path", [*DOCS, NOTES, *EXAMPLES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_kubectl_wait_has_a_timeout(path: Path) -> None:
    text = path.read_text().replace("\\\n", " ")
    commands = [m.group(0) for m in WAIT.finditer(text) if "--for" in m.group(0)]
    missing = [c for c in commands if "--timeout" not in c]
    assert not missing, f"{path.relative_to(ROOT)}: kubectl wait without --timeout: {missing}"


def test_the_wait_check_finds_commands() -> None:
    assert WAIT.search("kubectl -n media wait --for=condition=Succeeded tj/sample --timeout=30m")
    assert "--timeout" not in WAIT.search("$ kubectl wait --for=condition=Succeeded tj/x\nok")[0]  # type: ignore[index]


# ---- facts the docs state --------------------------------------------------------------------------------

# Repository paths: files (with an extension) and directories (ending in /); `operator/shim` is prose.
CITED = re.compile(r"(?<![\w/.-])((?:tests|bench|hack|charts|examples|operator|api_shim|worker_image|docs|crds)"
                   r"/[\w./-]*[\w/])")


@pytest.mark.parametrize("path", [*DOCS, NOTES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_doc_cites_exists(path: Path) -> None:
    text = path.read_text()
    cited = {m for m in CITED.findall(text) if "*" not in m and (m.endswith("/") or "." in m.rsplit("/", 1)[1])}
    missing = sorted(m for m in cited if not (ROOT / m.rstrip("/")).exists())
    assert not missing, f"{path.relative_to(ROOT)} cites files that do not exist: {missing}"


def test_operations_guide_lists_every_crd() -> None:
    crds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"]: yaml.safe_load(p.read_text())["metadata"]["name"]
            for p in (ROOT / "charts" / "transkube" / "crds").glob("*.yaml")}
    assert set(crds) == {"TranscodeJob", "TranscodePreset"}
    text = (ROOT / "docs" / "operations.md").read_text()
    installed = text[text.index("## What gets installed"):text.index("## Images")]
    for kind, name in crds.items():
        assert f"`{kind}`" in installed and f"`{name}`" in installed, kind
    assert f"kubectl get crd {' '.join(sorted(crds.values()))}" in text


def test_install_instructions_name_the_real_distribution() -> None:
    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    text = (ROOT / "docs" / "cli.md").read_text()
    assert f"distribution, `{name}`" in text and "not published on PyPI" in text
    assert f"pip install {name}" not in text  # not on PyPI: it would install something else, or nothing


def test_shim_doc_knows_the_chart_deploys_the_shim() -> None:
    chart = (ROOT / "charts" / "transkube" / "templates" / "shim.yaml").read_text()
    assert "kind: Deployment" in chart
    assert "no shim Deployment" not in (ROOT / "docs" / "shim.md").read_text()


def test_phase_sequences_use_model_phases_and_start_queued() -> None:
    """`A -> B -> C` sequences of phases in the docs (and NOTES) name real phases; a job's life starts Queued."""
    phases = set(get_args(Phase))
    word = "|".join(sorted(phases))
    arrow = r"\s*(?:->|→|─+(?:\(\w+\)─+)?▶)\s*"
    note = r"(?:\s*\([^)]*\))?"  # e.g. Running (PROGRESS, ETA) -> Succeeded
    seq = re.compile(rf"\b(?:{word})\b{note}(?:{arrow}\b(?:{word})\b{note})+")
    found = [(p.name, m.group(0)) for p in [*DOCS, NOTES] for m in seq.finditer(p.read_text())]
    assert found
    life = [(name, s) for name, s in found if "Running" in s and "Succeeded" in s]
    assert life and all(s.startswith("Queued") for _, s in life), life


def test_notes_name_the_storage_secret_and_no_invented_site() -> None:
    text = NOTES.read_text()
    assert ".Values.storage.defaultSecretName" in text
    for path in (NOTES, ROOT / "charts" / "transkube" / "Chart.yaml"):
        urls = re.findall(r"https?://[^\s'\"]+", path.read_text())
        assert not [u for u in urls if "transkube.dev" in u], (path.name, urls)


# ---- the CLI's validation errors as docs/cli.md shows them -------------------------------------------------

def console_examples(path: Path) -> list[tuple[str, list[str]]]:
    """`$ transkube ...` lines of ```console blocks with the output lines that follow each."""
    examples: list[tuple[str, list[str]]] = []
    for block in (b for b in doccmds.blocks(path, ROOT) if b.lang == "console"):
        for line in block.text.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples:
                examples[-1][1].append(line)
    return [(cmd, out) for cmd, out in examples if cmd.startswith("transkube ")]


def test_cli_doc_shows_the_errors_the_cli_prints(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # validation comes first: nothing is contacted
    examples = console_examples(ROOT / "docs" / "cli.md")
    assert len(examples) >= 3
    for command, shown in examples:
        code = main(shlex.split(command)[1:])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == shown, (command, err, shown)
