"""The Management Tokens page: issue a token with a name and scopes (shown once), the list,
revoking; with the mouse and with the keyboard alone."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from .support import (
    VIEWER,
    ApiError,
    RunningKeyService,
    focused,
    log_in,
    open_settings,
    page_holds,
    screenshot,
    tab_to,
    tab_to_locator,
    today_en_us,
)

TOKENS_URL = "/backoffice/settings/tokens"
TOKEN_RE = re.compile(r"ksmt_[0-9a-f]{32}_[0-9A-Za-z]{49}")
REVOKE_TOKEN = re.compile(r"^Revoke token ")


def open_tokens(page: Page, base_url: str) -> None:
    """Settings in the sidebar, then Management Tokens."""
    open_settings(page, base_url, "Management Tokens", TOKENS_URL, "#tokens")


def token_row(page: Page, token_id: str) -> Locator:
    """The table row of one token."""
    return page.locator(f'#tokens-body tr[data-token-id="{token_id}"]')


def test_issue_a_management_token(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    log_in(page, key_service.base_url)
    open_tokens(page, key_service.base_url)
    expect(page.locator("#tokens-body")).to_contain_text("No tokens yet.")

    page.get_by_role("button", name="Issue New Token").click()
    dialog = page.get_by_role("dialog", name="Issue New Token")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Token name").fill("Deploy pipeline (production)")
    scopes = dialog.get_by_role("group", name="Scopes")
    # keys:read is offered checked; each scope says what it allows.
    expect(scopes.get_by_role("checkbox", name="keys:read")).to_be_checked()
    expect(scopes).to_contain_text("issue, roll and revoke keys")
    scopes.get_by_role("checkbox", name="keys:write").check()
    screenshot(page, "issue-new-token-dialog")
    dialog.get_by_role("button", name="Issue Token").click()

    created = page.get_by_role("dialog", name="New Management Token Created")
    expect(created).to_be_visible()
    token = created.locator("#token-created-secret").inner_text()
    assert TOKEN_RE.fullmatch(token), token
    token_id = created.locator("#token-created-id").inner_text()
    expect(created.locator("#token-created-name")).to_have_text("Deploy pipeline (production)")
    expect(created.locator("#token-created-scopes")).to_have_text("keys:read, keys:write")
    expect(created).to_contain_text("The token will never be shown again")
    created.get_by_role("button", name="Copy").click()
    expect(created.locator("#token-copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("() => navigator.clipboard.readText()") == token
    screenshot(page, "new-management-token-created-dialog")
    page.keyboard.press("Escape")  # only Confirm closes it
    expect(created).to_be_visible()
    created.get_by_role("button", name="Confirm").click()
    expect(created).to_be_hidden()

    expect(page.locator("#status")).to_have_text("Token “Deploy pipeline (production)” issued.")
    row = token_row(page, token_id)
    expect(row.locator('td[data-label="Token Name"]')).to_have_text("Deploy pipeline (production)")
    expect(row.locator('td[data-label="Scopes"]')).to_have_text("keys:read keys:write")
    expect(row.locator('td[data-label="Issued On"]')).to_have_text(today_en_us())
    expect(row.locator('td[data-label="Revoked On"]')).to_have_text("Active")
    assert page_holds(page, token) == []
    screenshot(page, "tokens-list")

    # The token works, within its scopes, with no session and no CSRF token.
    issued = api.with_token("POST", "/api/v1/keys", token, {"name": "made by the pipeline"})
    assert issued["name"] == "made by the pipeline"
    with pytest.raises(ApiError) as refused:
        api.with_token("GET", "/api/v1/audit", token)
    assert refused.value.status == 403
    assert "audit:read" in refused.value.body


def test_name_and_scopes_are_required(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url)
    open_tokens(page, key_service.base_url)
    page.get_by_role("button", name="Issue New Token").click()
    dialog = page.get_by_role("dialog", name="Issue New Token")
    dialog.get_by_role("button", name="Issue Token").click()
    expect(dialog.locator("#token-name-error")).to_have_text("Enter a token name.")
    assert focused(page) == "token-name"
    dialog.get_by_label("Token name").fill("no scopes at all")
    dialog.get_by_role("checkbox", name="keys:read").uncheck()
    dialog.get_by_role("button", name="Issue Token").click()
    expect(dialog.locator("#token-scopes-error")).to_have_text("Choose at least one scope.")
    expect(dialog.locator("#token-name-error")).to_be_hidden()
    dialog.get_by_role("button", name="Nevermind").click()
    expect(dialog).to_be_hidden()
    assert key_service.admin_api().list_tokens() == []


def test_revoke_a_token(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    doomed = api.create_token("Old CI job", ["keys:read"])
    kept = api.create_token("Current CI job", ["keys:read"])
    log_in(page, key_service.base_url)
    open_tokens(page, key_service.base_url)
    token_row(page, doomed["token_id"]).get_by_role("button", name=REVOKE_TOKEN).click()
    dialog = page.get_by_role("dialog", name="Revoke Token")
    expect(dialog.locator("#token-revoke-name")).to_have_text("Old CI job")
    expect(dialog.locator("#token-revoke-id")).to_have_text(doomed["token_id"])
    expect(dialog).to_contain_text("Revoking a token is permanent")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#status")).to_have_text("Token “Old CI job” revoked.")
    rows = page.locator("#tokens-body tr[data-token-id]")
    expect(rows.last).to_have_attribute("data-token-id", doomed["token_id"])
    expect(rows.first).to_have_attribute("data-token-id", kept["token_id"])
    expect(rows.last.locator('td[data-label="Revoked On"]')).to_have_text(today_en_us())
    expect(rows.last.get_by_role("button")).to_have_count(0)
    with pytest.raises(ApiError) as refused:
        api.with_token("GET", "/api/v1/keys", doomed["token"])
    assert refused.value.status == 401
    assert api.with_token("GET", "/api/v1/keys", kept["token"])["items"] == []


def test_tokens_with_the_keyboard_alone(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    log_in(page, key_service.base_url)
    open_tokens(page, key_service.base_url)

    tab_to(page, "token-open")
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Issue New Token")
    expect(dialog).to_be_visible()
    assert focused(page) == "token-name"
    page.keyboard.type("Terraform")
    # Tab through the scopes: Space toggles one.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.value") == "keys:read"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.value") == "audit:read"
    page.keyboard.press("Space")
    for key in ["Tab"] * 6 + ["Shift+Tab"] * 6:
        page.keyboard.press(key)
        assert page.evaluate("() => document.getElementById('token-dialog')"
                             ".contains(document.activeElement)")
    tab_to(page, "token-submit")
    page.keyboard.press("Enter")
    created = page.get_by_role("dialog", name="New Management Token Created")
    expect(created).to_be_visible()
    assert focused(page) == "token-copy"
    tab_to(page, "token-created-confirm")
    page.keyboard.press("Enter")
    expect(created).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Token “Terraform” issued.")
    assert focused(page) == "token-open"
    [made] = api.list_tokens()
    assert (made["name"], made["scopes"]) == ("Terraform", ["keys:read", "audit:read"])

    revoke = token_row(page, made["token_id"]).get_by_role("button", name=REVOKE_TOKEN)
    tab_to_locator(page, revoke)
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="Revoke Token")).to_be_visible()
    assert focused(page) == "token-revoke-cancel"
    tab_to(page, "token-revoke-confirm")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Token “Terraform” revoked.")
    assert focused(page) == "token-open"
    assert [t["status"] for t in api.list_tokens()] == ["revoked"]


@pytest.mark.parametrize(("path", "title"), [
    (TOKENS_URL, "Management Tokens"), ("/backoffice/settings/audit", "Audit Log"),
])
def test_a_non_administrator_is_refused(
    page: Page, key_service: RunningKeyService, path: str, title: str,
) -> None:
    log_in(page, key_service.base_url, VIEWER)
    expect(page.get_by_role("link", name=title)).to_have_count(0)
    response = page.goto(key_service.base_url + path)
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text(
        f"{title} is available to the System Administrator role only."
    )
