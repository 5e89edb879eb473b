"""The shell commands in the docs, as tests: README.md and docs/*.md cannot go stale.

Fenced blocks:
- ```sh: commands a reader runs. tests/integration/test_docs.py runs them against a fresh local cluster and its
  MinIO: per file, in order, as one `bash -euo pipefail` script (so a variable set in one block is there in the
  next), README.md first, and fails on the first error.
- any other language (console, text, yaml, json, ...): illustrative, never run. A fence without a language is
  an error (it would be neither).
- a ```sh block that cannot run here is listed in NOT_RUN with its reason; a ```sh block that is neither run
  nor listed fails tests/unit/test_docs.py, and so does a NOT_RUN entry that matches no block.

Runnable blocks contain no placeholders (`...`, `<name>`, example.com hosts): what differs per reader is an
environment variable the reader sets, listed in READER_SETTINGS with the value the test gives it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .tools import REPO_DIR

RUNNABLE = "sh"
ILLUSTRATIVE = frozenset({"console", "text", "yaml", "json", "lua", "promql", "python"})
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")

# (file, first command of the block) -> why the test does not run it.
NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "make demo"):
        "`make demo` is run on its own by tests/integration/test_docs.py::test_make_demo; `make test` is this "
        "test suite (it would run itself)",
    ("README.md", "make unit"): "runs this test suite (it would run itself)",
    ("docs/operations.md", "docker build -f Dockerfile.operator -t \"$REGISTRY/transkube-operator:0.1.0\" "
                           "--build-arg VERSION=0.1.0 ."):
        "there is no Docker engine here; tests/unit/test_images.py lints both Dockerfiles (hadolint) and checks "
        "every command they run",
    ("docs/cli.md", "pip install ."):
        "installs the distribution with its dependencies from the package index into the current Python; the "
        "test session runs from exactly that install (hack/install.sh: `pip install -e .[dev]`)",
}

# Variables the runnable blocks read instead of placeholders: what a reader sets, and what the test sets.
READER_SETTINGS: dict[str, tuple[str, str]] = {
    "KUBECONFIG": ("your cluster", "the test's own fresh local cluster (a private copy per file)"),
    "AWS_ENDPOINT_URL_S3": ("your S3 endpoint (unset for AWS S3)", "its MinIO, as `make -s env` exports"),
    "AWS_DEFAULT_REGION": ("your S3 region", "its MinIO's region"),
    "AWS_ACCESS_KEY_ID": ("your S3 access key", "its MinIO's"),
    "AWS_SECRET_ACCESS_KEY": ("your S3 secret key", "its MinIO's"),
    "REGISTRY": ("the registry your images are pushed to", "ghcr.io/acme: the dev node agent ignores images and "
                                                           "runs the checkout's console scripts"),
    "SHIM": ("the shim's URL (its Ingress)", "http://127.0.0.1:<shim.port>: the dev node agent runs pods on the "
                                            "host's network, and there is no ingress controller"),
    "SHIM_HOST": ("the shim's Ingress host name", "transcode.example.com (an Ingress nothing serves)"),
    "KEY": ("an API key of tenant `media` (README mints it)", "README: the one it mints; docs/*.md: one the test "
                                                             "mints for tenant media"),
}
# Placeholders that must not appear in runnable commands (comments may show what output looks like).
PLACEHOLDER = re.compile(r"\.\.\.|<[a-z][a-z0-9 _-]*>|\bexample\.com\b|\[-|\|[a-z]+\]")


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository, e.g. "docs/cli.md"
    line: int  # 1-based line of the opening fence
    lang: str
    text: str

    @property
    def key(self) -> str:
        """The block's first command (comments and line continuations dropped): its name in NOT_RUN."""
        for line in code_lines(self.text):
            return line.rstrip("\\").strip()
        return ""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def code_lines(text: str) -> Iterable[str]:
    """Lines of shell without comments (a `#` at the start of a line, or after two spaces), blank ones dropped."""
    for raw in text.splitlines():
        line = raw.split("  #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.strip():
            yield line


def doc_files(root: Path = REPO_DIR) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(path: Path, root: Path = REPO_DIR) -> list[Block]:
    """Every fenced block of a Markdown file, with its language ('' if none)."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, start = m["fence"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and not lines[i].strip()[len(fence):]
                                      .strip()):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"{path.relative_to(root)}:{start + 1}: unclosed code fence")
        found.append(Block(str(path.relative_to(root)), start + 1, m["info"].strip().split(" ")[0],
                           "\n".join(body) + "\n"))
        i += 1
    return found


def all_blocks(root: Path = REPO_DIR) -> list[Block]:
    return [b for path in doc_files(root) for b in blocks(path, root)]


def runnable(found: Sequence[Block]) -> list[Block]:
    """The ```sh blocks the test runs: all but NOT_RUN's."""
    return [b for b in found if b.lang == RUNNABLE and (b.path, b.key) not in NOT_RUN]


def placeholders(block: Block) -> list[str]:
    return [line.strip() for line in code_lines(block.text) if PLACEHOLDER.search(line)]


def script(found: Sequence[Block]) -> str:
    """One file's runnable blocks as a bash script: strict mode, a marker per block, the failing command named."""
    parts = ["set -euo pipefail",
             "trap 'echo \"### FAILED (exit $?): $BASH_COMMAND\" >&2' ERR"]
    for block in found:
        parts += [f"echo \"### {block.where} (at ${{SECONDS}} s)\" >&2", block.text]
    return "\n".join(parts) + "\n"
