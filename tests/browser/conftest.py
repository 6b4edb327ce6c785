"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, against a real
key_service subprocess on its own SQLite database (no faked API anywhere).

The database with the two users is made once per run by the real CLI (``migrate``,
``create-admin``, ``create-user``) and copied for each test, so that every test starts from a clean
database without paying for the CLI each time.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    expect,
    sync_playwright,
)

from apikeys_shared.config import generate_secrets_env
from tests.conftest import AmqpNames
from tests.support.procs import ServiceProcess, free_port, wait_http
from tests.support.services import RABBITMQ, RABBITMQ_URL, require

from .support import ADMIN, VIEWER, RunningKeyService, run_async, run_cli

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this directory ``browser``, so ``-m "not browser"`` leaves them out."""
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.browser)


def _env_lines(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if line and not line.startswith("#"))


async def _delete_amqp(names: AmqpNames) -> None:
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=10)
    async with connection:
        channel = await connection.channel()
        for queue in names.queues:
            await channel.queue_delete(queue)
        await channel.exchange_delete(names.exchange)
        await channel.close()


@pytest.fixture
def amqp_isolated() -> Iterator[AmqpNames]:
    """Like the test bed's ``amqp_names``: own exchange and queue names, deleted afterwards."""
    require(RABBITMQ)
    prefix = f"t.{uuid.uuid4().hex[:12]}"
    names = AmqpNames(prefix=prefix, exchange=f"{prefix}.apikeys.events")
    yield names
    run_async(lambda: _delete_amqp(names))


@pytest.fixture(scope="session")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database holding an administrator and a viewer, made by the CLI."""
    data_dir = tmp_path_factory.mktemp("template_db")
    env = {
        **_env_lines(generate_secrets_env()),
        "KEY_SERVICE_DATA_DIR": str(data_dir),
        "KEY_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'keys.db'}",
    }
    run_cli(["migrate"], env)
    run_cli(["create-admin", "--username", ADMIN[0], "--password-stdin"], env, ADMIN[1] + "\n")
    run_cli(["create-user", "--username", VIEWER[0], "--role", "viewer", "--password-stdin"],
            env, VIEWER[1] + "\n")
    return data_dir / "keys.db"


@pytest.fixture
def key_service_env(tmp_path: Path, users_db: Path, secrets_env: dict[str, str],
                    amqp_isolated: AmqpNames) -> dict[str, str]:
    """Environment of this test's key_service: own database copy, secrets and exchange."""
    data_dir = tmp_path / "key_service"
    data_dir.mkdir()
    shutil.copyfile(users_db, data_dir / "keys.db")
    return {
        **secrets_env,
        "KEY_SERVICE_DATA_DIR": str(data_dir),
        "KEY_SERVICE_DATABASE_URL": f"sqlite+aiosqlite:///{data_dir / 'keys.db'}",
        "APIKEYS_EXCHANGE": amqp_isolated.exchange,
    }


@pytest.fixture
def key_service(tmp_path: Path, key_service_env: dict[str, str]) -> Iterator[RunningKeyService]:
    """A running key_service (``python -m key_service serve``) on a free port."""
    port = free_port()
    process = ServiceProcess(
        ["-m", "key_service", "serve", "--host", "127.0.0.1", "--port", str(port)],
        key_service_env, tmp_path / "key_service.log",
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(base_url + "/healthz", timeout=60)
        except TimeoutError as exc:
            raise AssertionError(f"key_service did not start:\n{process.output()}") from exc
        yield RunningKeyService(base_url, process, key_service_env)
    finally:
        process.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium (never a downloaded browser)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    # A shared, busy CI machine can be slow; these are bounds for waiting, not timing checks.
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser, key_service: RunningKeyService) -> Iterator[BrowserContext]:
    """A fresh browser profile: en-US at UTC, 1280x800, clipboard allowed for the service."""
    ctx = browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-US", timezone_id="UTC",
    )
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=key_service.base_url)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab; the test fails if the page threw or violated its Content-Security-Policy."""
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            problems.append(f"CSP: {message.text}")

    tab.on("console", on_console)
    yield tab
    assert problems == [], problems
