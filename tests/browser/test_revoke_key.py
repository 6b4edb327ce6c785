"""The seed's "Revoke a Key" procedure, step by step, and the ways out of the Revoke window."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .support import (
    ADMIN,
    PERMANENT,
    REVOKE,
    RunningKeyService,
    cell,
    expect_login_page,
    fill_login,
    focused,
    log_in,
    open_manage_api_keys,
    row_for,
    rows,
    screenshot,
    tab_to,
    tab_to_locator,
    today_en_us,
)


def test_revoke_a_key(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    target = api.issue("Legacy importer")
    newer = api.issue("Billing service (production)")
    newest = api.issue("Reporting exporter")
    calls: list[tuple[str, str | None]] = []
    page.on("request", lambda r: calls.append((r.url, r.headers.get("x-csrf-token")))
            if r.method == "POST" else None)
    log_in(page, key_service.base_url)

    # 1. Select Settings from the sidebar. 2. Select Manage API Keys from the Settings list.
    open_manage_api_keys(page, key_service.base_url)

    # 3. From your list of keys, identify the key you wish to revoke.
    row = row_for(page, target["key_id"])
    expect(cell(row, "Key Name")).to_have_text("Legacy importer")
    assert rows(page).last.get_attribute("data-key-id") == target["key_id"]

    # 4. In the Revoke This Key column, select Revoke.
    cell(row, "Revoke This Key").get_by_role("button", name=REVOKE).click()

    # 5. The Revoke window shows the key name and key ID, and that revoking is permanent.
    dialog = page.get_by_role("dialog", name="Revoke")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#revoke-name")).to_have_text("Legacy importer")
    expect(dialog.locator("#revoke-id")).to_have_text(target["key_id"])
    expect(dialog).to_contain_text(PERMANENT)
    screenshot(page, "revoke-dialog")

    # 6. Select Confirm to revoke the key.
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()

    # 7. The page refreshes: the revoked key is at the bottom, Revoked On shows today's date.
    expect(page.locator("#status")).to_have_text("Key “Legacy importer” revoked.")
    expect(rows(page).last).to_have_attribute("data-key-id", target["key_id"])
    expect(cell(rows(page).last, "Revoked On")).to_have_text(today_en_us())
    expect(rows(page).last.get_by_role("button")).to_have_count(0)
    order = [rows(page).nth(i).get_attribute("data-key-id") for i in range(3)]
    assert order == [newest["key_id"], newer["key_id"], target["key_id"]]
    states = {k["key_id"]: k["status"] for k in api.list_keys()}
    assert states == {target["key_id"]: "revoked", newer["key_id"]: "active",
                      newest["key_id"]: "active"}

    # A second revocation moves that key to the very bottom, below the first.
    row_for(page, newest["key_id"]).get_by_role("button", name=REVOKE).click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(rows(page).last).to_have_attribute("data-key-id", newest["key_id"])
    expect(rows(page).first).to_have_attribute("data-key-id", newer["key_id"])
    expect(page.get_by_role("button", name="Revoke")).to_have_count(1)

    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    revokes = [t for url, t in calls if "/revoke" in url]
    assert revokes == [token, token]


def test_a_revoked_key_has_no_revoke_button(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    live = api.issue("still live")
    dead = api.issue("already revoked")
    api.revoke(dead["key_id"])
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(row_for(page, live["key_id"]).get_by_role("button", name=REVOKE)).to_have_count(1)
    expect(row_for(page, dead["key_id"]).get_by_role("button")).to_have_count(0)
    expect(cell(row_for(page, dead["key_id"]), "Revoked On")).not_to_have_text("Active")


def test_cancel_and_escape_revoke_nothing(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    key = api.issue("keep me")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    button = row_for(page, key["key_id"]).get_by_role("button", name=REVOKE)
    dialog = page.get_by_role("dialog", name="Revoke")

    button.click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()

    button.click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    assert [k["status"] for k in api.list_keys()] == ["active"]
    expect(cell(row_for(page, key["key_id"]), "Revoked On")).to_have_text("Active")


def test_revoke_with_the_keyboard_alone(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    target = api.issue("revoke by keyboard")
    api.issue("newer key")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    tab_to_locator(page, row_for(page, target["key_id"]).get_by_role("button", name=REVOKE))
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Revoke")
    expect(dialog).to_be_visible()
    # The safe choice has focus first; Tab cycles inside the dialog.
    assert focused(page) == "revoke-cancel"
    for key in ["Tab"] * 3 + ["Shift+Tab"] * 3:
        page.keyboard.press(key)
        assert page.evaluate("() => document.getElementById('revoke-dialog')"
                             ".contains(document.activeElement)")
    tab_to(page, "revoke-confirm")
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(rows(page).last).to_have_attribute("data-key-id", target["key_id"])
    expect(cell(rows(page).last, "Revoked On")).to_have_text(today_en_us())
    assert focused(page) == "issue-open"
    assert {k["key_id"]: k["status"] for k in api.list_keys()}[target["key_id"]] == "revoked"


def test_a_key_revoked_elsewhere_meanwhile_is_reported(
    page: Page, key_service: RunningKeyService
) -> None:
    api = key_service.admin_api()
    key = api.issue("raced")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    row_for(page, key["key_id"]).get_by_role("button", name=REVOKE).click()
    api.revoke(key["key_id"])
    page.get_by_role("dialog", name="Revoke").get_by_role("button", name="Confirm").click()
    expect(page.locator("#status")).to_have_text("Key “raced” was already revoked.")
    expect(row_for(page, key["key_id"]).get_by_role("button")).to_have_count(0)


def test_an_expired_session_logs_in_again_and_keeps_the_revoke_window(
    page: Page, key_service: RunningKeyService
) -> None:
    api = key_service.admin_api()
    key = api.issue("revoke after re-login")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    row_for(page, key["key_id"]).get_by_role("button", name=REVOKE).click()

    cookie = next(c for c in page.context.cookies() if c["name"] == "ks_session")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    api.end_session(f"ks_session={cookie['value']}", token)
    page.get_by_role("dialog", name="Revoke").get_by_role("button", name="Confirm").click()

    expect_login_page(page, key_service.base_url,
                      {"next": "/backoffice/settings/api-keys", "reason": "expired"})
    fill_login(page, ADMIN)
    dialog = page.get_by_role("dialog", name="Revoke")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#revoke-id")).to_have_text(key["key_id"])
    assert [k["status"] for k in api.list_keys()] == ["active"]
    dialog.get_by_role("button", name="Confirm").click()
    expect(cell(row_for(page, key["key_id"]), "Revoked On")).to_have_text(today_en_us())
    assert [k["status"] for k in api.list_keys()] == ["revoked"]
