"""`python -m transkube_dev {tools,up,down,env,status}`: the local dev cluster from the shell."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import tools
from .cluster import ClusterState, LocalCluster

DEFAULT_DIR = tools.REPO_DIR / ".local" / "cluster"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transkube_dev", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("tools", help="build/extract every binary into the cache and print their paths")
    for name, text in (("up", "start the cluster and S3 server"), ("down", "stop everything, leave no process"),
                       ("env", "print shell exports for the running cluster"), ("status", "print state.json")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default {DEFAULT_DIR})")
        if name == "down":
            p.add_argument("--purge", action="store_true", help="also delete the cluster directory")
    args = parser.parse_args(argv)

    if args.cmd == "tools":
        t0 = time.monotonic()
        found = tools.ensure_all()
        for key, path in asdict(found).items():
            print(f"{key}={path}")
        print(f"# ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        return 0
    if args.cmd == "up":
        state = LocalCluster(args.dir).up()
        print(f"# cluster up in {state.timings}; nodes: {', '.join(state.nodes)}", file=sys.stderr)
        print_env(state)
        return 0
    if args.cmd == "down":
        swept = LocalCluster(args.dir).down()
        if swept:
            print(f"# swept stragglers: {swept}", file=sys.stderr)
        if args.purge:
            shutil.rmtree(args.dir, ignore_errors=True)
        print("# cluster down, no process left", file=sys.stderr)
        return 0
    try:
        state = ClusterState.load(args.dir)
    except FileNotFoundError:
        print(f"no cluster running in {args.dir}", file=sys.stderr)
        return 1
    if args.cmd == "env":
        print_env(state)
    else:
        print(json.dumps(asdict(state), indent=2))
    return 0


def print_env(state: ClusterState) -> None:
    for key, value in state.env().items():
        print(f"export {key}={shlex.quote(value)}")
    # The shell also gets kubectl, helm and the project's console scripts (transkube, transkube-shim).
    kubectl, helm = tools.ensure_kubectl_helm()
    dirs = dict.fromkeys([str(Path(sys.executable).parent), str(Path(kubectl).parent), str(Path(helm).parent)])
    print(f'export PATH={shlex.quote(":".join(dirs))}:"$PATH"')


if __name__ == "__main__":
    sys.exit(main())
