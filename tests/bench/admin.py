"""A small synchronous client of key_service's JSON API, as an administrator uses it.

Synchronous on purpose: the revocation measurement needs "the revoke call returned" to be one
precise instant, with nothing else scheduled around it.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

__all__ = ["AdminClient", "AdminError", "IssuedKey"]


class AdminError(RuntimeError):
    """key_service answered something other than what the call expects."""


@dataclass(frozen=True)
class IssuedKey:
    """A key as issued: its ID and (once only) its secret."""

    key_id: str
    secret: str

    def headers(self) -> dict[str, str]:
        """The two credential headers of this key."""
        return {"X-AuthenticationKeyId": self.key_id, "X-AuthenticationKeyValue": self.secret}


class AdminClient:
    """A logged-in administrator session over one keep-alive connection."""

    def __init__(self, host: str, port: int) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=30)
        self._cookie = ""
        self._csrf = ""

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              expect: int) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self._cookie:
            headers["Cookie"] = self._cookie
        if self._csrf:
            headers["X-CSRF-Token"] = self._csrf
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._conn.request(method, path, body=data, headers=headers)
            resp = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # key_service closed the keep-alive connection while the benchmark was busy
            # elsewhere: the request never arrived, so sending it again on a new one is safe.
            self._conn.close()
            self._conn.request(method, path, body=data, headers=headers)
            resp = self._conn.getresponse()
        raw = resp.read()
        if resp.status != expect:
            raise AdminError(f"{method} {path} answered {resp.status}, expected {expect}: "
                             f"{raw[:500].decode(errors='replace')}")
        for value in resp.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(value)
            if "ks_session" in jar:
                self._cookie = f"ks_session={jar['ks_session'].value}"
        parsed: dict[str, Any] = json.loads(raw) if raw else {}
        return parsed

    def login(self, username: str, password: str) -> None:
        """Start a session (cookie plus CSRF token)."""
        reply = self._call("POST", "/api/v1/session",
                           {"username": username, "password": password}, 200)
        self._csrf = str(reply["csrf_token"])
        if not self._cookie:
            raise AdminError("login answered 200 without a ks_session cookie")

    def issue(self, name: str) -> IssuedKey:
        """Issue a key and return its ID and secret."""
        reply = self._call("POST", "/api/v1/keys", {"name": name}, 201)
        return IssuedKey(key_id=str(reply["key_id"]), secret=str(reply["secret"]))

    def revoke(self, key_id: str, wait: float | None = None) -> dict[str, Any]:
        """Revoke a key; returns key_service's answer (with ``?wait=``: once every live gateway
        process confirmed, or the wait ran out)."""
        query = "" if wait is None else f"?wait={wait:g}"
        return self._call("POST", f"/api/v1/keys/{key_id}/revoke{query}", None, 200)
