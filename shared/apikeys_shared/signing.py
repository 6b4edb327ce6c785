"""Ed25519 signatures over the exact bytes of an event or record.

key_service holds the signing key; gateways and subscribers hold only verify keys, so write
access to RabbitMQ or Redis is not enough to mint a key. Each verify key is named by a short
fingerprint (``x-signing-key``) so that keys can be rotated with both trusted for a while.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from .errors import ConfigError, SignatureError

__all__ = ["Signer", "Verifier", "generate_signing_key", "key_fingerprint"]


def key_fingerprint(verify_key: bytes) -> str:
    """Short, stable name of a verify key: 16 hex characters of its SHA-256."""
    return hashlib.sha256(verify_key).hexdigest()[:16]


def generate_signing_key() -> tuple[str, str]:
    """Return ``(signing key, verify key)`` as base64 text, for configuration files."""
    key = nacl.signing.SigningKey.generate()
    return (
        base64.b64encode(bytes(key)).decode("ascii"),
        base64.b64encode(bytes(key.verify_key)).decode("ascii"),
    )


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{what} is not valid base64") from exc


@dataclass(frozen=True)
class Signer:
    """Signs bytes with the deployment's Ed25519 signing key."""

    _key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def from_base64(cls, value: str, what: str = "signing key") -> Signer:
        """Load a signing key from its base64 32-byte seed."""
        raw = _b64(value, what)
        if len(raw) != 32:
            raise ConfigError(f"{what} must be 32 bytes (base64 of an Ed25519 seed)")
        return cls(nacl.signing.SigningKey(raw))

    @property
    def key_id(self) -> str:
        """The fingerprint sent as ``x-signing-key``."""
        return key_fingerprint(bytes(self._key.verify_key))

    @property
    def verify_key_base64(self) -> str:
        """The matching verify key, base64."""
        return base64.b64encode(bytes(self._key.verify_key)).decode("ascii")

    def sign(self, body: bytes) -> str:
        """Detached Ed25519 signature of ``body``, base64."""
        return base64.b64encode(self._key.sign(body).signature).decode("ascii")


@dataclass(frozen=True)
class Verifier:
    """Verifies signatures against a set of trusted verify keys, by fingerprint."""

    _keys: Mapping[str, nacl.signing.VerifyKey] = field(repr=False)

    @classmethod
    def from_base64(cls, values: Iterable[str], what: str = "verify key") -> Verifier:
        """Trust each base64 verify key in ``values``."""
        keys: dict[str, nacl.signing.VerifyKey] = {}
        for value in values:
            raw = _b64(value, what)
            if len(raw) != 32:
                raise ConfigError(f"{what} must be 32 bytes (base64 of an Ed25519 public key)")
            keys[key_fingerprint(raw)] = nacl.signing.VerifyKey(raw)
        if not keys:
            raise ConfigError(f"at least one {what} is required")
        return cls(keys)

    @property
    def key_ids(self) -> frozenset[str]:
        """Fingerprints of the trusted keys."""
        return frozenset(self._keys)

    @property
    def public_keys(self) -> dict[str, str]:
        """Each trusted key as standard base64 (with padding), by fingerprint."""
        return {
            key_id: base64.b64encode(bytes(key)).decode("ascii")
            for key_id, key in self._keys.items()
        }

    def verify(self, body: bytes, signature: str | bytes | None, key_id: str | None) -> None:
        """Raise SignatureError unless ``signature`` is a valid signature of ``body``.

        ``key_id`` may be None, in which case every trusted key is tried.
        """
        if signature is None:
            raise SignatureError("missing signature")
        if isinstance(signature, bytes):
            signature = signature.decode("ascii", "replace")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SignatureError("signature is not base64") from exc
        if len(raw) != 64:
            raise SignatureError("signature has the wrong length")
        if key_id is not None:
            key = self._keys.get(key_id)
            candidates = [key] if key is not None else []
        else:
            candidates = list(self._keys.values())
        for key in candidates:
            try:
                key.verify(body, raw)
            except nacl.exceptions.BadSignatureError:
                continue
            return
        raise SignatureError("signature does not verify against a trusted key")
