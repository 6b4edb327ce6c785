"""The seed's "Issue a Key" procedure, step by step, and what the page does around it."""

from __future__ import annotations

from playwright.sync_api import Page, Request, expect

from .support import (
    ADMIN,
    NEVER_AGAIN,
    SECRET_RE,
    RunningKeyService,
    cell,
    expect_login_page,
    fill_login,
    focused,
    log_in,
    open_manage_api_keys,
    page_holds,
    rows,
    screenshot,
    tab_to,
    today_en_us,
)

KEYS_URL = "/backoffice/settings/api-keys"


def _record_unsafe_calls(page: Page) -> list[Request]:
    calls: list[Request] = []
    page.on("request", lambda r: calls.append(r) if r.method not in ("GET", "HEAD") else None)
    return calls


def test_issue_a_key(page: Page, key_service: RunningKeyService) -> None:
    api = key_service.admin_api()
    older = api.issue("Older key")
    calls = _record_unsafe_calls(page)
    log_in(page, key_service.base_url)

    # 1. Select Settings from the sidebar. 2. Select Manage API Keys from the Settings list.
    open_manage_api_keys(page, key_service.base_url)
    history_before = page.evaluate("() => history.length")

    # 3. Select Issue New Key.
    page.get_by_role("button", name="Issue New Key").click()

    # 4. On the Issue New Key window that opens, enter a key name.
    issue = page.get_by_role("dialog", name="Issue New Key")
    expect(issue).to_be_visible()
    issue.get_by_label("Key name").fill("Billing service (production)")
    screenshot(page, "issue-new-key-dialog")

    # 5. Select Issue Key (Nevermind would cancel: see test_nevermind_issues_nothing).
    expect(issue.get_by_role("button", name="Nevermind")).to_be_visible()
    issue.get_by_role("button", name="Issue Key").click()

    # 6. The New API Key Created window shows the 64-character secret, to copy and save.
    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    expect(issue).to_be_hidden()
    secret = created.locator("#created-secret").inner_text()
    assert SECRET_RE.fullmatch(secret), secret
    key_id = created.locator("#created-id").inner_text()
    expect(created.locator("#created-name")).to_have_text("Billing service (production)")
    expect(created).to_contain_text(NEVER_AGAIN)
    created.get_by_role("button", name="Copy").click()
    expect(created.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("() => navigator.clipboard.readText()") == secret
    screenshot(page, "new-api-key-created-dialog")

    # 7. With the secret saved, select Confirm to close the window.
    created.get_by_role("button", name="Confirm").click()
    expect(created).to_be_hidden()

    # 8. The page refreshes, the new key is at the top of the list with its key ID.
    expect(page.locator("#status")).to_contain_text("issued")
    expect(rows(page)).to_have_count(2)
    top = rows(page).first
    expect(cell(top, "Key Name")).to_have_text("Billing service (production)")
    expect(cell(top, "Key ID")).to_have_text(key_id)
    expect(cell(top, "Issued On")).to_have_text(today_en_us())
    expect(cell(top, "Revoked On")).to_have_text("Active")
    assert rows(page).nth(1).get_attribute("data-key-id") == older["key_id"]
    assert api.list_keys()[0]["key_id"] == key_id

    # The secret is gone from the page: DOM, form values, storage, URL and history.
    assert page_holds(page, secret) == []
    assert page.url == key_service.base_url + KEYS_URL
    assert page.evaluate("() => history.length") == history_before

    # Every state-changing call carried the session's CSRF token.
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    posts = [c for c in calls if c.url.endswith("/api/v1/keys")]
    assert len(posts) == 1
    assert all(c.headers.get("x-csrf-token") == token for c in calls if "/api/" in c.url
               and not c.url.endswith("/api/v1/session")), [c.url for c in calls]


def test_a_blank_name_is_refused_in_the_dialog(
    page: Page, key_service: RunningKeyService
) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    page.get_by_role("button", name="Issue New Key").click()
    issue = page.get_by_role("dialog", name="Issue New Key")
    for blank in ("", "   "):
        issue.get_by_label("Key name").fill(blank)
        issue.get_by_role("button", name="Issue Key").click()
        expect(issue.locator("#key-name-error")).to_have_text("Enter a key name.")
        expect(issue).to_be_visible()
        expect(issue.get_by_label("Key name")).to_have_attribute("aria-invalid", "true")
        assert focused(page) == "key-name"
    assert key_service.admin_api().list_keys() == []


def test_the_servers_reason_for_refusing_a_name_is_shown(
    page: Page, key_service: RunningKeyService
) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    page.get_by_role("button", name="Issue New Key").click()
    issue = page.get_by_role("dialog", name="Issue New Key")
    issue.get_by_label("Key name").fill("bell\u0007name")
    issue.get_by_role("button", name="Issue Key").click()
    expect(issue.locator("#key-name-error")).to_have_text(
        "name must contain printable characters only"
    )
    expect(issue).to_be_visible()
    assert key_service.admin_api().list_keys() == []


def test_nevermind_issues_nothing(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    opener = page.get_by_role("button", name="Issue New Key")
    opener.click()
    issue = page.get_by_role("dialog", name="Issue New Key")
    issue.get_by_label("Key name").fill("Should not exist")
    issue.get_by_role("button", name="Nevermind").click()
    expect(issue).to_be_hidden()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert focused(page) == "issue-open"
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#keys-body")).to_contain_text("No keys yet")
    assert key_service.admin_api().list_keys() == []
    # Reopened, the dialog starts empty.
    opener.click()
    expect(issue.get_by_label("Key name")).to_have_value("")


def test_issue_with_the_keyboard_alone(page: Page, key_service: RunningKeyService) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    tab_to(page, "issue-open")
    page.keyboard.press("Enter")
    issue = page.get_by_role("dialog", name="Issue New Key")
    expect(issue).to_be_visible()
    assert focused(page) == "key-name"

    # Escape cancels and gives focus back to the button that opened the dialog.
    page.keyboard.press("Escape")
    expect(issue).to_be_hidden()
    assert focused(page) == "issue-open"

    page.keyboard.press("Enter")
    expect(issue).to_be_visible()
    page.keyboard.type("Keyboard-only key")
    # Focus stays inside the dialog however far one tabs, both ways.
    for key in ["Tab"] * 5 + ["Shift+Tab"] * 5:
        page.keyboard.press(key)
        assert page.evaluate("() => document.getElementById('issue-dialog')"
                             ".contains(document.activeElement)")
    tab_to(page, "key-name")
    page.keyboard.press("Enter")

    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    secret = created.locator("#created-secret").inner_text()
    for _ in range(4):
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.getElementById('created-dialog')"
                             ".contains(document.activeElement)")
    # Escape does not throw the secret away: only Confirm closes this window.
    page.keyboard.press("Escape")
    expect(created).to_be_visible()
    tab_to(page, "created-confirm")
    page.keyboard.press("Enter")
    expect(created).to_be_hidden()
    expect(cell(rows(page).first, "Key Name")).to_have_text("Keyboard-only key")
    assert focused(page) == "issue-open"
    assert page_holds(page, secret) == []


def test_a_dialog_reopened_at_once_keeps_what_is_typed(
        page: Page, key_service: RunningKeyService) -> None:
    # A dialog's 'close' event fires a task after close(): closing, reopening and typing within
    # that task (a quick Escape, Enter, type) must not be undone by the late event.
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    page.locator("#issue-open").click()
    page.evaluate("""() => {
        document.getElementById('issue-dialog').close();
        document.getElementById('issue-open').click();
        document.getElementById('key-name').value = 'Typed at once';
    }""")
    issue = page.get_by_role("dialog", name="Issue New Key")
    expect(issue).to_be_visible()
    # One more task round, so that the late 'close' event has surely run.
    page.evaluate("() => new Promise((resolve) => setTimeout(resolve, 0))")
    expect(page.locator("#key-name")).to_have_value("Typed at once")
    assert focused(page) == "key-name"


def test_an_expired_session_logs_in_again_and_keeps_the_dialog(
    page: Page, key_service: RunningKeyService
) -> None:
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    page.get_by_role("button", name="Issue New Key").click()
    page.get_by_label("Key name").fill("Typed before the session ended")

    # The session ends on the server while the page is open.
    cookie = next(c for c in page.context.cookies() if c["name"] == "ks_session")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    key_service.admin_api().end_session(f"ks_session={cookie['value']}", token)
    page.get_by_role("button", name="Issue Key").click()

    # The API's 401 sends the user to log in, and back afterwards.
    expect_login_page(page, key_service.base_url, {"next": KEYS_URL, "reason": "expired"})
    expect(page.locator("#login-notice")).to_contain_text("Your session has expired")
    fill_login(page, ADMIN)
    expect(page).to_have_url(key_service.base_url + KEYS_URL)

    # What the page showed is back: the dialog with the typed name, not yet issued.
    issue = page.get_by_role("dialog", name="Issue New Key")
    expect(issue).to_be_visible()
    expect(issue.get_by_label("Key name")).to_have_value("Typed before the session ended")
    assert key_service.admin_api().list_keys() == []
    issue.get_by_role("button", name="Issue Key").click()
    created = page.get_by_role("dialog", name="New API Key Created")
    expect(created).to_be_visible()
    secret = created.locator("#created-secret").inner_text()
    created.get_by_role("button", name="Confirm").click()
    expect(cell(rows(page).first, "Key Name")).to_have_text("Typed before the session ended")
    assert page_holds(page, secret) == []
    assert page.evaluate("() => sessionStorage.length") == 0


def test_copy_falls_back_when_the_clipboard_api_is_missing(
    page: Page, key_service: RunningKeyService
) -> None:
    # As on a page served over plain HTTP from a non-local address: no navigator.clipboard.
    page.add_init_script("Object.defineProperty(Navigator.prototype, 'clipboard', "
                         "{get: () => undefined, configurable: true});")
    log_in(page, key_service.base_url)
    open_manage_api_keys(page, key_service.base_url)
    assert page.evaluate("() => navigator.clipboard === undefined")
    page.get_by_role("button", name="Issue New Key").click()
    page.get_by_label("Key name").fill("Copied the old way")
    page.get_by_role("button", name="Issue Key").click()
    created = page.get_by_role("dialog", name="New API Key Created")
    secret = created.locator("#created-secret").inner_text()
    created.get_by_role("button", name="Copy").click()
    expect(created.locator("#copy-status")).to_have_text("Copied to the clipboard.")
    # Read it back from another tab of the same browser profile, which has the clipboard API.
    reader = page.context.new_page()
    reader.goto(key_service.base_url + "/backoffice/login")
    assert reader.evaluate("() => navigator.clipboard.readText()") == secret
    reader.close()
    created.get_by_role("button", name="Confirm").click()
    assert page_holds(page, secret) == []
