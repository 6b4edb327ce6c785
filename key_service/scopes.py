"""What a management token may do: its scopes, and reading a requested set of them.

A scope names a group of routes, not a single one, so that a token made today keeps working when
a route is added to its group. An administrator's session holds every scope; a token holds the
ones it was created with, for ever (a token's scopes cannot be widened: create another token).
"""

from __future__ import annotations

from typing import Final

from .errors import BadRequest

__all__ = [
    "AUDIT_READ",
    "EVENTS_READ",
    "KEYS_READ",
    "KEYS_WRITE",
    "SCOPES",
    "SCOPE_HELP",
    "parse_scopes",
]

KEYS_READ: Final = "keys:read"
KEYS_WRITE: Final = "keys:write"
AUDIT_READ: Final = "audit:read"
EVENTS_READ: Final = "events:read"

# In the order the page and the documentation list them.
SCOPE_HELP: Final[dict[str, str]] = {
    KEYS_READ: "list keys and read one key",
    KEYS_WRITE: "issue, roll and revoke keys",
    AUDIT_READ: "read the audit log",
    EVENTS_READ: "read the key event feed for subscribers (without secret hashes)",
}
SCOPES: Final[tuple[str, ...]] = tuple(SCOPE_HELP)


def parse_scopes(value: object) -> tuple[str, ...]:
    """A non-empty JSON list of known scopes, each once; BadRequest naming ``scopes`` otherwise.

    Returned in the canonical order of SCOPES, whatever order they were asked in.
    """
    if not isinstance(value, list) or not value:
        raise BadRequest(
            f"scopes must be a non-empty list drawn from {', '.join(SCOPES)}", field="scopes"
        )
    for item in value:
        if not isinstance(item, str) or item not in SCOPE_HELP:
            shown = repr(item)[:40]
            raise BadRequest(
                f"unknown scope {shown}; the scopes are {', '.join(SCOPES)}", field="scopes"
            )
    if len(set(value)) != len(value):
        raise BadRequest("scopes must not repeat a scope", field="scopes")
    return tuple(s for s in SCOPES if s in value)
