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


def test_the_list_loads_every_page_of_the_api(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    issued = [api.issue(f"service {i:03d}")["key_id"] for i in range(105)]
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(105)
    shown = [rows(page).nth(i).get_attribute("data-key-id") for i in (0, 104)]
    assert shown == [issued[-1], issued[0]]


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
