"""A client of key_service's JSON API for the command line, authenticated by a management token.

Plain ``urllib``, one request at a time: the command line then needs neither the web app nor its
drivers, and answers ``--help`` at once. Three outcomes, as the exit codes tell them apart:

    ApiClientError
    ├── Refused       key_service answered 4xx (a problem+json names the problem)  → exit 1
    └── Unreachable   no answer, a 5xx, or an answer that is not key_service's     → exit 3

Redirects are not followed: a redirect to another address would carry the token with it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http.client import HTTPException
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["ApiClient", "ApiClientError", "Refused", "Unreachable"]

PAGE_SIZE = 500
TIMEOUT = 30.0


class ApiClientError(Exception):
    """A request did not succeed; the message says why."""


class Refused(ApiClientError):
    """key_service refused the request (4xx); ``status``, the problem's ``detail``, and the
    whole problem object (empty when the body was not one)."""

    def __init__(self, status: int, detail: str,
                 problem: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"key_service refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail
        self.problem: Mapping[str, Any] = problem or {}


class Unreachable(ApiClientError):
    """No usable answer: not reachable, timed out, unavailable (5xx), or not key_service."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        raise Unreachable(
            f"{req.full_url} answered a redirect ({code}) to {newurl}; set APIKEYS_URL to "
            "key_service's own address (redirects are not followed, so that the token stays "
            "with it)"
        )


def _problem(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _problem_detail(problem: Mapping[str, Any], fallback: str) -> str:
    detail = problem.get("detail")
    return detail if isinstance(detail, str) and detail else fallback


@dataclass
class ApiClient:
    """Calls to ``base_url``'s ``/api/v1`` with ``Authorization: Bearer <token>``."""

    base_url: str
    token: str = field(repr=False)
    timeout: float = TIMEOUT

    def request(
        self, method: str, path: str, body: object = None,
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON answer, or Refused / Unreachable."""
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        # The scheme is http(s): config.load_client_config refuses any other.
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(_NoRedirects())
        try:
            with opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            problem = _problem(raw)
            detail = _problem_detail(problem, exc.reason or "no detail")
            if exc.code >= 500:
                raise Unreachable(
                    f"key_service could not answer ({exc.code}): {detail}"
                ) from None
            raise Refused(exc.code, detail, problem) from None
        except urllib.error.URLError as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {exc.reason}") from None
        except TimeoutError:
            raise Unreachable(
                f"{self.base_url} did not answer within {self.timeout:g}s"
            ) from None
        except (ConnectionError, HTTPException, OSError) as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {exc}") from None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Unreachable(
                f"{self.base_url} did not answer with JSON: is it key_service's address?"
            ) from None

    def _all(self, path: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Items of a paged list, page after page (at most ``limit`` of them)."""
        items: list[dict[str, Any]] = []
        cursor = ""
        while limit is None or len(items) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
            page = self.request("GET", path, query={"limit": str(size), "cursor": cursor})
            items += page["items"]
            cursor = page["next_cursor"] or ""
            if not cursor:
                break
        return items

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key: active newest first, then revoked."""
        return self._all("/api/v1/keys")

    def get_key(self, key_id: str) -> dict[str, Any]:
        """One key."""
        key: dict[str, Any] = self.request("GET", f"/api/v1/keys/{quote(key_id, safe='')}")
        return key

    def issue_key(self, name: str) -> dict[str, Any]:
        """A new key, with its secret."""
        issued: dict[str, Any] = self.request("POST", "/api/v1/keys", {"name": name})
        return issued

    def revoke_key(self, key_id: str, wait: float | None = None) -> dict[str, Any]:
        """Revoke a key; with ``wait``, once every live gateway process applied it (or after
        ``wait`` seconds). The key, with the receipt as ``propagation``."""
        # The answer may take the whole wait: the client's own timeout comes after it.
        client = self if wait is None else replace(self, timeout=max(self.timeout, wait + 10))
        key: dict[str, Any] = client.request(
            "POST", f"/api/v1/keys/{quote(key_id, safe='')}/revoke",
            query=None if wait is None else {"wait": f"{wait:g}"},
        )
        return key

    def roll_key(self, key_id: str, overlap_seconds: int) -> dict[str, Any]:
        """Roll a key; the replacement with its secret, and the old key as ``replaced_key``."""
        rolled: dict[str, Any] = self.request(
            "POST", f"/api/v1/keys/{quote(key_id, safe='')}/roll",
            {"overlap_seconds": overlap_seconds},
        )
        return rolled

    def audit(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows."""
        return self._all("/api/v1/audit", limit)
