"""The deployment secrets and the variables both services read, declared once.

Each service declares the variables it reads in its own ``config`` module as ``Setting`` objects
(``apikeys_shared.settings``) and reads them in one function; a missing or malformed variable
raises ConfigError naming it. The four deployment secrets (printed fresh by
``python -m key_service generate-secrets``) and the broker, exchange and Redis variables are
declared here, because more than one program reads them.
"""

from __future__ import annotations

import base64
import binascii
import secrets as _secrets
from dataclasses import dataclass, field

from .errors import ConfigError
from .events import EXCHANGE as DEFAULT_EXCHANGE
from .hashing import PepperSet
from .keys import ALPHABET
from .settings import REQUIRED, Env, Setting
from .signing import Signer, Verifier, generate_signing_key

__all__ = [
    "DEFAULT_RABBITMQ_URL",
    "DEFAULT_REDIS_URL",
    "EXCHANGE",
    "INTERNAL_TOKEN",
    "PEPPERS",
    "RABBITMQ_URL",
    "REDIS_URL",
    "SIGNING_KEY",
    "VERIFY_KEYS",
    "Env",
    "Secrets",
    "generate_secrets",
    "generate_secrets_env",
    "load_secrets",
    "verifiers",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
MIN_TOKEN_LENGTH = 32

PEPPERS: Setting[str] = Setting(
    "APIKEYS_PEPPERS", REQUIRED,
    "`version:base64` pairs, comma separated: the peppers of the keyed secret hash. The first "
    "hashes new keys, the others still verify older ones (rotation). The same in key_service "
    "and every gateway",
)
SIGNING_KEY: Setting[str] = Setting(
    "APIKEYS_SIGNING_KEY", REQUIRED,
    "base64 Ed25519 seed (32 bytes) that signs every event and record",
)
VERIFY_KEYS: Setting[str] = Setting(
    "APIKEYS_VERIFY_KEYS", REQUIRED,
    "base64 Ed25519 public keys whose signatures are trusted, comma separated (several during "
    "a rotation of the signing key)",
)
INTERNAL_TOKEN: Setting[str] = Setting(
    "APIKEYS_INTERNAL_TOKEN", REQUIRED,
    f"bearer token of key_service's `/internal/v1` routes (the gateways' feed, lookups and "
    f"usage reports), {MIN_TOKEN_LENGTH}+ characters",
)
REDIS_URL: Setting[str] = Setting(
    "REDIS_URL", DEFAULT_REDIS_URL,
    "Redis: `redis://`, `rediss://` (TLS), `unix://`, "
    "`redis+sentinel://[:pw@]h:p,h:p/service/db`, `redis+cluster://[:pw@]h:p,h:p` "
    "(docs/scaling.md)",
)
RABBITMQ_URL: Setting[str] = Setting(
    "RABBITMQ_URL", DEFAULT_RABBITMQ_URL,
    "RabbitMQ: `amqp://` or `amqps://` (TLS); for a cluster, every node, comma separated: "
    "`amqp://user:pw@h1:5672,h2:5672,h3:5672/vhost` (each connection tries the next node)",
)
EXCHANGE: Setting[str] = Setting(
    "APIKEYS_EXCHANGE", DEFAULT_EXCHANGE, "the topic exchange key events are published to",
)


@dataclass(frozen=True)
class Secrets:
    """The deployment secrets one service needs."""

    peppers: PepperSet
    internal_token: str = field(repr=False)
    signer: Signer | None = field(default=None, repr=False)
    verifier: Verifier | None = None


def _parse_peppers(raw: str) -> PepperSet:
    peppers: dict[str, bytes] = {}
    order: list[str] = []
    for item in raw.split(","):
        version, sep, value = item.strip().partition(":")
        if not sep or not version or not value:
            raise ConfigError("APIKEYS_PEPPERS must be version:base64 pairs separated by commas")
        if version in peppers:
            raise ConfigError(f"APIKEYS_PEPPERS names version {version!r} twice")
        try:
            peppers[version] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"APIKEYS_PEPPERS version {version!r} is not valid base64") from exc
        order.append(version)
    try:
        return PepperSet(current=order[0], peppers=peppers)
    except ConfigError as exc:
        raise ConfigError(f"APIKEYS_PEPPERS: {exc}") from exc


def load_secrets(env: Env, *, signer: bool, verifier: bool) -> Secrets:
    """Read the deployment secrets; ``signer`` / ``verifier`` say which keys this service needs."""
    token = INTERNAL_TOKEN.text(env)
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{INTERNAL_TOKEN.name} must be at least {MIN_TOKEN_LENGTH} characters")
    loaded_signer = None
    if signer:
        loaded_signer = Signer.from_base64(SIGNING_KEY.text(env), SIGNING_KEY.name)
    loaded_verifier = None
    if verifier:
        loaded_verifier = verifiers(VERIFY_KEYS.text(env))
    return Secrets(
        peppers=_parse_peppers(PEPPERS.text(env)),
        internal_token=token,
        signer=loaded_signer,
        verifier=loaded_verifier,
    )


def verifiers(raw: str) -> Verifier:
    """A comma-separated list of base64 verify keys; ConfigError names APIKEYS_VERIFY_KEYS."""
    keys = [k for k in raw.split(",") if k.strip()]
    return Verifier.from_base64(keys, VERIFY_KEYS.name)


def generate_secrets() -> dict[str, str]:
    """A fresh set of every secret both services need, by variable name."""
    signing, verify = generate_signing_key()
    pepper = base64.b64encode(_secrets.token_bytes(32)).decode("ascii")
    return {
        PEPPERS.name: f"p1:{pepper}",
        SIGNING_KEY.name: signing,
        VERIFY_KEYS.name: verify,
        INTERNAL_TOKEN.name: "".join(_secrets.choice(ALPHABET) for _ in range(48)),
    }


def generate_secrets_env() -> str:
    """``generate_secrets()`` as an env file (``NAME=value`` lines) for the operator to keep."""
    lines = "".join(f"{name}={value}\n" for name, value in generate_secrets().items())
    return (
        "# Generated by `python -m key_service generate-secrets`. Keep this file private.\n"
        + lines
    )
