"""The exception tree of key_service; each maps to one HTTP status (see problems.py).

    KeyServiceError          500 unless a subclass says otherwise
    ├── BadRequest           400, optionally naming the ``field`` at fault
    ├── NotAuthenticated     401: no valid session, or no valid management token
    ├── Forbidden            403: wrong role, a missing / wrong CSRF token, a missing scope
    ├── NotFound             404
    ├── Conflict             409: e.g. revoking a revoked key
    ├── UnsupportedMediaType 415
    ├── TooManyRequests      429, with ``retry_after`` seconds
    ├── UserError            a user cannot be created (command line)
    └── DatabaseUnavailable  503: the database does not answer
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BadRequest",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "KeyServiceError",
    "NotAuthenticated",
    "NotFound",
    "TooManyRequests",
    "UnsupportedMediaType",
    "UserError",
]


class KeyServiceError(Exception):
    """Base of every key_service error; ``status`` is its HTTP status."""

    status = 500

    def __init__(
        self, detail: str, *, field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        # Response headers the answer needs (Retry-After, WWW-Authenticate).
        self.headers: Mapping[str, str] = headers or {}


class BadRequest(KeyServiceError):
    """The request is malformed; ``field`` names the input at fault when there is one."""

    status = 400


class NotAuthenticated(KeyServiceError):
    """No valid session or management token (or wrong credentials at login)."""

    status = 401


class Forbidden(KeyServiceError):
    """Authenticated, but not allowed (role, CSRF token, or a token's scopes)."""

    status = 403


class NotFound(KeyServiceError):
    """No such resource."""

    status = 404


class Conflict(KeyServiceError):
    """The resource is not in a state that allows the change."""

    status = 409


class UnsupportedMediaType(KeyServiceError):
    """The body is not of a content type the route accepts."""

    status = 415


class TooManyRequests(KeyServiceError):
    """Throttled; try again after ``retry_after`` seconds."""

    status = 429

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class UserError(KeyServiceError):
    """A user cannot be created as asked (name taken, password too short, bad role)."""

    status = 400


class DatabaseUnavailable(KeyServiceError):
    """The database did not answer."""

    status = 503
