"""``GET /api/v1/verify-keys``: the Ed25519 public keys that event signatures verify against.

Public keys are not secrets, so subscribers fetch them here instead of reading a deployment's
secrets file (which also holds the signing key, the peppers and the internal token). The list
is the signing key's own public key (``current``) and, during a rotation, the other keys of
``APIKEYS_VERIFY_KEYS``: the feed keeps events signed by the previous key, and subscribers must
be able to verify those too. See docs/events.md ("Verify keys").
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .appkeys import CONFIG
from .config import KeyServiceConfig

__all__ = ["PATH", "add_verify_keys_route", "published_keys"]

PATH = "/api/v1/verify-keys"
# Long enough to spare key_service a request per event, short enough that a subscriber meets a
# new signing key within a minute even if it never re-reads on an unknown fingerprint.
_MAX_AGE = 60


def published_keys(config: KeyServiceConfig) -> list[dict[str, Any]]:
    """The signing key's public key first, then the other trusted keys, each once."""
    signer = config.secrets.signer
    assert signer is not None  # load_config always reads the signing key
    keys = {signer.key_id: signer.verify_key_base64}
    if config.verify_keys is not None:
        for fingerprint, public in sorted(config.verify_keys.public_keys.items()):
            keys.setdefault(fingerprint, public)
    return [
        {"fingerprint": fingerprint, "public_key": public, "algorithm": "Ed25519",
         "current": fingerprint == signer.key_id}
        for fingerprint, public in keys.items()
    ]


async def verify_keys(request: web.Request) -> web.Response:
    """``GET /api/v1/verify-keys`` (no authentication)."""
    return web.json_response(
        {"keys": published_keys(request.config_dict[CONFIG])},
        headers={"Cache-Control": f"public, max-age={_MAX_AGE}"},
    )


def add_verify_keys_route(app: web.Application) -> None:
    """Register ``/api/v1/verify-keys``."""
    app.router.add_get(PATH, verify_keys)
