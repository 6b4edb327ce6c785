"""Browser sessions, CSRF tokens and who is logged in.

The session ID is 256 random bits in an HttpOnly, SameSite=Strict cookie; the database keeps only
its SHA-256. The CSRF token is HMAC-SHA256 keyed with the session ID itself: it needs no extra
server secret, ``GET /api/v1/session`` can hand it out again at any time (the page calls it on
load), and it cannot be computed without the cookie that a cross-site attacker never sees. The
database keeps only the token's SHA-256 as well, so a stolen database yields neither.

A request that carries ``Authorization: Bearer`` is a management token's (access.py): its
cookies are not consulted and the CSRF check does not apply to it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import delete, select

from .appkeys import CONFIG, METRICS, SESSIONMAKER
from .bodies import read_json_object
from .db import read_session, write_session
from .errors import BadRequest, Forbidden, NotAuthenticated, TooManyRequests
from .middleware import came_over_https, client_address
from .models import Session, User, utcnow
from .throttle import LoginThrottler
from .users import ADMIN_ROLE, MAX_PASSWORD_LENGTH, PasswordChecker

__all__ = [
    "CSRF_HEADER",
    "PASSWORDS",
    "SESSION_COOKIE",
    "THROTTLE",
    "CurrentUser",
    "add_session_routes",
    "bearer_token",
    "csrf_middleware",
    "current_user",
    "require_admin",
]

log = logging.getLogger("key_service.auth")

SESSION_COOKIE = "ks_session"
CSRF_HEADER = "X-CSRF-Token"
PASSWORDS = web.AppKey("passwords", PasswordChecker)
THROTTLE = web.AppKey("login_throttle", LoginThrottler)
_USER_KEY: web.RequestKey[CurrentUser | None] = web.RequestKey("current_user")
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOGIN_PATH = "/api/v1/session"


@dataclass(frozen=True)
class CurrentUser:
    """The user behind a request's session, and that session's CSRF token."""

    user_id: int
    username: str
    role: str
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        """True for ``system_administrator``, the only role that may manage keys."""
        return self.role == ADMIN_ROLE

    def to_json(self) -> dict[str, str]:
        """The session view returned by ``/api/v1/session``."""
        return {"username": self.username, "role": self.role, "csrf_token": self.csrf_token}


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


def _csrf_for(session_id: str) -> str:
    return hmac.new(session_id.encode("ascii"), b"key_service csrf v1", hashlib.sha256).hexdigest()


def bearer_token(request: web.Request) -> str | None:
    """The credential of an ``Authorization: Bearer`` header (possibly empty), else None.

    Other schemes (a proxy's Basic authentication passed through) are not ours: ignored.
    """
    scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()


async def current_user(request: web.Request) -> CurrentUser | None:
    """The logged-in user of this request, or None (no cookie, unknown or expired session,
    or a request authenticated by a management token instead)."""
    if _USER_KEY in request:
        return request[_USER_KEY]
    user = None if bearer_token(request) is not None else await _lookup(request)
    request[_USER_KEY] = user
    return user


async def _lookup(request: web.Request) -> CurrentUser | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or len(session_id) > 128 or not session_id.isascii():
        return None
    async with read_session(request.config_dict[SESSIONMAKER]) as db:
        row = (await db.execute(
            select(User.id, User.username, User.role)
            .join(Session, Session.user_id == User.id)
            .where(Session.id_hash == _sha256(session_id), Session.expires_at > utcnow())
        )).first()
    if row is None:
        return None
    return CurrentUser(
        user_id=row.id, username=row.username, role=row.role, csrf_token=_csrf_for(session_id)
    )


async def require_admin(request: web.Request) -> CurrentUser:
    """The logged-in administrator; 401 without a session, 403 for any other role."""
    user = await current_user(request)
    if user is None:
        raise NotAuthenticated("log in first (POST /api/v1/session)")
    if not user.is_admin:
        raise Forbidden("only a system_administrator may manage API keys")
    return user


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """State-changing API requests need a session and its CSRF token (except logging in, and
    requests authenticated by a management token, which the route's guard checks)."""
    path = request.path
    if request.method in _UNSAFE and path.startswith("/api/v1/") and not (
        request.method == "POST" and path == _LOGIN_PATH
    ) and bearer_token(request) is None:
        user = await current_user(request)
        if user is None:
            raise NotAuthenticated("log in first (POST /api/v1/session)")
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"),
                                   user.csrf_token.encode("ascii")):
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header")
    return await handler(request)


def _set_cookie(request: web.Request, response: web.StreamResponse, session_id: str) -> None:
    config = request.config_dict[CONFIG]
    secure = config.cookie_secure
    response.set_cookie(
        SESSION_COOKIE, session_id, max_age=config.session_ttl_seconds, path="/",
        httponly=True, samesite="Strict",
        secure=came_over_https(request) if secure is None else secure,
    )


async def login(request: web.Request) -> web.Response:
    """``POST /api/v1/session``: check username and password, start a fresh session."""
    body = await read_json_object(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not username:
        raise BadRequest("username must be a non-empty string", field="username")
    if not isinstance(password, str) or not password:
        raise BadRequest("password must be a non-empty string", field="password")
    if len(username) > 64:
        raise BadRequest("username must be at most 64 characters", field="username")
    if not username.isprintable():
        # No username holds one (see users.validate_username), and PostgreSQL refuses NUL in
        # text: the lookups below would fail in the driver.
        raise BadRequest("username must contain printable characters only", field="username")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadRequest(
            f"password must be at most {MAX_PASSWORD_LENGTH} characters", field="password"
        )
    app = request.config_dict
    metrics, throttle, address = app[METRICS], app[THROTTLE], client_address(request)
    try:
        await throttle.check(username, address)
        # Counted as a failure before the (slow) password check, so that concurrent guesses
        # cannot all pass the check above before any of them is counted.
        await throttle.reserve(username, address)
    except TooManyRequests:
        metrics.logins.labels("throttled").inc()
        raise
    sessionmaker = app[SESSIONMAKER]
    async with read_session(sessionmaker) as db:
        user = await db.scalar(select(User).where(User.username == username))
    ok = await app[PASSWORDS].check(None if user is None else user.password_hash, password)
    if user is None or not ok:
        metrics.logins.labels("failed").inc()
        log.info("login failed", extra={"client": address})
        raise NotAuthenticated("wrong username or password")
    await throttle.succeeded(username, address)
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    async with write_session(sessionmaker) as db:
        # Expired sessions are swept here, at the moment a new one is made; so is the session
        # this browser held before, since a login always starts afresh.
        await db.execute(delete(Session).where(Session.expires_at <= now))
        previous = request.cookies.get(SESSION_COOKIE)
        if previous and previous.isascii():
            await db.execute(delete(Session).where(Session.id_hash == _sha256(previous)))
        db.add(Session(
            id_hash=_sha256(session_id), user_id=user.id,
            csrf_hash=_sha256(_csrf_for(session_id)), created_at=now,
            expires_at=now + timedelta(seconds=app[CONFIG].session_ttl_seconds),
        ))
    metrics.logins.labels("ok").inc()
    log.info("login", extra={"user": user.username, "client": address})
    me = CurrentUser(user.id, user.username, user.role, _csrf_for(session_id))
    response = web.json_response(me.to_json(), headers={"Cache-Control": "no-store"})
    _set_cookie(request, response, session_id)
    return response


async def show_session(request: web.Request) -> web.Response:
    """``GET /api/v1/session``: who is logged in, with the session's CSRF token; 401 if nobody."""
    user = await current_user(request)
    if user is None:
        raise NotAuthenticated("not logged in")
    return web.json_response(user.to_json(), headers={"Cache-Control": "no-store"})


async def logout(request: web.Request) -> web.Response:
    """``DELETE /api/v1/session``: end the session (the CSRF middleware checked the token)."""
    if await current_user(request) is None:
        raise NotAuthenticated("not logged in")
    session_id = request.cookies.get(SESSION_COOKIE, "")
    async with write_session(request.config_dict[SESSIONMAKER]) as db:
        await db.execute(delete(Session).where(Session.id_hash == _sha256(session_id)))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/", samesite="Strict", httponly=True)
    return response


def add_session_routes(app: web.Application) -> None:
    """Register ``/api/v1/session`` (log in, who am I, log out)."""
    app.router.add_post(_LOGIN_PATH, login)
    app.router.add_get(_LOGIN_PATH, show_session)
    app.router.add_delete(_LOGIN_PATH, logout)
