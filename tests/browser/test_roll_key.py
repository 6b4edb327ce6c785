"""Rolling a key in the page: Roll beside Revoke, the overlap dialog, the New API Key Created
window for the replacement, and "Revokes on <date>" on the old key until its overlap ends."""

from __future__ import annotations

from datetime import datetime, timedelta

from playwright.sync_api import Page, expect

from .support import (
    NEVER_AGAIN,
    REVOKE,
    ROLL,
    SECRET_RE,
    RunningKeyService,
    cell,
    en_us_time,
    focused,
    log_in,
    open_manage_api_keys,
    page_holds,
    row_for,
    rows,
    screenshot,
    tab_to,
    tab_to_locator,
    today_en_us,
)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _text(page: Page, selector: str) -> str:
    # Chromium writes a narrow no-break space before AM/PM.
    return page.locator(selector).inner_text().replace("\u202f", " ").strip()


def test_roll_a_key(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    old = api.issue("Billing service (production)")
    other = api.issue("Reporting exporter")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    # Roll sits beside Revoke in the row of every active key.
    row = row_for(page, old["key_id"])
    expect(cell(row, "Revoke This Key").get_by_role("button", name=ROLL)).to_be_visible()
    expect(cell(row, "Revoke This Key").get_by_role("button", name=REVOKE)).to_be_visible()
    row.get_by_role("button", name=ROLL).click()

    dialog = page.get_by_role("dialog", name="Roll Key")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#roll-name")).to_have_text("Billing service (production)")
    expect(dialog.locator("#roll-id")).to_have_text(old["key_id"])
    choices = dialog.get_by_role("radiogroup", name="Keep this key working for")
    for label in ("1 hour", "24 hours", "7 days"):
        expect(choices.get_by_role("radio", name=label)).to_be_visible()
    expect(choices.get_by_role("radio", name="24 hours")).to_be_checked()
    choices.get_by_role("radio", name="7 days").check()
    screenshot(page, "roll-dialog")
    dialog.get_by_role("button", name="Roll Key").click()

    # The same New API Key Created window, for the replacement: same name, a new ID and secret.
    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    expect(dialog).to_be_hidden()
    secret = created.locator("#created-secret").inner_text()
    assert SECRET_RE.fullmatch(secret), secret
    new_id = created.locator("#created-id").inner_text()
    assert new_id != old["key_id"]
    expect(created.locator("#created-name")).to_have_text("Billing service (production)")
    expect(created).to_contain_text(NEVER_AGAIN)
    stored = api.get_key(old["key_id"])
    assert _time(stored["revokes_at"]) - _time(api.get_key(new_id)["issued_at"]) \
        == timedelta(days=7)
    assert _text(page, "#created-rolled") == (
        f"The old key keeps working until {en_us_time(stored['revokes_at'])}, then it is revoked."
    )
    screenshot(page, "rolled-key-created-dialog")
    created.get_by_role("button", name="Confirm").click()
    expect(created).to_be_hidden()

    # The replacement is at the top; the old key says when it will be revoked, and can only be
    # revoked early now (a key is rolled once).
    expect(page.locator("#status")).to_have_text("Key “Billing service (production)” rolled.")
    order = [rows(page).nth(i).get_attribute("data-key-id") for i in range(3)]
    assert order == [new_id, other["key_id"], old["key_id"]]
    revoked_on = f'#keys-body tr[data-key-id="{old["key_id"]}"] td[data-label="Revoked On"]'
    assert _text(page, revoked_on) == f"Revokes on {en_us_time(stored['revokes_at'])}"
    expect(row.get_by_role("button", name=ROLL)).to_have_count(0)
    expect(row.get_by_role("button", name=REVOKE)).to_be_visible()
    expect(cell(row_for(page, new_id), "Revoked On")).to_have_text("Active")
    assert page_holds(page, secret) == []
    screenshot(page, "keys-list-rolled")


def test_roll_with_the_keyboard_alone(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    old = api.issue("rolled by keyboard")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    tab_to_locator(page, row_for(page, old["key_id"]).get_by_role("button", name=ROLL))
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Roll Key")
    expect(dialog).to_be_visible()
    # The chosen overlap has focus; the arrow keys move through the choices.
    assert page.evaluate("() => document.activeElement.value") == "86400"
    page.keyboard.press("ArrowUp")
    expect(dialog.get_by_role("radio", name="1 hour")).to_be_checked()
    for key in ["Tab"] * 4 + ["Shift+Tab"] * 4:
        page.keyboard.press(key)
        assert page.evaluate("() => document.getElementById('roll-dialog')"
                             ".contains(document.activeElement)")
    tab_to(page, "roll-submit")
    page.keyboard.press("Enter")

    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    assert focused(page) == "copy-secret"
    page.keyboard.press("Escape")  # never throws the secret away
    expect(created).to_be_visible()
    tab_to(page, "created-confirm")
    page.keyboard.press("Enter")
    expect(created).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Key “rolled by keyboard” rolled.")
    assert focused(page) == "issue-open"
    stored = api.get_key(old["key_id"])
    new = api.get_key(stored["replaced_by"])
    assert _time(stored["revokes_at"]) - _time(new["issued_at"]) == timedelta(hours=1)


def test_cancel_and_escape_roll_nothing(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    key = api.issue("keep as it is")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    button = row_for(page, key["key_id"]).get_by_role("button", name=ROLL)
    dialog = page.get_by_role("dialog", name="Roll Key")

    button.click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    button.click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    assert [(k["key_id"], k["revokes_at"]) for k in api.list_keys()] == [(key["key_id"], None)]


def test_a_key_rolled_elsewhere_meanwhile_is_reported(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    key = api.issue("raced roll")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    row_for(page, key["key_id"]).get_by_role("button", name=ROLL).click()
    api.roll(key["key_id"], 3600)
    page.get_by_role("dialog", name="Roll Key").get_by_role("button", name="Roll Key").click()
    expect(page.locator("#status")).to_contain_text("Key “raced roll” was not rolled:")
    expect(page.locator("#status")).to_contain_text("a key is rolled once")
    expect(page.get_by_role("dialog", name="New API Key Created")).to_be_hidden()
    expect(rows(page)).to_have_count(2)
    expect(row_for(page, key["key_id"]).get_by_role("button", name=ROLL)).to_have_count(0)


def test_revoke_early_and_the_end_of_the_overlap(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    early = api.issue("revoked before its overlap ended")
    api.roll(early["key_id"], 7 * 86400)
    ended = api.issue("overlap over")
    api.roll(ended["key_id"], 0)  # the scheduler revokes it at once
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    row = row_for(page, early["key_id"])
    expect(cell(row, "Revoked On")).to_contain_text("Revokes on")
    row.get_by_role("button", name=REVOKE).click()
    page.get_by_role("dialog", name="Revoke").get_by_role("button", name="Confirm").click()
    expect(cell(row_for(page, early["key_id"]), "Revoked On")).to_have_text(today_en_us())
    # The key whose overlap ended was revoked by key_service itself: a date, no buttons.
    expect(cell(row_for(page, ended["key_id"]), "Revoked On")).to_have_text(today_en_us())
    expect(row_for(page, ended["key_id"]).get_by_role("button")).to_have_count(0)
    assert api.get_key(ended["key_id"])["status"] == "revoked"
