"""The shared key library: key format, hashing, signed events and configuration helpers.

Used by key_service, auth_gateway and any service that subscribes to key events.
"""

from __future__ import annotations

from .config import DEFAULT_RABBITMQ_URL, DEFAULT_REDIS_URL, Env, Secrets, load_secrets
from .errors import ApiKeysError, ConfigError, EnvelopeError, MalformedKey, SignatureError
from .events import EXCHANGE, Event, KeyRecord, SignedEvent
from .hashing import PepperSet, hash_secret
from .keys import (
    find_secrets,
    generate_secret,
    is_valid_key_id,
    is_valid_secret,
    new_key_id,
    parse_key_id,
)
from .public_events import PublicEvent, PublicRecord, verify_public
from .signing import Signer, Verifier, generate_signing_key

__all__ = [
    "DEFAULT_RABBITMQ_URL",
    "DEFAULT_REDIS_URL",
    "EXCHANGE",
    "ApiKeysError",
    "ConfigError",
    "Env",
    "EnvelopeError",
    "Event",
    "KeyRecord",
    "MalformedKey",
    "PepperSet",
    "PublicEvent",
    "PublicRecord",
    "Secrets",
    "SignatureError",
    "SignedEvent",
    "Signer",
    "Verifier",
    "find_secrets",
    "generate_secret",
    "generate_signing_key",
    "hash_secret",
    "is_valid_key_id",
    "is_valid_secret",
    "load_secrets",
    "new_key_id",
    "parse_key_id",
    "verify_public",
]
