"""The gateway's lookup path against the real key_service app (its internal API over HTTP)."""

from __future__ import annotations

from apikeys_shared.keys import generate_secret, new_key_id

from .conftest import GatewayFactory
from .realks import RealKeyService


async def test_keys_issued_and_revoked_in_key_service(
    make_gateway: GatewayFactory, real_key_service: RealKeyService
) -> None:
    gateway = await make_gateway(KEY_SERVICE_URL=real_key_service.url)
    good = await real_key_service.issue("real one")
    resp = await gateway.client.get("/api/x", headers=good)
    assert resp.status == 200
    seen = {n.lower(): v for n, v in (await resp.json())["headers"]}
    assert seen["x-authenticated-key-id"] == good["X-AuthenticationKeyId"]
    assert seen["x-authenticated-key-name"] == "real one"
    # The record key_service served is now shared with the other processes through Redis.
    assert await gateway.redis.get(gateway.store.redis_key(good["X-AuthenticationKeyId"]))

    revoked = await real_key_service.issue("revoked before first use")
    await real_key_service.revoke(revoked["X-AuthenticationKeyId"])
    assert (await gateway.client.get("/api/x", headers=revoked)).status == 401
    unknown = {"X-AuthenticationKeyId": new_key_id(), "X-AuthenticationKeyValue": generate_secret()}
    assert (await gateway.client.get("/api/x", headers=unknown)).status == 401
    wrong = {**good, "X-AuthenticationKeyValue": generate_secret()}
    assert (await gateway.client.get("/api/x", headers=wrong)).status == 401
    assert gateway.backend_requests == 1
