"""Who calls the JSON API, and what they may do: one guard, ``require_scope``, for every route.

Two kinds of caller:

* **A person**, by the session cookie (and, on changes, the CSRF token that
  ``auth.csrf_middleware`` checks). Only a ``system_administrator`` passes, holding every scope;
  any other role gets 403, no session 401.
* **A machine**, by ``Authorization: Bearer <management token>`` (tokens.py), holding the scopes
  its token was created with. A missing scope is a 403 naming it. Every token that is not good
  (malformed, unknown, wrong, revoked) gets the same 401.

A request with a Bearer ``Authorization`` header is a token request, whatever cookies it also
carries: the session is not consulted and the CSRF check does not apply (a browser attaches no
such header to a cross-site request by itself). Token management (``/api/v1/tokens``) takes an
administrator's session only: a token cannot make or revoke tokens (``require_admin_session``).

Put the guard first in a handler::

    principal = await require_scope(request, KEYS_WRITE)
    ... principal.actor(request) for the audit row
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from .appkeys import CONFIG, METRICS, SESSIONMAKER
from .audit import Actor
from .auth import bearer_token, require_admin
from .errors import Forbidden, NotAuthenticated
from .middleware import client_address, request_id
from .scopes import SCOPES
from .tokens import TokenService

__all__ = ["Principal", "require_admin_session", "require_scope", "token_service"]

_PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("principal")
_REFUSED_DETAIL = (
    "the management token is not valid (malformed, unknown or revoked); "
    "send Authorization: Bearer <token>"
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request: an administrator or a management token."""

    kind: Literal["user", "token"]
    name: str
    scopes: frozenset[str]
    user_id: int | None = None
    token_id: str | None = None

    def actor(self, request: web.Request) -> Actor:
        """The actor an audit row of this request records."""
        return Actor(
            user_id=self.user_id, username=self.name, client_address=client_address(request),
            request_id=request_id(request), token_id=self.token_id, kind=self.kind,
        )


def token_service(request: web.Request) -> TokenService:
    """The token service layer bound to this app's database and peppers."""
    app = request.config_dict
    return TokenService(app[SESSIONMAKER], app[CONFIG].secrets.peppers)


async def _from_token(request: web.Request, text: str) -> Principal:
    identity = await token_service(request).verify(text)
    metrics = request.config_dict[METRICS]
    if identity is None:
        metrics.tokens_used.labels("refused").inc()
        raise NotAuthenticated(
            _REFUSED_DETAIL,
            headers={"WWW-Authenticate": 'Bearer realm="key_service", error="invalid_token"'},
        )
    metrics.tokens_used.labels("ok").inc()
    return Principal(kind="token", name=identity.name, scopes=identity.scopes,
                     token_id=identity.token_id)


async def _authenticate(request: web.Request) -> Principal:
    if _PRINCIPAL_KEY in request:
        return request[_PRINCIPAL_KEY]
    text = bearer_token(request)
    if text is not None:
        principal = await _from_token(request, text)
    else:
        user = await require_admin(request)
        principal = Principal(kind="user", name=user.username, scopes=frozenset(SCOPES),
                              user_id=user.user_id)
    request[_PRINCIPAL_KEY] = principal
    return principal


async def require_scope(request: web.Request, scope: str) -> Principal:
    """The caller, if it may use ``scope``: an administrator's session, or a token holding it.

    401 without a session or with a bad token; 403 for another role or a token lacking the
    scope (the problem names it).
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")  # a programming error, not a request's
    principal = await _authenticate(request)
    if scope not in principal.scopes:
        raise Forbidden(
            f"this management token lacks the {scope} scope",
            headers={"WWW-Authenticate":
                     f'Bearer realm="key_service", error="insufficient_scope", scope="{scope}"'},
        )
    return principal


async def require_admin_session(request: web.Request) -> Principal:
    """An administrator's session; a management token is refused with 403 (it cannot manage
    tokens), no session with 401, another role with 403."""
    if bearer_token(request) is not None:
        raise Forbidden(
            "a management token cannot manage management tokens; "
            "use a system_administrator's session"
        )
    return await _authenticate(request)
