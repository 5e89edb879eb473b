"""`transkube-operator`: runs the kopf operator (JSON logs, liveness endpoint, metrics)."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transkube-operator", description="transkube TranscodeJob operator")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only these namespaces (repeatable); default: the whole cluster")
    parser.add_argument("--liveness-port", type=int, default=None, help="port of /healthz (default from config)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--check", action="store_true", help="import everything and exit (image smoke test)")
    args = parser.parse_args(argv)

    import kopf

    from . import handlers

    if args.check:
        print(f"transkube-operator {__version__}: handlers loaded", file=sys.stderr)
        return 0
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=args.verbose)
    port = args.liveness_port or handlers.CFG.liveness_port
    kopf.run(
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
