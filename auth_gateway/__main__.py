"""The command line: ``python -m auth_gateway serve [--host H] [--port P] [--workers N]``."""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import replace

from apikeys_shared.errors import ConfigError

from .config import load_config, unix_socket_path
from .errors import RouteTableError
from .routes import load_routes
from .serve import run_supervisor, run_worker
from .unixsocket import UnixSocket


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
    serve.add_argument(
        "--unix", metavar="PATH",
        help="also listen on a Unix socket at PATH (GATEWAY_UNIX_SOCKET, default none)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # A worker started by the supervisor: the Unix socket the supervisor bound, as a descriptor.
    serve.add_argument("--unix-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = load_config()
        config = replace(
            config,
            host=args.host or config.host,
            port=config.port if args.port is None else args.port,
            workers=config.workers if args.workers is None else args.workers,
            unix_socket=(
                config.unix_socket if args.unix is None
                else unix_socket_path(args.unix, "--unix")
            ),
        )
        if config.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if config.workers > 1 and config.port == 0:
            raise ConfigError("--workers above 1 needs a fixed port, not 0")
        load_routes(config.routes_path)
        unix: UnixSocket | socket.socket | None = None
        if args.unix_fd is not None:
            # A worker: the supervisor bound the socket and owns its file.
            unix = socket.socket(fileno=args.unix_fd)
            unix.set_inheritable(False)  # not for whatever this process may start
        elif config.unix_socket is not None:
            unix = UnixSocket(config.unix_socket, config.unix_socket_mode,
                              "GATEWAY_UNIX_SOCKET" if args.unix is None else "--unix")
    except (ConfigError, RouteTableError) as exc:
        print(f"auth_gateway: {exc}", file=sys.stderr)
        return 2
    try:
        if config.workers == 1:
            run_worker(config, reuse_port=args.reuse_port, unix=unix)
            return 0
        return run_supervisor(config, unix if isinstance(unix, UnixSocket) else None)
    finally:
        if unix is not None:
            unix.close()


if __name__ == "__main__":
    sys.exit(main())
