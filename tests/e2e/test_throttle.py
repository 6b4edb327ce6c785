"""End to end: an address blocked for failures keeps the keys its gateway process holds.

key_service, RabbitMQ, Redis, one gateway process and the demo backend, as subprocesses. The
gateway trusts 127.0.0.1 as a proxy, so each test speaks for client addresses of its own through
``X-Forwarded-For``; key_service's own metrics count the lookups the gateway made.
"""

from __future__ import annotations

import aiohttp

from apikeys_shared.keys import generate_secret, new_key_id
from tests.support.stack import Admin, Stack, StackOptions, credentials, eventually, metric

THRESHOLD = 3
STACK_OPTIONS = StackOptions(
    gateways=1, failed_auth_threshold=THRESHOLD,
    extra_gateway_env={"GATEWAY_TRUSTED_PROXIES": "127.0.0.1"},
)
_LOOKUPS = {"method": "GET", "route": "/internal/v1/keys/{key_id}"}


async def _status(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int:
    async with http.get(url, headers=headers) as resp:
        await resp.read()
        return resp.status


async def _lookups(http: aiohttp.ClientSession, stack: Stack) -> float:
    """Key lookups key_service has answered (any status)."""
    return await metric(http, stack.key_service_url, "key_service_http_requests_total", _LOOKUPS)


async def test_a_blocked_address_keeps_its_held_keys_on_both_paths(
    stack: Stack, admin: Admin,
) -> None:
    gateway = stack.gateway_urls[0]
    proxied, verify = f"{gateway}/api/orders", f"{gateway}/_auth/verify"
    nat = {"X-Forwarded-For": "198.51.100.23"}
    key_id, secret = await admin.issue("behind the NAT")
    good = {**credentials(key_id, secret), **nat}
    async with aiohttp.ClientSession() as http:
        async def served() -> bool:
            return await _status(http, proxied, good) == 200

        await eventually(served, "the new key is served")
        # Another client behind the same address fails until the address is blocked.
        for _ in range(THRESHOLD):
            guess = {**credentials(new_key_id(), generate_secret()), **nat}
            assert await _status(http, proxied, guess) == 401

        async def blocked() -> bool:
            unknown = {**credentials(new_key_id(), generate_secret()), **nat}
            return await _status(http, proxied, unknown) == 429

        await eventually(blocked, "the address is blocked")
        lookups = await _lookups(http, stack)

        # The held key keeps working, proxied and through forward-auth.
        assert await _status(http, proxied, good) == 200
        assert await _status(http, verify, good) == 204
        # A wrong secret for the held key, and an ID the gateway does not hold, get 429.
        for url in (proxied, verify):
            wrong = {**credentials(key_id, generate_secret()), **nat}
            assert await _status(http, url, wrong) == 429
            unknown = {**credentials(new_key_id(), generate_secret()), **nat}
            assert await _status(http, url, unknown) == 429
        # None of it asked key_service.
        assert await _lookups(http, stack) == lookups
        # The same unknown ID from an address that is not blocked is looked up and refused.
        stranger = {**credentials(new_key_id(), generate_secret()),
                    "X-Forwarded-For": "198.51.100.99"}
        assert await _status(http, proxied, stranger) == 401
        assert await _lookups(http, stack) == lookups + 1
