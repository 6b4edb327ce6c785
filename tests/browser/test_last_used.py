"""The Last Used column, and the Revoke window's warning about a key used within the last day.

Uses are reported to the real key_service as a gateway process reports them
(``POST /internal/v1/usage``); tests/browser/test_gateway.py sees one go all the way from a
request through a gateway to the page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from playwright.sync_api import Page, expect

from .support import (
    PERMANENT,
    REVOKE,
    RunningKeyService,
    cell,
    focused,
    log_in,
    open_manage_api_keys,
    row_for,
    screenshot,
    tab_to_locator,
)


def _full(when: datetime) -> str:
    """``when`` as Intl.DateTimeFormat('en-US', {dateStyle: 'full', timeStyle: 'long'}) at UTC."""
    hour = when.hour % 12 or 12
    return (f"{when:%A}, {when:%B} {when.day}, {when.year} at {hour}:{when:%M}:{when:%S} "
            f"{when:%p} UTC")


def test_last_used_says_never_or_how_long_ago(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    unused = api.issue("Never used")
    recent = api.issue("Used minutes ago")
    older = api.issue("Used days ago")
    revoked = api.issue("Used then revoked")
    now = datetime.now(UTC).replace(microsecond=0)
    minutes_ago = now - timedelta(minutes=3, seconds=5)
    days_ago = now - timedelta(days=3, minutes=1)
    key_service.report_use(recent["key_id"], minutes_ago, 12)
    key_service.report_use(older["key_id"], days_ago)
    key_service.report_use(revoked["key_id"], now - timedelta(hours=5))
    api.revoke(revoked["key_id"])
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)

    headers = page.get_by_role("columnheader")
    expect(headers).to_have_text(["Key Name", "Key ID", "Issued On", "Revoked On", "Last Used",
                                  "Revoke This Key"])
    expect(cell(row_for(page, unused["key_id"]), "Last Used")).to_have_text("Never")
    used = cell(row_for(page, recent["key_id"]), "Last Used").locator("time")
    expect(used).to_have_text("3 minutes ago")
    # The exact moment, on hover (the title), and for machines (datetime).
    expect(used).to_have_attribute("title", _full(minutes_ago))
    expect(used).to_have_attribute("datetime", minutes_ago.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    expect(cell(row_for(page, older["key_id"]), "Last Used")).to_have_text("3 days ago")
    expect(cell(row_for(page, revoked["key_id"]), "Last Used")).to_have_text("5 hours ago")
    screenshot(page, "keys-last-used")


def test_the_revoke_window_warns_of_a_key_used_within_a_day(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    busy = api.issue("Busy service")
    quiet = api.issue("Quiet service")
    unused = api.issue("Unused service")
    now = datetime.now(UTC)
    key_service.report_use(busy["key_id"], now - timedelta(minutes=2, seconds=5))
    key_service.report_use(quiet["key_id"], now - timedelta(hours=25))
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    dialog = page.get_by_role("dialog", name="Revoke")
    warning = dialog.locator("#revoke-recent")

    # Reached with the keyboard alone: Tab to the row's Revoke button, Enter.
    button = row_for(page, busy["key_id"]).get_by_role("button", name=REVOKE)
    tab_to_locator(page, button)
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(warning).to_be_visible()
    expect(warning).to_have_text("This key was used 2 minutes ago.")
    # Read out with the dialog: it is part of the dialog's description.
    expect(dialog).to_have_accessible_description(
        f"{PERMANENT} Applications that use this key are refused from then on. "
        "This key was used 2 minutes ago.")
    assert focused(page) == "revoke-cancel"
    screenshot(page, "revoke-dialog-recent-use")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Used more than a day ago, or never: no warning.
    for key in (quiet, unused):
        row_for(page, key["key_id"]).get_by_role("button", name=REVOKE).click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(PERMANENT)
        expect(warning).to_be_hidden()
        expect(dialog).not_to_contain_text("This key was used")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_be_hidden()

    # The warning belongs to the key it was opened for: the busy key's again, then confirmed.
    row_for(page, busy["key_id"]).get_by_role("button", name=REVOKE).click()
    expect(warning).to_have_text("This key was used 2 minutes ago.")
    dialog.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Key “Busy service” revoked.")
    assert {k["key_id"]: k["status"] for k in api.list_keys()}[busy["key_id"]] == "revoked"


def test_the_revoke_window_warns_of_a_use_after_the_list_was_loaded(
    page: Page, key_service: RunningKeyService,
) -> None:
    api = key_service.admin_api()
    key = api.issue("Used since the page loaded")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    expect(cell(row_for(page, key["key_id"]), "Last Used")).to_have_text("Never")
    key_service.report_use(key["key_id"], datetime.now(UTC) - timedelta(minutes=2, seconds=5))
    row_for(page, key["key_id"]).get_by_role("button", name=REVOKE).click()
    dialog = page.get_by_role("dialog", name="Revoke")
    expect(dialog.locator("#revoke-recent")).to_have_text("This key was used 2 minutes ago.")
