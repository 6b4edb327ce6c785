"""Who may see what: login, the System Administrator role, logging out, the page's headers."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .support import (
    ADMIN,
    REVOKE,
    ROLL,
    VIEWER,
    ApiClient,
    ApiError,
    RunningKeyService,
    cell,
    expect_login_page,
    fill_login,
    log_in,
    open_manage_api_keys,
    row_for,
    rows,
    screenshot,
)

KEYS_URL = "/backoffice/settings/api-keys"


def test_the_root_leads_to_login_and_back(page: Page, key_service: RunningKeyService) -> None:
    page.goto(key_service.base_url + "/")
    expect_login_page(page, key_service.base_url, {"next": "/backoffice/"})
    fill_login(page, ADMIN)
    expect(page).to_have_url(key_service.base_url + "/backoffice/")
    sidebar = page.get_by_role("navigation", name="Main")
    expect(sidebar.get_by_role("link", name="Settings")).to_be_visible()

    # A return path off the Backoffice is ignored: the login page is no open redirect.
    page.context.clear_cookies()
    page.goto(key_service.base_url + "/backoffice/login?next=//evil.example/backoffice/")
    fill_login(page, ADMIN)
    expect(page).to_have_url(key_service.base_url + "/backoffice/")


def test_the_keys_page_asks_for_login_and_returns(
    page: Page, key_service: RunningKeyService
) -> None:
    page.goto(key_service.base_url + KEYS_URL)
    expect_login_page(page, key_service.base_url, {"next": KEYS_URL})
    fill_login(page, ("ada.admin", "not the password at all"))
    expect(page.locator("#login-error")).to_have_text("Incorrect username or password.")
    expect(page.get_by_label("Password")).to_have_value("")
    fill_login(page, ADMIN)
    expect(page).to_have_url(key_service.base_url + KEYS_URL)


def test_a_non_administrator_is_refused(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url, VIEWER)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page).to_have_url(key_service.base_url + "/backoffice/settings")
    settings_list = page.get_by_role("navigation", name="Settings")
    expect(settings_list).to_contain_text("No settings are available to your role.")
    expect(page.get_by_role("link", name="Manage API Keys")).to_have_count(0)

    response = page.goto(key_service.base_url + KEYS_URL)
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", name="Access denied")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(
        "Manage API Keys is available to the System Administrator role only."
    )
    expect(page.get_by_role("button", name="Issue New Key")).to_have_count(0)
    # The API refuses the viewer too, so the page is not the only guard.
    viewer = ApiClient(key_service.base_url).login(*VIEWER)
    with pytest.raises(ApiError) as refused:
        viewer.issue("sneaky")
    assert refused.value.status == 403


def test_log_out(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    cookie = next(c for c in page.context.cookies() if c["name"] == "ks_session")
    page.get_by_role("button", name="Log out").click()
    expect_login_page(page, key_service.base_url, {"reason": "logged_out"})
    expect(page.locator("#login-notice")).to_have_text("You have been logged out.")
    assert [c for c in page.context.cookies() if c["name"] == "ks_session"] == []
    # The old session is dead on the server, not only forgotten by the browser.
    with pytest.raises(ApiError) as gone:
        ApiClient(key_service.base_url).session(cookie=f"ks_session={cookie['value']}")
    assert gone.value.status == 401
    page.goto(key_service.base_url + KEYS_URL)
    expect_login_page(page, key_service.base_url, {"next": KEYS_URL})


def test_pages_send_strict_security_headers(page: Page, key_service: RunningKeyService) -> None:
    for path in ("/backoffice/login", "/backoffice/static/keys.js"):
        response = page.goto(key_service.base_url + path)
        assert response is not None
        headers = response.headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
    log_in(page, key_service.base_url)
    response = page.goto(key_service.base_url + KEYS_URL)
    assert response is not None
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_a_375_pixel_wide_screen(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    old = api.issue("Partner integration with a rather long descriptive name for mobile")
    api.issue("X" * 100)
    page.set_viewport_size({"width": 375, "height": 740})
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    def no_sideways_scroll() -> None:
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, width

    no_sideways_scroll()
    screenshot(page, "keys-list-375px")
    page.get_by_role("button", name="Issue New Key").click()
    issue = page.get_by_role("dialog", name="Issue New Key")
    issue.get_by_label("Key name").fill("Phone-issued key")
    issue.get_by_role("button", name="Issue Key").click()
    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    box = created.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 375
    created.get_by_role("button", name="Confirm").click()
    expect(cell(rows(page).first, "Key Name")).to_have_text("Phone-issued key")

    revoke = row_for(page, old["key_id"]).get_by_role("button", name=REVOKE)
    revoke.scroll_into_view_if_needed()
    revoke.click()
    page.get_by_role("dialog", name="Revoke").get_by_role("button", name="Confirm").click()
    expect(rows(page).last).to_have_attribute("data-key-id", old["key_id"])
    no_sideways_scroll()

    # Rolling fits too: the overlap dialog, and "Revokes on" in the old key's card.
    rows(page).first.get_by_role("button", name=ROLL).click()
    roll = page.get_by_role("dialog", name="Roll Key")
    box = roll.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 375
    roll.get_by_role("button", name="Roll Key").click()
    page.get_by_role("dialog", name="New API Key Created").get_by_role(
        "button", name="Confirm").click()
    expect(cell(rows(page).nth(1), "Revoked On")).to_contain_text("Revokes on")
    no_sideways_scroll()
