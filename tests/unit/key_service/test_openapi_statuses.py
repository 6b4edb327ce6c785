"""The OpenAPI document lists every status each operation can answer, by the rules the server
follows: the body limit and the database are everyone's, authentication is every secured one's."""

from __future__ import annotations

from typing import Any

import pytest

from key_service.openapi import OPENAPI

_METHODS = ("get", "post", "put", "patch", "delete")
# Operations that read nothing from the database.
_NO_DATABASE = {"listVerifyKeys"}


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, item[method]) for path, item in OPENAPI["paths"].items()
            for method in _METHODS if method in item]


@pytest.mark.parametrize(("path", "method", "operation"), _operations(),
                         ids=[op["operationId"] for _, _, op in _operations()])
def test_every_status_the_server_can_answer_is_listed(
    path: str, method: str, operation: dict[str, Any],
) -> None:
    statuses = set(operation["responses"])
    expected: set[str] = set()
    if operation["operationId"] not in _NO_DATABASE:
        expected.add("503")  # the database is away
    if method != "get":
        expected.add("413")  # any body over the limit, even where none is expected
    if "requestBody" in operation:
        expected |= {"400", "413", "415"}  # malformed JSON, too large, not JSON
    if operation["security"]:
        expected.add("401")
        # Everything but the session itself is for administrators (or a token's scope), and
        # every change needs the CSRF token: another role, a missing scope or token, a 403.
        csrf = any("csrfToken" in requirement for requirement in operation["security"])
        if csrf or not path.startswith("/api/v1/session"):
            expected.add("403")
    if "{key_id}" in path or "{token_id}" in path:
        expected.add("404")
    assert expected <= statuses, f"{operation['operationId']} lacks {sorted(expected - statuses)}"


def test_answers_naming_a_key_or_token_link_to_what_can_be_done_next() -> None:
    links = {op["operationId"]: set(op["responses"]["201"].get("links", {}))
             for _, _, op in _operations() if "201" in op["responses"]}
    assert links == {
        "issueKey": {"GetTheKey", "RollTheKey", "RevokeTheKey"},
        "rollKey": {"GetTheKey", "RollTheKey", "RevokeTheKey"},
        "createToken": {"RevokeTheToken"},
    }
