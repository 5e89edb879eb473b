"""`transkube-operator`: runs the kopf operator (JSON logs, liveness endpoint, metrics)."""

from __future__ import annotations

import argparse
import re
import sys

from transkube_api.models import NAME_PATTERN

from . import __version__, leader
from .config import OperatorConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transkube-operator", description="transkube TranscodeJob operator")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only these namespaces (repeatable; names, not patterns); default: the whole "
                             "cluster")
    parser.add_argument("--liveness-port", type=int, default=None, help="port of /healthz (default from config)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--check", action="store_true", help="import everything and exit (image smoke test)")
    args = parser.parse_args(argv)
    # The informers list and watch each namespace by name; a pattern (kopf took globs) would match nothing.
    not_names = [n for n in args.namespace if len(n) > 63 or not re.fullmatch(NAME_PATTERN, n)]
    if not_names:
        parser.error(f"--namespace (operator.watchNamespaces) takes namespace names, not patterns: "
                     f"{', '.join(map(repr, not_names))}")

    import kopf

    from . import handlers

    handlers.WATCH_NAMESPACES[:] = args.namespace  # where the informers watch

    if args.check:
        print(f"transkube-operator {__version__}: handlers loaded", file=sys.stderr)
        return 0
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=args.verbose)
    port = args.liveness_port or handlers.CFG.liveness_port
    elector = stand_by(handlers.CFG, port)
    kopf.run(
        standalone=True,  # no kopf peering: mutual exclusion comes from the Lease (leader.py)
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://0.0.0.0:{port}/healthz",
    )
    if elector is not None:  # kopf has stopped (SIGTERM): hand the Lease to a standby at once
        elector.release()
    return 0


def stand_by(cfg: OperatorConfig, liveness_port: int) -> leader.Elector | None:
    """Blocks until this replica leads (kopf must not start its watches or handlers on a standby), serving
    /healthz meanwhile; returns the elector that keeps renewing, or None without leader election."""
    if not cfg.leader_election.enabled:
        leader.LEADING.set()
        return None
    cfg.leader_election.check()
    from kubernetes import config as kube_config

    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()
    from . import metrics

    elector = leader.Elector(cfg.leader_election, leader.default_identity(cfg.pod_name),
                             on_change=lambda leading: metrics.LEADER.set(int(leading)))
    metrics.LEADER.set(0)
    metrics.serve(cfg.metrics_port)  # a standby is a healthy scrape target too (transkube_operator_leader 0)
    health = leader.HealthServer(liveness_port, elector.identity)
    try:
        elector.acquire()
    finally:
        health.close()
    return elector


if __name__ == "__main__":
    sys.exit(main())
