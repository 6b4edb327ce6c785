"""``python -m key_service keys ...`` and ``audit``: managing keys from scripts and terminals.

These commands talk HTTP to a running key_service (apiclient.py) with a management token, so
they work from anywhere the API is reachable: a CI job, a laptop, a cron job. People get tables;
scripts get ``--json`` (the API's own objects). Exit status: 0 done, 1 refused by key_service
(with its reason), 2 a usage error (bad arguments, no URL or token), 3 key_service unreachable
or unavailable, 4 revoked with ``--wait`` but not yet applied by every live gateway process
when the wait ran out.

A new secret is printed once, to standard output only, and never written anywhere else; the
reminder to store it goes to standard error so that ``> file`` or ``$(...)`` captures the secret
alone with ``--json`` or the table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from apikeys_shared.errors import ConfigError

from .apiclient import ApiClient, Refused, Unreachable
from .config import load_client_config

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_UNCONFIRMED", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "add_remote_commands", "parse_duration", "receipt_line", "run_remote"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNCONFIRMED = 4
MAX_WAIT = 30.0

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_STORE_IT_NOW = ("The secret is shown this once: store it now. Only a hash of it is kept, so "
                "nobody can show it to you again.")


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``24h``, ``7d``, ``1h30m`` or a plain number of seconds."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    match = _DURATION_RE.fullmatch(value)
    if not value or match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use e.g. 3600, 90s, 15m, 24h, 7d or 1h30m"
        )
    return sum(int(n) * _UNITS[u] for n, u in zip(match.groups(), "dhms", strict=True) if n)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _wait(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_WAIT:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0 and at most {MAX_WAIT:g}"
        )
    return value


def add_remote_commands(sub: Any) -> None:
    """Add ``keys`` (list, show, issue, revoke, roll) and ``audit`` to the subparsers ``sub``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="key_service's base URL (default: APIKEYS_URL)")
    common.add_argument(
        "--token",
        help="a management token (default: APIKEYS_TOKEN; prefer the variable: arguments are "
             "visible to other users of the machine)",
    )
    common.add_argument("--json", action="store_true",
                        help="print the API's JSON instead of a table (for scripts)")

    keys = sub.add_parser(
        "keys", help="list, show, issue, revoke or roll API keys over the API",
        description="Manage API keys through a running key_service's JSON API with a "
                    "management token (APIKEYS_URL and APIKEYS_TOKEN, or --url and --token). "
                    "Exit status: 0 done, 1 refused, 2 usage, 3 unreachable.",
    )
    verbs = keys.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("list", parents=[common], help="every key (needs keys:read)",
                     description="List every key: active newest first, then revoked.")
    show = verbs.add_parser("show", parents=[common], help="one key (needs keys:read)",
                            description="Show one key.")
    show.add_argument("key_id", metavar="ID", help="the key ID")
    issue = verbs.add_parser(
        "issue", parents=[common], help="issue a key (needs keys:write)",
        description="Issue a key and print its secret, this once, to standard output.",
    )
    issue.add_argument("name", metavar="NAME", help="the key's name (1-100 characters)")
    revoke = verbs.add_parser(
        "revoke", parents=[common], help="revoke a key (needs keys:write)",
        description="Revoke a key for ever. With --wait, return once every live gateway "
                    "process refuses it (or after that many seconds) and print the receipt; "
                    "exit status 4 when some process had not confirmed by then.",
    )
    revoke.add_argument("key_id", metavar="ID", help="the key ID")
    revoke.add_argument(
        "--wait", type=_wait, metavar="SECONDS",
        help=f"wait up to this long (above 0, at most {MAX_WAIT:g}) for every live gateway "
             "process to apply the revocation",
    )
    roll = verbs.add_parser(
        "roll", parents=[common], help="replace a key, keeping the old one for an overlap "
                                       "(needs keys:write)",
        description="Issue a replacement for a key (same name; its secret is printed once) and "
                    "revoke the old key when the overlap ends, so that clients can move to the "
                    "new secret without an outage.",
    )
    roll.add_argument("key_id", metavar="ID", help="the key ID")
    roll.add_argument(
        "--overlap", required=True, type=parse_duration, metavar="DURATION",
        help="how long the old key keeps working: e.g. 1h, 24h, 7d, 90m (0 to 30 days)",
    )

    audit = sub.add_parser(
        "audit", parents=[common], help="the audit log, newest first (needs audit:read)",
        description="Print the newest entries of the audit log: who (person, token or "
                    "key_service) did what to which key or token, and when.",
    )
    audit.add_argument("--limit", type=_positive, default=50, metavar="N",
                       help="how many entries (default 50)")


# -- output -----------------------------------------------------------------------------------
def _when(value: str | None) -> str:
    """``2026-12-01T09:00:00.123456Z`` as ``2026-12-01 09:00:00Z`` (or ``-``)."""
    if not value:
        return "-"
    return value.replace("T", " ")[:19] + "Z"


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _state(key: dict[str, Any]) -> str:
    if key["status"] == "revoked":
        return f"revoked {_when(key['revoked_at'])}"
    if key.get("revokes_at"):
        return f"active, revokes {_when(key['revokes_at'])}"
    return "active"


def _facts(pairs: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        out.write(f"{label.ljust(width)}  {value}\n")


def _key_facts(key: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("Key ID", key["key_id"]), ("Name", key["name"]), ("Status", _state(key)),
             ("Issued", _when(key["issued_at"]))]
    if key.get("replaces"):
        facts.append(("Replaces", key["replaces"]))
    if key.get("replaced_by"):
        facts.append(("Replaced by", key["replaced_by"]))
    used = key.get("last_used_at")
    facts.append(("Last used", _when(used) if used else "never"))
    return facts


_ACTIONS = {"key.issued": "issued key", "key.rolled": "rolled key", "key.revoked": "revoked key",
            "token.created": "created token", "token.revoked": "revoked token"}


def receipt_line(receipt: dict[str, Any]) -> str:
    """A revocation's receipt in one sentence, as the page says it too."""
    processes, confirmed, ms = receipt["processes"], receipt["confirmed"], receipt["ms"]
    if processes == 0:
        return "No gateway process is live (none sent a heartbeat within the bound)"
    plural = "process" if processes == 1 else "processes"
    if confirmed == processes:
        every = "the one" if processes == 1 else f"all {processes}"
        return f"Refused at {every} gateway {plural} after {ms} ms"
    waiting = ", ".join(p["name"] for p in receipt["pending"])
    return (f"Refused at {confirmed} of {processes} gateway {plural} after {ms} ms; "
            f"not confirmed yet: {waiting}")


def _receipt_facts(receipt: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [("Receipt", receipt_line(receipt))]
    if receipt["gone"]:
        facts.append(("Gone", ", ".join(
            f"{p['name']} (last heartbeat {_when(p['last_heartbeat'])})" for p in receipt["gone"]
        )))
    return facts


def _confirmed(receipt: dict[str, Any]) -> bool:
    return bool(receipt["confirmed"] == receipt["processes"])


def _print(value: object, out: TextIO) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _revoke(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    """``keys revoke``; with ``--wait``, a revoked key's 409 still prints its receipt."""
    try:
        key = client.revoke_key(args.key_id, args.wait)
    except Refused as exc:
        receipt = exc.problem.get("propagation")
        if args.wait is None or not isinstance(receipt, dict):
            raise
        if args.json:
            _print(dict(exc.problem), out)
        else:
            _facts([("Key ID", args.key_id), ("Status", "already revoked"),
                    *_receipt_facts(receipt)], out)
        raise
    if args.json:
        _print(key, out)
    else:
        facts = _key_facts(key)
        if args.wait is not None:
            facts += _receipt_facts(key["propagation"])
        _facts(facts, out)
    if args.wait is not None and not _confirmed(key["propagation"]):
        return EXIT_UNCONFIRMED
    return EXIT_OK


def _run(client: ApiClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "audit":
        entries = client.audit(args.limit)
        if args.json:
            _print(entries, out)
            return EXIT_OK
        _table([(_when(e["at"]), f"{e['actor']} ({e['actor_type']})",
                 _ACTIONS.get(e["action"], e["action"]), e["key_id"] or e["token_id"] or "-")
                for e in entries], ("AT", "WHO", "WHAT", "KEY OR TOKEN"), out)
        return EXIT_OK
    verb = args.verb
    if verb == "list":
        keys = client.list_keys()
        if args.json:
            _print(keys, out)
            return EXIT_OK
        _table([(k["key_id"], k["name"], _state(k), _when(k["issued_at"])) for k in keys],
               ("KEY ID", "NAME", "STATUS", "ISSUED"), out)
        return EXIT_OK
    if verb == "revoke":
        return _revoke(client, args, out)
    if verb == "show":
        key = client.get_key(args.key_id)
        if args.json:
            _print(key, out)
        else:
            _facts(_key_facts(key), out)
        return EXIT_OK
    if verb == "issue":
        issued = client.issue_key(args.name)
        if args.json:
            _print(issued, out)
        else:
            _facts([*_key_facts(issued), ("Secret", issued["secret"])], out)
        err.write(_STORE_IT_NOW + "\n")
        return EXIT_OK
    rolled = client.roll_key(args.key_id, args.overlap)
    if args.json:
        _print(rolled, out)
    else:
        old = rolled["replaced_key"]
        _facts([*_key_facts(rolled), ("Secret", rolled["secret"]),
                ("Old key", f"{old['key_id']} works until {_when(old['revokes_at'])}")], out)
    err.write(_STORE_IT_NOW + "\n")
    return EXIT_OK


def run_remote(args: argparse.Namespace, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr) -> int:
    """Run one ``keys`` or ``audit`` command; the exit status."""
    try:
        config = load_client_config(url=args.url, token=args.token)
    except ConfigError as exc:
        err.write(f"key_service: error: {exc}\n")
        return EXIT_USAGE
    client = ApiClient(config.url, config.token)
    try:
        return _run(client, args, out, err)
    except Refused as exc:
        err.write(f"key_service: error: {exc}\n")
        return EXIT_REFUSED
    except Unreachable as exc:
        err.write(f"key_service: error: {exc}\n")
        return EXIT_UNREACHABLE
