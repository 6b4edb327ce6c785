"""Reading configuration from the environment: typed helpers and the deployment secrets.

Each service maps every variable it reads in one function of its own ``config`` module, built on
these helpers; a missing or malformed variable raises ConfigError naming it.

Deployment secrets (printed fresh by ``python -m key_service generate-secrets``):

==========================  ========================================================  ===========
variable                    value                                                     read by
==========================  ========================================================  ===========
``APIKEYS_PEPPERS``         ``version:base64`` pairs, comma separated; the first      both
                            hashes new keys, the others still verify older ones
``APIKEYS_SIGNING_KEY``     base64 Ed25519 seed that signs events and records         key_service
``APIKEYS_VERIFY_KEYS``     base64 Ed25519 public keys trusted, comma separated       gateway,
                                                                                      subscribers
``APIKEYS_INTERNAL_TOKEN``  bearer token for key_service's ``/internal/v1`` routes    both
==========================  ========================================================  ===========
"""

from __future__ import annotations

import base64
import binascii
import secrets as _secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import ConfigError
from .hashing import PepperSet
from .keys import ALPHABET
from .signing import Signer, Verifier, generate_signing_key

__all__ = [
    "DEFAULT_RABBITMQ_URL",
    "DEFAULT_REDIS_URL",
    "Env",
    "Secrets",
    "generate_secrets",
    "generate_secrets_env",
    "load_secrets",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
MIN_TOKEN_LENGTH = 32


@dataclass(frozen=True)
class Env:
    """Typed, named access to a mapping of environment variables."""

    values: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str:
        """A string; required when ``default`` is None. Blank counts as unset."""
        value = self.values.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default

    def optional(self, name: str) -> str | None:
        """A string, or None when unset or blank."""
        value = self.values.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        """An integer within ``[minimum, maximum]``."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None,
              maximum: float | None = None) -> float:
        """A number within ``[minimum, maximum]``."""
        raw = self.values.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
        if value != value or (minimum is not None and value < minimum):
            raise ConfigError(f"{name} must be at least {minimum}, got {raw}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be at most {maximum}, got {raw}")
        return value

    def log_level(self, name: str, default: str = "INFO") -> str:
        """One of ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` (any case)."""
        level = self.text(name, default).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return level

    def flag(self, name: str, default: bool) -> bool:
        """``1/true/yes/on`` or ``0/false/no/off``."""
        raw = self.values.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str:
        """A URL whose scheme is one of ``schemes`` and that names a host (or a socket path)."""
        value = self.text(name, default)
        try:
            parts = urlsplit(value)
        except ValueError:
            # e.g. "Invalid IPv6 URL": the library's own error, naming the variable (and not
            # quoting the value, which may hold a password).
            raise ConfigError(f"{name} is not a valid URL") from None
        if parts.scheme not in schemes:
            raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL")
        if not parts.netloc and parts.scheme not in ("unix", "sqlite+aiosqlite"):
            raise ConfigError(f"{name} must name a host")
        return value


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
    token = env.text("APIKEYS_INTERNAL_TOKEN")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"APIKEYS_INTERNAL_TOKEN must be at least {MIN_TOKEN_LENGTH} characters")
    loaded_signer = None
    if signer:
        loaded_signer = Signer.from_base64(env.text("APIKEYS_SIGNING_KEY"), "APIKEYS_SIGNING_KEY")
    loaded_verifier = None
    if verifier:
        keys = [k for k in env.text("APIKEYS_VERIFY_KEYS").split(",") if k.strip()]
        loaded_verifier = Verifier.from_base64(keys, "APIKEYS_VERIFY_KEYS")
    return Secrets(
        peppers=_parse_peppers(env.text("APIKEYS_PEPPERS")),
        internal_token=token,
        signer=loaded_signer,
        verifier=loaded_verifier,
    )


def generate_secrets() -> dict[str, str]:
    """A fresh set of every secret both services need, by variable name."""
    signing, verify = generate_signing_key()
    pepper = base64.b64encode(_secrets.token_bytes(32)).decode("ascii")
    return {
        "APIKEYS_PEPPERS": f"p1:{pepper}",
        "APIKEYS_SIGNING_KEY": signing,
        "APIKEYS_VERIFY_KEYS": verify,
        "APIKEYS_INTERNAL_TOKEN": "".join(_secrets.choice(ALPHABET) for _ in range(48)),
    }


def generate_secrets_env() -> str:
    """``generate_secrets()`` as an env file (``NAME=value`` lines) for the operator to keep."""
    lines = "".join(f"{name}={value}\n" for name, value in generate_secrets().items())
    return (
        "# Generated by `python -m key_service generate-secrets`. Keep this file private.\n"
        + lines
    )
