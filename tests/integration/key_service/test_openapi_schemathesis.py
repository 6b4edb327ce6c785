"""schemathesis against the served OpenAPI document: no 5xx, no response outside the schema.

Each operation is run with positive and negative data, then the stateful phase follows the
document's links (issue a key, then get, roll or revoke it; create a token, then revoke it).

The service runs as ``python -m key_service serve`` on a real port; the run is logged in as an
administrator and sends the session's CSRF token, so it reaches every handler, not just 401s.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from key_service.db import create_engine, make_sessionmaker, migrate_async
from key_service.users import ADMIN_ROLE, create_user
from tests.conftest import AmqpNames
from tests.support.procs import ServiceProcess, free_port, wait_http

PASSWORD = "schemathesis password"
EXAMPLES = 15
STATUSES: list[int] = []
# Operations that take no input at all (no parameter, body or credential): there is nothing to
# send wrong, so they have no negative cases.
WITHOUT_INPUT = {"GET /api/v1/verify-keys"}
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance,
    response_schema_conformance,
]


async def _prepare(url: str) -> None:
    await migrate_async(url)
    engine = create_engine(url)
    try:
        await create_user(make_sessionmaker(engine), "admin", PASSWORD, ADMIN_ROLE)
    finally:
        await engine.dispose()


def _as_the_session(case: schemathesis.Case) -> None:
    """The run's own session and CSRF token, not generated ones (cookie, CSRF header, bearer
    token): the point is to reach the handlers as the administrator (authentication is tested
    on its own, route by route)."""
    case.cookies = {}
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items()
                        if k.lower() not in ("x-csrf-token", "authorization")}


def _run(strategy: st.SearchStrategy[schemathesis.Case], base: str, http: requests.Session,
         csrf: str) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        _as_the_session(case)
        response = case.call(base_url=base, session=http, headers={"X-CSRF-Token": csrf},
                             timeout=10)
        STATUSES.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    check()


# Calls along links that only a link can make succeed: a random key or token ID is a 404.
LINKED: list[tuple[str, int]] = []


def _run_stateful(schema: schemathesis.BaseSchema, base: str, http: requests.Session,
                  csrf: str) -> None:
    """The stateful phase: sequences of calls following the document's links (issue a key, then
    get, roll or revoke that key; create a token, then revoke it)."""

    class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            _as_the_session(case)
            return {"base_url": base, "session": http, "headers": {"X-CSRF-Token": csrf},
                    "timeout": 10}

        def validate_response(self, response: Any, case: schemathesis.Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            STATUSES.append(response.status_code)
            if case.operation.path in ("/api/v1/keys/{key_id}/revoke",
                                       "/api/v1/keys/{key_id}/roll",
                                       "/api/v1/tokens/{token_id}/revoke"):
                LINKED.append((case.operation.path, response.status_code))
            case.validate_response(response, checks=CHECKS)

    # Derandomised: whether a random walk happens to issue a token and then revoke it must not
    # depend on the run (it did, about one run in three); every link is still walked.
    Scenarios.run(settings=settings(
        max_examples=2 * EXAMPLES, stateful_step_count=6, deadline=None, database=None,
        derandomize=True, suppress_health_check=list(HealthCheck)))


def test_the_api_keeps_to_its_openapi_document(
    secrets_env: dict[str, str], tmp_path: Path, amqp_names: AmqpNames,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    asyncio.run(_prepare(url))
    port = free_port()
    env = {**secrets_env, "KEY_SERVICE_DATABASE_URL": url, "KEY_SERVICE_PORT": str(port),
           "KEY_SERVICE_DATA_DIR": str(tmp_path), "APIKEYS_EXCHANGE": amqp_names.exchange}
    server = ServiceProcess(["-m", "key_service", "serve"], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz")
        with requests.Session() as http:
            resp = http.post(f"{base}/api/v1/session",
                             json={"username": "admin", "password": PASSWORD}, timeout=10)
            assert resp.status_code == 200
            csrf = resp.json()["csrf_token"]
            schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
            operations = [r.ok() for r in schema.get_all_operations()]
            # Logging out would end the run's session; logout is tested on its own elsewhere.
            operations = [op for op in operations if op.method.upper() != "DELETE"]
            assert len(operations) == 14
            for op in operations:
                modes = [GenerationMode.POSITIVE]
                if op.label not in WITHOUT_INPUT:
                    modes.append(GenerationMode.NEGATIVE)
                for mode in modes:
                    _run(op.as_strategy(generation_mode=mode), base, http, csrf)
            # Logging out would end the run's session (as above).
            _run_stateful(schema.exclude(method="DELETE"), base, http, csrf)
            # The links were followed: a key issued was revoked or rolled, a token revoked.
            assert {path for path, status in LINKED if status in (200, 201)} >= {
                "/api/v1/keys/{key_id}/revoke", "/api/v1/tokens/{token_id}/revoke"}, LINKED
            # The session survived the run: everything above ran as the administrator.
            assert http.get(f"{base}/api/v1/session", timeout=10).status_code == 200
            # ...and it reached the handlers: successes and their refusals alike.
            assert {200, 201, 400, 404} <= set(STATUSES), sorted(set(STATUSES))
    finally:
        code = server.stop()
    output = server.log_path.read_text(errors="replace")
    assert "Traceback" not in output, output[-3000:]
    # Every line the service wrote is one JSON object; access lines carry request IDs.
    lines = [json.loads(line) for line in output.split("\n") if line.strip()]
    access = [line for line in lines if line.get("logger") == "key_service.access"]
    assert len(access) >= len(STATUSES)
    assert all(line["request_id"] for line in access)
    assert csrf not in output
    assert code == 0 or code == -15, output[-3000:]
