"""After Revoke, the page says where the key is refused: the receipt from real gateway processes.

The whole product runs as subprocesses (key_service, the demo backend and two gateway processes,
with their own exchange and Redis prefix); the administrator works only through the browser.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from apikeys_shared.config import generate_secrets
from tests.support.services import RABBITMQ, REDIS, delete_exchange, delete_redis_prefix, require
from tests.support.stack import ADMIN_PASSWORD, ADMIN_USER, Stack, StackOptions

from .support import REVOKE, fill_login, open_manage_api_keys, row_for, rows, run_async


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """key_service, the demo backend and two gateway processes, isolated to this test."""
    require(REDIS)
    require(RABBITMQ)
    tag = uuid.uuid4().hex[:12]
    running = Stack(
        tmp_path, generate_secrets(), exchange=f"t.{tag}.apikeys.events",
        redis_prefix=f"t:{tag}:", queue_prefix=f"t.{tag}",
        options=StackOptions(gateways=2, extra_gateway_env={"GATEWAY_HEARTBEAT_INTERVAL": "0.5"}),
    )
    try:
        with running:
            yield running
    finally:
        delete_redis_prefix(running.redis_prefix)
        run_async(lambda: delete_exchange(running.exchange))


@pytest.fixture
def stack_page(browser: Browser, stack: Stack) -> Iterator[Page]:
    """A tab on the stack's key_service, logged in, on Manage API Keys."""
    ctx = browser.new_context(locale="en-US", timezone_id="UTC")
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        page.goto(stack.key_service_url + "/backoffice/login")
        fill_login(page, (ADMIN_USER, ADMIN_PASSWORD))
        open_manage_api_keys(page, stack.key_service_url)
        yield page
    finally:
        ctx.close()


def _issue(page: Page, name: str) -> tuple[str, str]:
    page.get_by_role("button", name="Issue New Key").click()
    page.get_by_label("Key name").fill(name)
    page.get_by_role("button", name="Issue Key").click()
    created = page.get_by_role("dialog", name="New API Key Created")
    key_id = created.locator("#created-id").inner_text()
    secret = created.locator("#created-secret").inner_text()
    created.get_by_role("button", name="Confirm").click()
    expect(rows(page).first).to_have_attribute("data-key-id", key_id)
    return key_id, secret


def _status_at(url: str, key_id: str, secret: str) -> int:
    request = urllib.request.Request(url + "/api/orders", headers={
        "X-AuthenticationKeyId": key_id, "X-AuthenticationKeyValue": secret,
    })
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def _revoke(page: Page, key_id: str) -> None:
    row_for(page, key_id).get_by_role("button", name=REVOKE).click()
    page.get_by_role("dialog", name="Revoke").get_by_role("button", name="Confirm").click()


def test_the_page_says_the_key_is_refused_at_every_gateway_process(
    stack_page: Page, stack: Stack,
) -> None:
    page = stack_page
    key_id, secret = _issue(page, "Orders client")
    for url in stack.gateway_urls:
        assert _status_at(url, key_id, secret) == 200
    _revoke(page, key_id)
    expect(page.locator("#status")).to_have_text(re.compile(
        r"^Key “Orders client” revoked\. Refused at all 2 gateway processes after \d+ ms\.$"
    ))
    # The receipt is the promise: refused everywhere from now on, no polling needed.
    for url in stack.gateway_urls:
        assert _status_at(url, key_id, secret) == 401


def test_the_page_names_a_gateway_process_that_has_not_confirmed(
    stack_page: Page, stack: Stack,
) -> None:
    page = stack_page
    key_id, _ = _issue(page, "Reports client")
    stopped = stack.gateway_procs[1].proc.pid
    # Frozen: it neither applies the event nor sends heartbeats, but its last heartbeat is
    # recent, so it is live and pending until the page's wait runs out.
    os.killpg(stopped, signal.SIGSTOP)
    try:
        _revoke(page, key_id)
        expect(page.locator("#status")).to_have_text(re.compile(
            r"^Key “Reports client” revoked\. Refused at 1 of 2 gateway processes after \d+ ms; "
            rf"not confirmed yet: [^ ]+:{stopped}\.$"
        ))
    finally:
        os.killpg(stopped, signal.SIGCONT)
