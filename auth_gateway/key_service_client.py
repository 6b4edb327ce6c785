"""Client of key_service's internal API: one key's latest signed record, the event feed, and
the revocation snapshot a process starts from.

Both routes need the internal bearer token. Transport failures, timeouts, 5xx answers and bodies
that are not the documented shape all become ``KeyServiceUnavailable``; a 404 for a key means the
key does not exist. Signatures are checked by the caller (the KeyStore), not here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

from apikeys_shared.errors import EnvelopeError
from apikeys_shared.events import SignedEvent
from apikeys_shared.snapshot import SignedSnapshot

from .errors import KeyServiceUnavailable

__all__ = ["FeedPage", "KeyServiceClient"]


@dataclass(frozen=True)
class FeedPage:
    """One page of ``/internal/v1/events``: signed events in order, and the feed's last sequence."""

    events: tuple[SignedEvent, ...]
    last_sequence: int


class KeyServiceClient:
    """Calls ``{base_url}/internal/v1/...`` over the app's pooled ClientSession."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, timeout: float
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _get_json(self, path: str, params: dict[str, str] | None = None) -> object | None:
        """GET ``path``; the decoded JSON body, or None on 404."""
        url = f"{self._base}{path}"
        try:
            async with self._session.get(
                url, params=params, headers=self._headers, timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                if resp.status == 404:
                    await resp.release()
                    return None
                if resp.status != 200:
                    raise KeyServiceUnavailable(f"key_service answered {resp.status} for {path}")
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise KeyServiceUnavailable(f"key_service unreachable: {type(exc).__name__}") from exc
        try:
            value: object = json.loads(raw)
        except ValueError as exc:
            raise KeyServiceUnavailable(
                f"key_service sent a body that is not JSON for {path}"
            ) from exc
        return value

    async def fetch_key(self, key_id: str) -> SignedEvent | None:
        """The latest signed record of ``key_id`` (unverified), or None when it does not exist."""
        obj = await self._get_json(f"/internal/v1/keys/{key_id}")
        if obj is None:
            return None
        try:
            return SignedEvent.from_json(obj)
        except EnvelopeError as exc:
            raise KeyServiceUnavailable(
                f"key_service record for a key is malformed: {exc}"
            ) from exc

    async def fetch_events(self, after: int, limit: int = 500) -> FeedPage:
        """Signed events with sequence > ``after`` (unverified), oldest first."""
        obj = await self._get_json(
            "/internal/v1/events", {"after": str(after), "limit": str(limit)}
        )
        if not isinstance(obj, dict):
            raise KeyServiceUnavailable("key_service event feed is missing or not an object")
        raw_events, last = obj.get("events"), obj.get("last_sequence")
        if not isinstance(raw_events, list) or not isinstance(last, int) or isinstance(last, bool):
            raise KeyServiceUnavailable("key_service event feed needs events[] and last_sequence")
        return FeedPage(events=tuple(map(_feed_entry, raw_events)), last_sequence=last)


    async def fetch_snapshot(self, timeout: float) -> SignedSnapshot | None:
        """The signed revocation snapshot (unverified); None when key_service has no such route
        (an older key_service: the caller reads the whole feed instead). ``timeout``: seconds
        for the whole answer, which grows with the number of revoked keys."""
        path = "/internal/v1/snapshot"
        try:
            async with self._session.get(
                f"{self._base}{path}", headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False,
            ) as resp:
                if resp.status == 404:
                    await resp.release()
                    return None
                if resp.status != 200:
                    raise KeyServiceUnavailable(f"key_service answered {resp.status} for {path}")
                body = await resp.read()
                signature = resp.headers.get("X-Signature", "")
                signing_key = resp.headers.get("X-Signing-Key", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise KeyServiceUnavailable(f"key_service unreachable: {type(exc).__name__}") from exc
        return SignedSnapshot(body=body, signature=signature, signing_key=signing_key)


# Stands for a feed entry that is not even shaped like a signed event: it fails verification
# like a forged one, so it is counted and passed over by one sequence, instead of making the
# whole page (and every later catch-up from there) unreadable.
_UNREADABLE = SignedEvent(body=b"", signature="", signing_key="")


def _feed_entry(item: object) -> SignedEvent:
    try:
        return SignedEvent.from_json(item)
    except EnvelopeError:
        return _UNREADABLE
