"""The real key_service app, in this test's event loop, for the gateway's integration tests."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp.test_utils import TestServer

from key_service.keys import Actor, KeyService

ACTOR = Actor(user_id=None, username="gateway-tests", client_address="127.0.0.1")


@dataclass
class RealKeyService:
    """key_service on a migrated SQLite file, with its relay publishing to the test's exchange."""

    server: TestServer
    keys: KeyService

    @property
    def url(self) -> str:
        """Its base URL."""
        return str(self.server.make_url("")).rstrip("/")

    async def issue(self, name: str = "real key") -> dict[str, str]:
        """Issue a key; the two credential headers."""
        issued = await self.keys.issue(name, ACTOR)
        return {
            "X-AuthenticationKeyId": issued.key.key_id,
            "X-AuthenticationKeyValue": issued.secret,
        }

    async def revoke(self, key_id: str) -> None:
        """Revoke a key."""
        await self.keys.revoke(key_id, ACTOR)
