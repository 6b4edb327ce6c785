"""The command line: ``python -m key_service COMMAND`` (serve, migrate, create-admin, ...).

``serve`` migrates the database before it listens (idempotent; replicas on one PostgreSQL take an
advisory lock, so they may all start at once), so a fresh deployment needs no separate step.
``create-admin`` and ``create-user`` migrate too, so they work on a brand-new database.
``keys`` and ``audit`` manage keys of a running key_service over its API (remote.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from apikeys_shared.config import generate_secrets_env
from apikeys_shared.errors import ConfigError

from .config import load_config, load_database_url
from .errors import KeyServiceError
from .remote import add_remote_commands, run_remote
from .roles import ADMIN_ROLE, MIN_PASSWORD_LENGTH, ROLES

# The web app, database drivers and Alembic are imported by the commands that use them, so that
# ``--help`` and ``generate-secrets`` answer at once.

__all__ = ["build_parser", "main"]

log = logging.getLogger("key_service")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m key_service",
        description="key_service: issues, lists and revokes API keys for the Backoffice API.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="migrate the database, then serve the API and page",
        description="Migrate the database, then serve HTTP. Reads KEY_SERVICE_* and APIKEYS_* "
                    "from the environment and refuses to start, naming the variable, when one "
                    "is missing or malformed.",
    )
    serve.add_argument("--host", help="address to listen on (default: KEY_SERVICE_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: KEY_SERVICE_PORT)")

    sub.add_parser(
        "migrate", help="create or upgrade the database schema",
        description="Bring the database of KEY_SERVICE_DATABASE_URL (or the SQLite file under "
                    "KEY_SERVICE_DATA_DIR) to the newest schema. Safe to run repeatedly.",
    )

    admin = sub.add_parser(
        "create-admin", help="create a system_administrator",
        description=f"Create a user with the {ADMIN_ROLE} role. The password is read from "
                    f"standard input and must be at least {MIN_PASSWORD_LENGTH} characters.",
    )
    admin.add_argument("--username", required=True, help="the new administrator's name")
    admin.add_argument("--password-stdin", action="store_true", required=True,
                       help="read the password from standard input (required)")

    user = sub.add_parser(
        "create-user", help="create a user of any role",
        description="Create a user. The password is read from standard input and must be at "
                    f"least {MIN_PASSWORD_LENGTH} characters.",
    )
    user.add_argument("--username", required=True, help="the new user's name")
    user.add_argument("--role", required=True, choices=ROLES, help="the user's role")
    user.add_argument("--password-stdin", action="store_true", required=True,
                      help="read the password from standard input (required)")

    add_remote_commands(sub)

    sub.add_parser(
        "generate-secrets", help="print a fresh env file of deployment secrets",
        description="Print NAME=value lines with a new hash pepper, Ed25519 signing key and its "
                    "verify key, and the internal service token. Keep the output private.",
    )
    return parser


def _fail(message: str) -> int:
    print(f"key_service: error: {message}", file=sys.stderr)
    return 1


def _read_password() -> str:
    # One line; only the line ending is removed (spaces may belong to the password).
    return sys.stdin.readline().rstrip("\r\n")


async def _create_user(url: str, username: str, password: str, role: str) -> None:
    from .db import create_engine, make_sessionmaker, migrate_async
    from .users import create_user

    await migrate_async(url)
    engine = create_engine(url, pool_size=1)
    try:
        await create_user(make_sessionmaker(engine), username, password, role)
    finally:
        await engine.dispose()


def _serve(args: argparse.Namespace) -> int:
    config = load_config()  # first: a missing variable is reported before any slow import

    from aiohttp import web

    from .app import create_app
    from .db import migrate
    from .logs import configure_logging

    configure_logging(config.log_level)
    host = args.host or config.host
    port = args.port or config.port
    migrate(config.database_url)
    log.info("starting", extra={"host": host, "port": port})
    web.run_app(create_app(config), host=host, port=port, access_log=None, print=None)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate-secrets":
            sys.stdout.write(generate_secrets_env())
            return 0
        if args.command == "serve":
            return _serve(args)
        if args.command in ("keys", "audit"):
            return run_remote(args)
        url = load_database_url()
        if args.command == "migrate":
            from .db import migrate

            migrate(url)
            print("key_service: database is at the newest schema")
            return 0
        role = ADMIN_ROLE if args.command == "create-admin" else args.role
        password = _read_password()
        asyncio.run(_create_user(url, args.username, password, role))
        print(f"key_service: created {role} {args.username!r}")
        return 0
    except ConfigError as exc:
        return _fail(f"configuration: {exc}")
    except KeyServiceError as exc:
        return _fail(exc.detail)
