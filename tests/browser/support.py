"""Helpers of the browser tests: a small JSON API client, the running key_service, and the steps
of the seed's procedures as a user performs them in the page."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from playwright.sync_api import Locator, Page, expect

from tests.support.procs import ROOT, ServiceProcess

ADMIN = ("ada.admin", "correct horse battery staple")
VIEWER = ("victor.viewer", "another long password 42")

ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS_DIR", ROOT / "artifacts" / "screenshots"))

KEY_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SECRET_RE = re.compile(r"[0-9A-Za-z]{64}")
COLUMNS = ["Key Name", "Key ID", "Issued On", "Revoked On", "Last Used", "Revoke This Key"]
# A row's buttons are named "Revoke <key name>" and "Roll <key name>"; a key's name may itself
# hold either word, so match on the start.
REVOKE = re.compile(r"^Revoke ")
ROLL = re.compile(r"^Roll ")
NEVER_AGAIN = "The secret will never be shown again after you close this window."
PERMANENT = "Revoking a key is permanent and cannot be undone."


def run_async(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine on a thread of its own: this thread's event loop belongs to Playwright
    (the test bed's async fixtures cannot run beside the sync Playwright API)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, factory()).result(timeout=60)


def run_cli(args: list[str], env: Mapping[str, str], stdin: str | None = None) -> None:
    """Run ``python -m key_service ARGS`` to completion; fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "key_service", *args], env={**os.environ, **env}, cwd=ROOT,
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"key_service {args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )


class ApiError(Exception):
    """An HTTP error answer of the JSON API."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class ApiClient:
    """The JSON API as a script would use it: log in, then call with the CSRF token."""

    base_url: str
    jar: CookieJar = field(default_factory=CookieJar)
    csrf_token: str = ""
    bearer: str = field(default="", repr=False)

    def _call(self, method: str, path: str, body: object = None,
              cookie: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if method != "GET" and self.csrf_token:
            request.add_header("X-CSRF-Token", self.csrf_token)
        if self.bearer:
            request.add_header("Authorization", f"Bearer {self.bearer}")
        if cookie is not None:
            request.add_header("Cookie", cookie)
            opener = urllib.request.build_opener()
        else:
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        try:
            with opener.open(request, timeout=15) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            exc.close()
            raise ApiError(exc.code, text) from None
        return json.loads(raw) if raw else None

    def login(self, username: str, password: str) -> ApiClient:
        """Start a session; keeps its cookie and CSRF token."""
        me = self._call("POST", "/api/v1/session", {"username": username, "password": password})
        self.csrf_token = me["csrf_token"]
        return self

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key, in the API's order, across all pages."""
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = self._call("GET", f"/api/v1/keys?limit=2&cursor={cursor}")
            items.extend(page["items"])
            if not page["next_cursor"]:
                return items
            cursor = page["next_cursor"]

    def issue(self, name: str) -> dict[str, Any]:
        """Issue a key; the answer holds its secret."""
        created: dict[str, Any] = self._call("POST", "/api/v1/keys", {"name": name})
        return created

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke a key."""
        record: dict[str, Any] = self._call("POST", f"/api/v1/keys/{key_id}/revoke")
        return record

    def roll(self, key_id: str, overlap_seconds: int) -> dict[str, Any]:
        """Roll a key; the answer holds the replacement's secret and the old key."""
        rolled: dict[str, Any] = self._call(
            "POST", f"/api/v1/keys/{key_id}/roll", {"overlap_seconds": overlap_seconds}
        )
        return rolled

    def get_key(self, key_id: str) -> dict[str, Any]:
        """One key."""
        key: dict[str, Any] = self._call("GET", f"/api/v1/keys/{key_id}")
        return key

    def create_token(self, name: str, scopes: list[str]) -> dict[str, Any]:
        """Create a management token; the answer holds its text."""
        created: dict[str, Any] = self._call(
            "POST", "/api/v1/tokens", {"name": name, "scopes": scopes}
        )
        return created

    def list_tokens(self) -> list[dict[str, Any]]:
        """Every management token (one page is plenty in these tests)."""
        page: dict[str, Any] = self._call("GET", "/api/v1/tokens?limit=500")
        items: list[dict[str, Any]] = page["items"]
        return items

    def audit(self, limit: int = 500) -> list[dict[str, Any]]:
        """The newest audit rows."""
        page: dict[str, Any] = self._call("GET", f"/api/v1/audit?limit={limit}")
        items: list[dict[str, Any]] = page["items"]
        return items

    def with_token(self, method: str, path: str, token: str, body: object = None) -> Any:
        """A call made with a management token (no cookie, no CSRF token)."""
        return ApiClient(self.base_url, bearer=token)._call(method, path, body)

    def session(self, cookie: str | None = None) -> dict[str, Any]:
        """``GET /api/v1/session``: who is logged in (with ``cookie`` if given)."""
        me: dict[str, Any] = self._call("GET", "/api/v1/session", cookie=cookie)
        return me

    def end_session(self, cookie: str, csrf_token: str) -> None:
        """Log out the session behind ``cookie`` (as if it had expired on the server)."""
        saved, self.csrf_token = self.csrf_token, csrf_token
        try:
            self._call("DELETE", "/api/v1/session", cookie=cookie)
        finally:
            self.csrf_token = saved


@dataclass
class RunningKeyService:
    """A key_service subprocess on its own SQLite database and port."""

    base_url: str
    process: ServiceProcess
    env: dict[str, str]

    def admin_api(self) -> ApiClient:
        """A fresh API client logged in as the administrator."""
        return ApiClient(self.base_url).login(*ADMIN)

    def report_use(self, key_id: str, at: datetime, count: int = 1) -> None:
        """Report a use of ``key_id`` at ``at``, as a gateway process does."""
        client = ApiClient(self.base_url, bearer=self.env["APIKEYS_INTERNAL_TOKEN"])
        client._call("POST", "/internal/v1/usage", {
            "batch_id": uuid.uuid4().hex, "day": at.date().isoformat(),
            "keys": [{"key_id": key_id, "count": count,
                      "last_used_at": at.astimezone(UTC).isoformat().replace("+00:00", "Z")}],
        })


# -- the page, as the seed's steps describe it ------------------------------------------------
def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot of the page as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), animations="disabled", caret="hide")
    return path


def log_in(page: Page, base_url: str, user: tuple[str, str] = ADMIN) -> None:
    """Log in through the login page and land on the Backoffice home."""
    page.goto(base_url + "/backoffice/login")
    fill_login(page, user)
    expect(page).to_have_url(base_url + "/backoffice/")


def expect_login_page(page: Page, base_url: str, query: Mapping[str, str]) -> None:
    """Wait for the login page, then check its query (``next`` return path, ``reason``)."""
    expect(page).to_have_url(re.compile(re.escape(base_url + "/backoffice/login") + r"(\?.*)?$"))
    parts = urlsplit(page.url)
    assert dict(parse_qsl(parts.query)) == dict(query), page.url


def fill_login(page: Page, user: tuple[str, str]) -> None:
    """Type the credentials into the login form and submit it."""
    page.get_by_label("Username").fill(user[0])
    page.get_by_label("Password").fill(user[1])
    page.get_by_role("button", name="Log in").click()


def open_settings(page: Page, base_url: str, title: str, path: str, table: str) -> None:
    """Settings in the sidebar, then ``title`` in the Settings list; waits for its table."""
    sidebar = page.get_by_role("navigation", name="Main")
    sidebar.get_by_role("link", name="Settings").click()
    expect(page).to_have_url(base_url + "/backoffice/settings")
    settings_list = page.get_by_role("navigation", name="Settings")
    expect(settings_list).to_be_visible()
    settings_list.get_by_role("link", name=title).click()
    expect(page).to_have_url(base_url + path)
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    expect(settings_list.get_by_role("link", name=title)).to_have_attribute(
        "aria-current", "page")
    expect(page.locator(table)).to_have_attribute("aria-busy", "false")


def open_manage_api_keys(page: Page, base_url: str) -> None:
    """Steps 1 and 2 of every procedure: Settings in the sidebar, then Manage API Keys."""
    open_settings(page, base_url, "Manage API Keys", "/backoffice/settings/api-keys", "#keys")


def rows(page: Page) -> Locator:
    """The key rows of the table."""
    return page.locator("#keys-body tr[data-key-id]")


def row_for(page: Page, key_id: str) -> Locator:
    """The table row of one key."""
    return page.locator(f'#keys-body tr[data-key-id="{key_id}"]')


def cell(row: Locator, column: str) -> Locator:
    """One cell of a row, by its column heading."""
    return row.locator(f'td[data-label="{column}"]')


def table_view(page: Page) -> list[dict[str, str]]:
    """The table as the user reads it: one dict of visible column text per row."""
    result = []
    for i in range(rows(page).count()):
        row = rows(page).nth(i)
        result.append({c: cell(row, c).inner_text().strip() for c in COLUMNS})
    return result


def en_us_time(iso: str) -> str:
    """An API timestamp as the page shows a date and time in en-US at UTC (medium, short)."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    hour = when.hour % 12 or 12
    return f"{when:%b} {when.day}, {when.year}, {hour}:{when:%M} {when:%p}"


def today_en_us() -> str:
    """Today's date (UTC) as Intl.DateTimeFormat('en-US', {dateStyle: 'medium'}) writes it."""
    now = datetime.now(UTC)
    return f"{now:%b} {now.day}, {now.year}"


def en_us(iso: str) -> str:
    """An API timestamp as the page shows it in en-US at UTC."""
    when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    return f"{when:%b} {when.day}, {when.year}"


def page_holds(page: Page, text: str) -> list[str]:
    """Where ``text`` is still visible to scripts: DOM, form values, storage, URL, history state."""
    found = []
    if text in page.content():
        found.append("DOM")
    values = page.evaluate(
        """() => {
            const out = [];
            document.querySelectorAll('input, textarea').forEach(e => out.push(e.value));
            for (const s of [window.localStorage, window.sessionStorage]) {
                for (let i = 0; i < s.length; i++) out.push(s.key(i), s.getItem(s.key(i)));
            }
            out.push(JSON.stringify(history.state), location.href, document.title,
                     String(window.getSelection()));
            return out;
        }"""
    )
    if any(text in (v or "") for v in values):
        found.append("storage, form values, URL, history or selection")
    return found


def focused(page: Page) -> str:
    """The id of the focused element ('' when it has none)."""
    value: str = page.evaluate("() => document.activeElement ? document.activeElement.id : ''")
    return value


def tab_to(page: Page, element_id: str, limit: int = 40) -> None:
    """Press Tab until the element with ``element_id`` has focus, as a keyboard user would."""
    for _ in range(limit):
        if focused(page) == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} never got focus within {limit} Tab presses")


def tab_to_locator(page: Page, target: Locator, limit: int = 60) -> None:
    """Press Tab until ``target`` has focus."""
    handle = target.element_handle()
    assert handle is not None
    for _ in range(limit):
        if page.evaluate("(el) => document.activeElement === el", handle):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} never got focus within {limit} Tab presses")
