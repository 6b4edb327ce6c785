"""The Backoffice page: login, the layout with its sidebar, Settings, and the administrators'
settings pages (Manage API Keys, Management Tokens, Audit Log).

Pages are rendered on the server from small templates (``templates/``) so that what a role may see
is decided where it is enforced: only a ``system_administrator`` gets the settings entries and
pages. The behaviour is plain JavaScript under ``/backoffice/static/`` that calls the JSON API;
no inline script or style exists, so the Content-Security-Policy can forbid both.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler

from .auth import CurrentUser, current_user
from .scopes import KEYS_READ, SCOPE_HELP

__all__ = ["PAGE_HEADERS", "add_page_routes", "safe_return_path"]

_HERE = Path(__file__).resolve().parent
_STATIC_DIR = _HERE / "static"
_TEMPLATE_DIR = _HERE / "templates"

BACKOFFICE = "/backoffice/"
LOGIN = "/backoffice/login"
SETTINGS = "/backoffice/settings"
API_KEYS = "/backoffice/settings/api-keys"
TOKENS = "/backoffice/settings/tokens"
AUDIT = "/backoffice/settings/audit"


@dataclass(frozen=True)
class _SettingsPage:
    path: str
    title: str
    template: str
    script: str


def _scope_choices() -> str:
    """The Issue New Token dialog's scope check boxes (keys:read checked), from scopes.py."""
    esc = html.escape
    return "\n".join(
        f'          <label class="choice"><input type="checkbox" name="scope" '
        f'value="{esc(scope)}"{" checked" if scope == KEYS_READ else ""}> '
        f'<span><code>{esc(scope)}</code> <span class="choice-help">{esc(help_text)}</span>'
        "</span></label>"
        for scope, help_text in SCOPE_HELP.items()
    )


# Values of the settings pages' templates that come from code (written once, there).
_TEMPLATE_VALUES: Mapping[str, Mapping[str, str]] = {"tokens": {"scope_choices": _scope_choices()}}

# The Settings list, in its order; each is for administrators only.
_SETTINGS_PAGES = (
    _SettingsPage(API_KEYS, "Manage API Keys", "api_keys", "keys.js"),
    _SettingsPage(TOKENS, "Management Tokens", "tokens", "tokens.js"),
    _SettingsPage(AUDIT, "Audit Log", "audit", "audit.js"),
)

_CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
])

# Every page and asset carries these; pages also get ``Cache-Control: no-store`` because they
# name the user and hold the session's CSRF token.
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cache-Control": "no-store",
}

_ASSET_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

# Same rule as in common.js: only Backoffice paths, so the login page is no open redirect.
_RETURN_PATH_RE = re.compile(r"/backoffice/[A-Za-z0-9._~/-]*")

_ROLE_LABELS = {"system_administrator": "System Administrator"}

_LOGIN_NOTICES = {
    "expired": "Your session has expired. Log in to continue where you left off.",
    "logged_out": "You have been logged out.",
    "login": "Log in to continue.",
}


def safe_return_path(value: str | None) -> str:
    """``value`` when it is a Backoffice path other than the login page, else ``/backoffice/``."""
    if value and _RETURN_PATH_RE.fullmatch(value) and "//" not in value and value != LOGIN:
        return value
    return BACKOFFICE


def _role_label(role: str) -> str:
    return _ROLE_LABELS.get(role, role.replace("_", " ").title())


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


def _load_assets() -> dict[str, _Asset]:
    assets = {}
    for path in sorted(_STATIC_DIR.iterdir()):
        content_type = _ASSET_TYPES.get(path.suffix)
        if content_type is not None and path.is_file():
            assets[path.name] = _Asset(path.read_bytes(), content_type)
    return assets


def _load_templates() -> dict[str, Template]:
    return {
        path.stem: Template(path.read_text(encoding="utf-8"))
        for path in sorted(_TEMPLATE_DIR.glob("*.html"))
    }


class _Pages:
    """The page handlers, holding the templates and assets read once at start-up."""

    def __init__(self) -> None:
        self._templates = _load_templates()
        self._assets = _load_assets()

    # -- rendering ---------------------------------------------------------------------------
    def _fill(self, name: str, **values: str) -> str:
        return self._templates[name].substitute(values)

    def _page(self, user: CurrentUser, *, title: str, section: str, main: str,
              subnav: str = "", scripts: tuple[str, ...] = (), status: int = 200) -> web.Response:
        esc = html.escape
        body = self._fill(
            "layout",
            title=esc(title),
            csrf_token=esc(user.csrf_token),
            username=esc(user.username),
            role_label=esc(_role_label(user.role)),
            home_current=' aria-current="page"' if section == "home" else "",
            settings_current=' aria-current="page"' if section == "settings" else "",
            subnav=subnav,
            main=main,
            scripts="\n".join(
                f'<script src="/backoffice/static/{esc(s)}" defer></script>' for s in scripts
            ),
        )
        return _html(body, status)

    def _settings_list(self, user: CurrentUser, *, current: str | None) -> str:
        if user.is_admin:
            current_attr = ' aria-current="page"'
            links = "".join(
                f'      <li><a href="{page.path}"{current_attr if page.path == current else ""}>'
                f"{page.title}</a></li>\n"
                for page in _SETTINGS_PAGES
            )
            items = f"    <ul>\n{links}    </ul>"
        else:
            items = '    <p class="empty">No settings are available to your role.</p>'
        return self._fill("settings_list", items=items)

    # -- handlers ----------------------------------------------------------------------------
    async def root(self, request: web.Request) -> web.StreamResponse:
        """``/`` and ``/backoffice``: the Backoffice lives under ``/backoffice/``."""
        raise web.HTTPFound(BACKOFFICE, headers=PAGE_HEADERS)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The login form; a logged-in user goes straight on to the return path."""
        target = safe_return_path(request.query.get("next"))
        if await current_user(request) is not None:
            raise web.HTTPFound(target, headers=PAGE_HEADERS)
        notice = _LOGIN_NOTICES.get(request.query.get("reason", ""), "")
        body = self._fill(
            "login",
            next=html.escape(target),
            notice=html.escape(notice),
            notice_hidden="" if notice else " hidden",
        )
        return _html(body, 200)

    async def home(self, request: web.Request) -> web.StreamResponse:
        """The landing page after login: the layout with Settings in the sidebar."""
        user = await _user_or_login(request)
        main = self._fill("home", username=html.escape(user.username))
        return self._page(user, title="Home", section="home", main=main)

    async def settings(self, request: web.Request) -> web.StreamResponse:
        """Settings: the Settings list next to the sidebar."""
        user = await _user_or_login(request)
        hint = (
            "Select a setting from the Settings list."
            if user.is_admin else "No settings are available to your role."
        )
        return self._page(
            user, title="Settings", section="settings",
            subnav=self._settings_list(user, current=None),
            main=self._fill("settings", hint=html.escape(hint)),
        )

    def settings_page(self, page: _SettingsPage) -> Handler:
        """The handler of one administrators' settings page (anyone else gets a 403 page)."""

        async def handler(request: web.Request) -> web.StreamResponse:
            user = await _user_or_login(request)
            if not user.is_admin:
                main = self._fill(
                    "forbidden",
                    page_title=html.escape(page.title),
                    username=html.escape(user.username),
                    role_label=html.escape(_role_label(user.role)),
                )
                return self._page(
                    user, title="Access denied", section="settings", status=403,
                    subnav=self._settings_list(user, current=None), main=main,
                )
            return self._page(
                user, title=page.title, section="settings",
                subnav=self._settings_list(user, current=page.path),
                main=self._fill(page.template, **_TEMPLATE_VALUES.get(page.template, {})),
                scripts=(page.script,),
            )

        return handler

    async def asset(self, request: web.Request) -> web.StreamResponse:
        """A static asset; only the files shipped in ``static/`` exist."""
        asset = self._assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        # Revalidated on every use, so an upgrade never runs against stale scripts.
        headers = {**PAGE_HEADERS, "Cache-Control": "no-cache", "Content-Type": asset.content_type}
        return web.Response(body=asset.body, headers=headers)


async def _user_or_login(request: web.Request) -> CurrentUser:
    """The logged-in user, or a redirect to the login page that comes back here afterwards."""
    user = await current_user(request)
    if user is None:
        query = urlencode({"next": safe_return_path(request.path)})
        raise web.HTTPFound(f"{LOGIN}?{query}", headers=PAGE_HEADERS)
    return user


def _html(body: str, status: int) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8",
        headers=PAGE_HEADERS,
    )


def add_page_routes(app: web.Application) -> None:
    """Register the Backoffice page routes on ``app``."""
    pages = _Pages()
    app.router.add_get("/", pages.root)
    app.router.add_get("/backoffice", pages.root)
    app.router.add_get(BACKOFFICE, pages.home)
    app.router.add_get(LOGIN, pages.login)
    app.router.add_get(SETTINGS, pages.settings)
    for settings_page in _SETTINGS_PAGES:
        app.router.add_get(settings_page.path, pages.settings_page(settings_page))
    app.router.add_get("/backoffice/static/{name}", pages.asset)
