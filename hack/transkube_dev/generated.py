"""The command line every generator in hack/ shares: print the file, or `--write` it in place."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .tools import REPO_DIR


def main(path: Path, render: Callable[[], str], argv: list[str]) -> int:
    if "--write" in argv:
        path.write_text(render())
        print(f"wrote {path.relative_to(REPO_DIR)}", file=sys.stderr)
    else:
        sys.stdout.write(render())
    return 0
