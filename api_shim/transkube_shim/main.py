"""Entry point of `transkube-shim`: `serve` (the default) runs the REST shim; `new-key` mints an API key and
prints the Secret entry that registers it (only the hash is ever stored)."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transkube-shim", description="transkube REST shim")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the REST shim (configured by TRANSKUBE_SHIM_* variables)")
    serve.add_argument("--port", type=int, default=None, help="overrides TRANSKUBE_SHIM_PORT")
    serve.add_argument("--log-level", default="INFO")
    key = sub.add_parser("new-key", help="mint an API key and print its Secret entry")
    key.add_argument("--tenant", required=True)
    key.add_argument("--tier", default="standard")
    args = parser.parse_args(argv)

    if args.command == "new-key":
        from .auth import TENANT_RE, new_key, secret_entry

        if not TENANT_RE.match(args.tenant):
            parser.error("--tenant must be a DNS label")
        _, api_key = new_key()
        key_id, entry = secret_entry(api_key, args.tenant, args.tier)
        print(json.dumps({"apiKey": api_key, "secretDataKey": key_id, "secretDataValue": entry}, indent=2))
        print("Give apiKey to the client once; add the entry under stringData of the API key Secret.",
              file=sys.stderr)
        return 0

    import dataclasses

    from aiohttp import web

    from . import logs
    from .app import create_app
    from .config import ShimConfig

    logs.setup(getattr(args, "log_level", "INFO"))
    config = ShimConfig.from_env()
    if getattr(args, "port", None):
        config = dataclasses.replace(config, port=args.port)
    # SIGTERM/SIGINT: stop accepting, end event streams, finish in-flight requests, then close the clients.
    # reuse_port: where pods share the node's network (hostNetwork, the dev node agent) a rolling update's new
    # replica binds the port while the old one still serves, instead of failing until the old one is gone.
    web.run_app(create_app(config), host=config.host, port=config.port, access_log=None,
                shutdown_timeout=config.shutdown_timeout_seconds, handle_signals=True, print=None,
                reuse_port=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
