"""Entry point of `transkube-operator` (a stub until its issue lands: it parses its flags and exits 0)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transkube-operator", description="transkube operator")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.parse_args(argv)
    print(f"transkube-operator {__version__}: not implemented yet", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
