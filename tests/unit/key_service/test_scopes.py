"""Reading the scopes asked for a new management token."""

from __future__ import annotations

import pytest

from key_service.errors import BadRequest
from key_service.scopes import AUDIT_READ, EVENTS_READ, KEYS_READ, KEYS_WRITE, SCOPES, parse_scopes


def test_the_four_scopes() -> None:
    assert SCOPES == ("keys:read", "keys:write", "audit:read", "events:read")
    assert (KEYS_READ, KEYS_WRITE, AUDIT_READ, EVENTS_READ) == SCOPES


def test_scopes_come_back_in_canonical_order() -> None:
    assert parse_scopes(["events:read", "keys:read"]) == ("keys:read", "events:read")
    assert parse_scopes(list(reversed(SCOPES))) == SCOPES


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "non-empty list"),
        ([], "non-empty list"),
        ("keys:read", "non-empty list"),
        ({"keys:read": True}, "non-empty list"),
        (["keys:admin"], "unknown scope 'keys:admin'"),
        (["KEYS:READ"], "unknown scope"),
        ([1], "unknown scope 1"),
        ([None], "unknown scope None"),
        (["keys:read", "keys:read"], "repeat"),
    ],
)
def test_bad_scopes_are_400_naming_the_field(value: object, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_scopes(value)
    assert refused.value.field == "scopes"
    assert says in refused.value.detail
