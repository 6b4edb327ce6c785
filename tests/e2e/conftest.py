"""Fixtures of the end-to-end suite: the whole stack as subprocesses, and sessions to drive it.

One stack serves every test of a module (starting it costs seconds); every test issues keys of
its own, and a test that injects faults ends them afterwards, whatever happened. A module may set
``STACK_OPTIONS`` to shape its stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support.services import RABBITMQ, REDIS, require
from tests.support.stack import Admin, Stack, StackOptions, clean_up_after, new_stack


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """key_service, the demo backend and two gateway processes, isolated to this module."""
    require(REDIS)
    require(RABBITMQ)
    options: StackOptions = getattr(request.module, "STACK_OPTIONS", StackOptions())
    running = new_stack(tmp_path_factory.mktemp("stack"), options)
    try:
        with running:
            yield running
    finally:
        clean_up_after(running)


@pytest.fixture
def faults(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stack, with every injected fault ended after the test (and its logs on failure)."""
    try:
        yield stack
    finally:
        stack.restore_all()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(stack.logs())


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[Admin]:
    """The stack's administrator, logged in to key_service directly (its own cookie jar)."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=15, connect=5),
    ) as session:
        yield await Admin(session, stack.key_service_url).login()
