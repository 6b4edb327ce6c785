"""``python -m demo_backend [--host H] [--port P]``: run the echo backend."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from .app import create_app


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until SIGTERM / SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m demo_backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    print(f"demo_backend listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
