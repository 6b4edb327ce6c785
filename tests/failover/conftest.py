"""Fixtures of the failover tests: private clusters that lose a node, and the stack on them.

Every server started here is private (the machine's own PostgreSQL, Redis and RabbitMQ are used
only under names of the test's own, as in the rest of the suite) and listens on a fixed port in
25000-25999: the RabbitMQ cluster and the Redis Sentinel group are started once per session, a
PostgreSQL pair once per test (a failover uses it up). Each test prints its figures, and the
session's terminal summary repeats them under "failover figures".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.private_postgres import PostgresPair
from tests.support.private_rabbitmq import RabbitCluster
from tests.support.private_redis import SentinelGroup
from tests.support.services import RABBITMQ, REDIS, require
from tests.support.stack import Admin, Stack, StackOptions, clean_up_after, new_stack

RABBIT_PORTS = (25771, 25772, 25773)
RABBIT_DIST_PORTS = (25781, 25782, 25783)
RABBIT_CLI_PORTS = (25790, 25799)
REDIS_MASTER, REDIS_REPLICA = 25379, 25380
SENTINEL_PORTS = (25391, 25392, 25393)
# primary, standby, the standby's way to the primary; by synchronous or not
POSTGRES_PORTS = {True: (25432, 25433, 25434), False: (25442, 25443, 25444)}

_FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes in one cluster, for the session."""
    cluster = RabbitCluster(RABBIT_PORTS, RABBIT_DIST_PORTS, RABBIT_CLI_PORTS).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A Redis master, its replica and three Sentinels, for the session."""
    group = SentinelGroup(REDIS_MASTER, REDIS_REPLICA, SENTINEL_PORTS).start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def postgres_pair() -> Iterator[Callable[[bool], PostgresPair]]:
    """Factory: ``postgres_pair(synchronous)`` starts a primary and its standby."""
    pairs: list[PostgresPair] = []

    def make(synchronous: bool) -> PostgresPair:
        pair = PostgresPair(*POSTGRES_PORTS[synchronous], synchronous=synchronous)
        pairs.append(pair)
        return pair.start()

    yield make
    for pair in pairs:
        pair.stop()


@pytest.fixture
def make_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[StackOptions], Stack]]:
    """Factory: a started stack of the given shape; stopped after the test (its logs printed
    when the test failed), and what it left in the machine's Redis and RabbitMQ removed."""
    stacks: list[Stack] = []

    def make(options: StackOptions) -> Stack:
        if options.redis_url is None:
            require(REDIS)
        if options.rabbitmq_url is None:
            require(RABBITMQ)
        stack = new_stack(tmp_path_factory.mktemp("stack"), options)
        stacks.append(stack)
        return stack.start()

    yield make
    report = getattr(request.node, "report_call", None)
    for stack in stacks:
        if report is not None and report.failed:
            print(stack.logs())
        stack.stop()
        clean_up_after(stack)


@pytest.fixture
async def admin_session() -> AsyncIterator[Callable[[Stack], Any]]:
    """Factory: ``await admin_session(stack)`` logs in to the stack's key_service."""
    sessions: list[aiohttp.ClientSession] = []

    async def make(stack: Stack) -> Admin:
        session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=40, connect=5),
        )
        sessions.append(session)
        return await Admin(session, stack.key_service_url).login()

    yield make
    for session in sessions:
        await session.close()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, dict[str, object]], None]:
    """``figures(title, {name: value})`` prints a test's figures and keeps them for the
    session's summary."""
    def report(title: str, values: dict[str, object]) -> None:
        line = f"{title}: " + ", ".join(f"{name} {value}" for name, value in values.items())
        print(line)
        request.config.stash.setdefault(_FIGURES, []).append(line)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The figures of every failover test that ran."""
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.section("failover figures")
        for line in lines:
            terminalreporter.write_line(line)
