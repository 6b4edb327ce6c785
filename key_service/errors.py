"""The exception tree of key_service; each maps to one HTTP status (see problems.py).

    KeyServiceError          500 unless a subclass says otherwise
    ├── BadRequest           400, optionally naming the ``field`` at fault
    ├── NotAuthenticated     401: no valid session
    ├── Forbidden            403: wrong role, or a missing / wrong CSRF token
    ├── NotFound             404
    ├── Conflict             409: e.g. revoking a revoked key
    ├── UnsupportedMediaType 415
    ├── TooManyRequests      429, with ``retry_after`` seconds
    ├── UserError            a user cannot be created (command line)
    └── DatabaseUnavailable  503: the database does not answer
"""

from __future__ import annotations

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

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class BadRequest(KeyServiceError):
    """The request is malformed; ``field`` names the input at fault when there is one."""

    status = 400


class NotAuthenticated(KeyServiceError):
    """No valid session (or wrong credentials at login)."""

    status = 401


class Forbidden(KeyServiceError):
    """Authenticated, but not allowed (role, or CSRF token)."""

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
        super().__init__(detail)
        self.retry_after = retry_after


class UserError(KeyServiceError):
    """A user cannot be created as asked (name taken, password too short, bad role)."""

    status = 400


class DatabaseUnavailable(KeyServiceError):
    """The database did not answer."""

    status = 503
