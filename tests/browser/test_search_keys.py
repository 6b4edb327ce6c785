"""The Manage API Keys page's search box: by name fragment or key ID, by keyboard, debounced,
page by page, with the table's roles and order intact."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, Request, expect

from .support import RunningKeyService, log_in, open_manage_api_keys, rows, tab_to


def _name_cells(page: Page) -> Locator:
    return page.locator("#keys-body tr[data-key-id] td.cell-name")


def _names(page: Page) -> list[str]:
    texts: list[str] = page.locator("#keys-body tr[data-key-id] td.cell-name").all_inner_texts()
    return [t.strip() for t in texts]


def test_search_by_name_and_key_id_keeps_the_list_order(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    export = api.issue("Billing export")
    imported = api.issue("billing import")
    shipping = api.issue("Shipping")
    api.issue("Reporting")
    api.revoke(imported["key_id"])
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(4)

    box = page.get_by_role("searchbox", name="Search keys")
    expect(box).to_be_visible()
    # By keyboard: from the Issue New Key button to the search box.
    page.get_by_role("button", name="Issue New Key").focus()
    tab_to(page, "key-search")
    page.keyboard.type("BILL")
    expect(rows(page)).to_have_count(2)
    # Active first, then the revoked one; the table and its rows keep their roles.
    expect(_name_cells(page)).to_have_text(["Billing export", "billing import"])
    table = page.get_by_role("table", name="API keys: active keys newest first, then revoked keys")
    expect(table.get_by_role("row")).to_have_count(3)  # the header row and two keys
    expect(page.locator("#keys-summary")).to_have_text("2 matching: 1 active, 1 revoked.")

    # A key ID finds its key.
    box.fill(shipping["key_id"])
    expect(rows(page)).to_have_count(1)
    expect(_name_cells(page)).to_have_text(["Shipping"])

    box.fill("no such key")
    expect(page.locator("#keys-body")).to_have_text("No keys match “no such key”.")

    box.fill("")  # an empty box shows every key again
    expect(rows(page)).to_have_count(4)
    assert _names(page)[-1] == "billing import"
    assert export["key_id"] in page.locator("#keys-body").inner_html()


def test_typing_asks_once_after_a_pause_and_enter_asks_at_once(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    for name in ("alpha", "alphabet", "beta"):
        api.issue(name)
    searches: list[str] = []

    def on_request(request: Request) -> None:
        if "/api/v1/keys?" in request.url and "q=" in request.url:
            searches.append(request.url.split("q=", 1)[1])

    page.on("request", on_request)
    page.clock.install()
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(3)
    box = page.get_by_role("searchbox", name="Search keys")
    box.press_sequentially("alph")
    page.clock.run_for(200)
    assert searches == []  # still typing
    box.press_sequentially("abet")
    page.clock.run_for(300)
    expect(rows(page)).to_have_count(1)
    assert searches == ["alphabet"]  # one search for the whole word
    box.fill("beta")
    box.press("Enter")
    # (One row before and after: wait for the row's name, not for the count.)
    expect(_name_cells(page)).to_have_text(["beta"])
    assert searches == ["alphabet", "beta"]


def test_a_search_loads_its_matches_page_by_page(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    bulk = [api.issue(f"bulk {i:03d}")["key_id"] for i in range(110)]
    for i in range(5):
        api.issue(f"other {i}")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(rows(page)).to_have_count(100)
    page.get_by_role("searchbox", name="Search keys").fill("bulk")
    page.get_by_role("searchbox", name="Search keys").press("Enter")
    expect(page.locator("#keys-summary")).to_have_text(
        "Matching keys: the first 100 shown (100 active, 0 revoked); more below.")
    assert rows(page).first.get_attribute("data-key-id") == bulk[-1]
    page.get_by_role("button", name="Load more keys").click()
    expect(rows(page)).to_have_count(110)
    expect(page.get_by_role("button", name="Load more keys")).to_be_hidden()
    assert all(name.startswith("bulk ") for name in _names(page))
    assert rows(page).last.get_attribute("data-key-id") == bulk[0]
