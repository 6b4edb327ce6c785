"""``python -m auth_gateway serve [--host H] [--port P] [--workers N]``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from apikeys_shared.errors import ConfigError

from .config import load_config
from .errors import RouteTableError
from .routes import load_routes
from .serve import run_supervisor, run_worker


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; 2 for bad configuration."""
    parser = argparse.ArgumentParser(prog="python -m auth_gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", help="listen address (GATEWAY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (GATEWAY_PORT, default 8080)")
    serve.add_argument(
        "--workers", type=int, help="processes sharing the port (GATEWAY_WORKERS, default 1)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = load_config()
        config = replace(
            config,
            host=args.host or config.host,
            port=config.port if args.port is None else args.port,
            workers=config.workers if args.workers is None else args.workers,
        )
        if config.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if config.workers > 1 and config.port == 0:
            raise ConfigError("--workers above 1 needs a fixed port, not 0")
        load_routes(config.routes_path)
    except (ConfigError, RouteTableError) as exc:
        print(f"auth_gateway: {exc}", file=sys.stderr)
        return 2
    if config.workers == 1:
        run_worker(config, reuse_port=args.reuse_port)
        return 0
    return run_supervisor(config)


if __name__ == "__main__":
    sys.exit(main())
