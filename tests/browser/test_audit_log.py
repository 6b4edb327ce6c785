"""The Audit Log page: who (a person, a token, key_service), what, which key, when; newest first,
a page at a time; with the mouse and with the keyboard alone."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .support import (
    ADMIN,
    RunningKeyService,
    focused,
    log_in,
    open_settings,
    screenshot,
    tab_to,
)

AUDIT_URL = "/backoffice/settings/audit"
COLUMNS = ["When", "Who", "What", "Key or Token"]


def open_audit(page: Page, base_url: str) -> None:
    """Settings in the sidebar, then Audit Log."""
    open_settings(page, base_url, "Audit Log", AUDIT_URL, "#audit")


def table(page: Page) -> list[dict[str, str]]:
    """The visible rows as the user reads them."""
    rows = page.locator("#audit-body tr[data-audit-id]")
    return [
        {c: rows.nth(i).locator(f'td[data-label="{c}"]').inner_text().strip() for c in COLUMNS}
        for i in range(rows.count())
    ]


def test_who_did_what_newest_first_page_by_page(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    token = api.create_token("Nightly rotation", ["keys:read", "keys:write"])
    keys = [api.issue(f"key {i}") for i in range(26)]  # 27 entries, then the token's
    by_token = api.with_token("POST", "/api/v1/keys", token["token"], {"name": "by the token"})
    api.with_token("POST", f"/api/v1/keys/{keys[0]['key_id']}/roll", token["token"],
                   {"overlap_seconds": 0})
    # The overlap of 0 ends at once: key_service revokes the old key itself.
    expected = 27 + 1 + 2 + 1
    for _ in range(200):
        if len(api.audit()) == expected:
            break
        page.wait_for_timeout(50)
    entries = api.audit()
    assert len(entries) == expected
    log_in(page, key_service.base_url)
    open_audit(page, key_service.base_url)

    first = table(page)
    assert len(first) == 25
    assert [r["Key or Token"] for r in first] == [e["key_id"] for e in entries[:25]]
    revoked, rolled, issued_new, issued_by_token = first[:4]
    assert revoked["Who"] == "key_service scheduled"
    assert (revoked["What"], revoked["Key or Token"]) == ("Revoked key", keys[0]["key_id"])
    assert rolled["Who"] == "Nightly rotation management token"
    assert (rolled["What"], rolled["Key or Token"]) == ("Rolled key", keys[0]["key_id"])
    assert issued_new["What"] == "Issued key"
    assert (issued_by_token["What"], issued_by_token["Key or Token"]) == (
        "Issued key", by_token["key_id"])
    assert first[4]["Who"] == f"{ADMIN[0]} person"
    expect(page.locator("#audit-summary")).to_have_text("Page 1: entries 1 to 25.")
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()
    screenshot(page, "audit-log")

    page.get_by_role("button", name="Older").click()
    expect(page.locator("#audit-summary")).to_have_text("Page 2: entries 26 to 31, the oldest.")
    second = table(page)
    assert [r["Key or Token"] for r in second] == [
        e["key_id"] or e["token_id"] for e in entries[25:]]
    assert (second[-1]["What"], second[-1]["Key or Token"]) == (
        "Issued token", token["token_id"])
    expect(page.get_by_role("button", name="Older")).to_be_disabled()
    page.get_by_role("button", name="Newer").click()
    expect(page.locator("#audit-summary")).to_have_text("Page 1: entries 1 to 25.")
    assert table(page) == first


def test_the_audit_log_with_the_keyboard_alone(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    for i in range(30):
        api.issue(f"k{i}")
    log_in(page, key_service.base_url)
    open_audit(page, key_service.base_url)
    tab_to(page, "audit-older")
    page.keyboard.press("Enter")
    expect(page.locator("#audit-summary")).to_have_text("Page 2: entries 26 to 30, the oldest.")
    # Older turned itself off: the focus moved to Newer, not lost on the page.
    assert focused(page) == "audit-newer"
    page.keyboard.press("Enter")
    expect(page.locator("#audit-summary")).to_have_text("Page 1: entries 1 to 25.")
    assert focused(page) == "audit-older"


def test_an_empty_log(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url)
    open_audit(page, key_service.base_url)
    expect(page.locator("#audit-body")).to_have_text("Nothing has been changed yet.")
    expect(page.get_by_role("button", name="Older")).to_be_disabled()
    expect(page.get_by_role("button", name="Newer")).to_be_disabled()
