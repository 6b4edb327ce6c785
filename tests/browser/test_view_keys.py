"""The seed's "View List of Keys" procedure, step by step, and how the list looks."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .support import (
    COLUMNS,
    KEY_ID_RE,
    REVOKE,
    RunningKeyService,
    cell,
    en_us,
    log_in,
    open_manage_api_keys,
    row_for,
    rows,
    screenshot,
    table_view,
)


def test_view_list_of_keys(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    first = api.issue("Billing service (production)")
    second = api.issue("Reporting exporter")
    third = api.issue("Partner integration — Acme Corp")
    api.revoke(second["key_id"])
    log_in(page, key_service.base_url)

    # 1. Once logged in to Backoffice, select Settings from the sidebar.
    # 2. From the Settings list next to the sidebar, select Manage API Keys.
    open_manage_api_keys(page, key_service.base_url)

    # 3. Your list of keys opens under the Issue New Key button.
    button = page.get_by_role("button", name="Issue New Key")
    table = page.get_by_role("table")
    expect(button).to_be_visible()
    expect(table).to_be_visible()
    button_box, table_box = button.bounding_box(), table.bounding_box()
    assert button_box is not None
    assert table_box is not None
    assert table_box["y"] >= button_box["y"] + button_box["height"]
    assert [h.strip() for h in table.locator("thead th").all_inner_texts()] == COLUMNS

    # Active keys newest first, then the revoked key at the bottom.
    view = table_view(page)
    assert [r["Key Name"] for r in view] == [
        "Partner integration — Acme Corp", "Billing service (production)", "Reporting exporter",
    ]
    assert [r["Key ID"] for r in view] == [third["key_id"], first["key_id"], second["key_id"]]
    for r, record in zip(view, [third, first, second], strict=True):
        # Key ID: the 36-character value assigned to the key.
        assert len(r["Key ID"]) == 36
        assert KEY_ID_RE.fullmatch(r["Key ID"])
        # Issued On: the date the key was issued.
        assert r["Issued On"] == en_us(record["issued_at"])
    # Revoked On: "Active" for live keys, the date for a revoked one.
    assert [r["Revoked On"] for r in view[:2]] == ["Active", "Active"]
    revoked = next(k for k in api.list_keys() if k["key_id"] == second["key_id"])
    assert view[2]["Revoked On"] == en_us(revoked["revoked_at"])
    # Revoke This Key: the Revoke button, not displayed for a revoked key.
    for key in (third, first):
        expect(cell(row_for(page, key["key_id"]), "Revoke This Key")
               .get_by_role("button", name=REVOKE)).to_be_visible()
    expect(row_for(page, second["key_id"]).get_by_role("button")).to_have_count(0)
    screenshot(page, "keys-list")


def test_the_first_page_shows_at_once_and_the_rest_loads_as_the_user_scrolls(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    issued = [api.issue(f"service {i:03d}")["key_id"] for i in range(205)]
    api.revoke(issued[100])
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    # The first page only, newest first; the button to load more under the table.
    expect(rows(page)).to_have_count(100)
    assert rows(page).first.get_attribute("data-key-id") == issued[-1]
    more = page.get_by_role("button", name="Load more keys")
    expect(more).to_be_visible()
    expect(page.locator("#keys-summary")).to_contain_text("more below")
    # Scrolling to the end of the table loads the next page, and the next.
    more.scroll_into_view_if_needed()
    expect(rows(page)).to_have_count(200)
    more.scroll_into_view_if_needed()
    expect(rows(page)).to_have_count(205)
    expect(more).to_be_hidden()
    # In the list's order: active keys newest first, then the revoked one, each once.
    shown = page.locator("#keys-body tr[data-key-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.keyId)")
    assert shown == [k for k in reversed(issued) if k != issued[100]] + [issued[100]]
    expect(page.locator("#keys-summary")).to_have_text("204 active, 1 revoked.")


def test_load_more_by_keyboard_moves_focus_to_the_first_new_row(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    issued = [api.issue(f"service {i:03d}")["key_id"] for i in range(120)]
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(100)
    more = page.get_by_role("button", name="Load more keys")
    more.focus()
    page.keyboard.press("Enter")
    expect(rows(page)).to_have_count(120)
    # Focus is on the first row loaded (the 101st newest key), not left below the table.
    first_new = row_for(page, issued[19])
    expect(first_new).to_be_focused()
    page.keyboard.press("Tab")  # on to that row's first button
    expect(first_new.get_by_role("button", name="Roll service 019")).to_be_focused()


def test_dates_follow_the_browser_locale(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    key = api.issue("Locale check")
    page.close()
    german = page.context.browser
    assert german is not None
    ctx = german.new_context(locale="de-DE", timezone_id="UTC")
    try:
        tab = ctx.new_page()
        log_in(tab, key_service.base_url)
        open_manage_api_keys(tab, key_service.base_url)
        issued = key["issued_at"][:10].split("-")
        expected = f"{issued[2]}.{issued[1]}.{issued[0]}"
        expect(cell(row_for(tab, key["key_id"]), "Issued On")).to_have_text(expected)
    finally:
        ctx.close()


def test_long_names_and_ids_do_not_break_the_layout(
    page: Page, key_service: RunningKeyService
) -> None:
    api = key_service.admin_api()
    api.issue("W" * 100)
    api.issue("a name with many words " * 4)
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(2)
    widths = page.evaluate(
        """() => ({
            doc: document.documentElement.scrollWidth,
            viewport: window.innerWidth,
            wrap: document.querySelector('.table-wrap').getBoundingClientRect().right,
            table: document.querySelector('#keys').getBoundingClientRect().right,
        })"""
    )
    assert widths["doc"] <= widths["viewport"], widths
    assert widths["table"] <= widths["wrap"] + 1, widths
    # Every key ID stays whole and readable.
    for i in range(2):
        assert KEY_ID_RE.fullmatch(cell(rows(page).nth(i), "Key ID").inner_text().replace("\n", ""))
