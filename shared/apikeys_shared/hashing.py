"""Keyed BLAKE2b-256 hashing of secrets, with versioned peppers.

A slow password hash would be wrong here: a secret carries about 345 bits of entropy, so brute
force is hopeless anyway, and a slow hash would hand attackers a CPU denial of service at the
gateway. The pepper (a deployment secret) means a stolen database alone cannot even be used to
test guesses; the key ID is bound into the input so that a hash cannot be moved to another key.

The BLAKE2b personalisation separates hash domains: API keys hash under ``apikey-v1``; any other
kind of secret hashed with the same peppers (key_service's management tokens) gets a PepperSet
of its own personalisation (``PepperSet.for_domain``), so that a hash made for one kind can never
verify a secret of the other.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import nacl.encoding
import nacl.hash

from .errors import ConfigError

__all__ = ["PERSON", "PepperSet", "hash_secret"]

PERSON = b"apikey-v1"
DIGEST_SIZE = 32
_PERSON_MAX = 16  # BLAKE2b's personalisation is at most 16 bytes
_VERSION_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")
_DUMMY_KEY_ID = "00000000-0000-7000-8000-000000000000"


def hash_secret(key_id: str, secret: str, pepper: bytes, person: bytes = PERSON) -> bytes:
    """BLAKE2b-256(key=pepper, person=person, data=key_id ":" secret), raw 32 bytes.

    ``person`` is ``apikey-v1`` for API keys; other kinds of secret name their own domain.
    """
    data = key_id.encode("ascii") + b":" + secret.encode("ascii")
    digest: bytes = nacl.hash.blake2b(
        data, digest_size=DIGEST_SIZE, key=pepper, person=person, encoder=nacl.encoding.RawEncoder
    )
    return digest


@dataclass(frozen=True)
class PepperSet:
    """The peppers this deployment knows, by version; ``current`` hashes new keys."""

    current: str
    peppers: Mapping[str, bytes] = field(repr=False)
    person: bytes = PERSON

    def __post_init__(self) -> None:
        if not 1 <= len(self.person) <= _PERSON_MAX:
            raise ConfigError(f"a hash personalisation is 1 to {_PERSON_MAX} bytes")
        if self.current not in self.peppers:
            raise ConfigError(f"pepper version {self.current!r} is not configured")
        for version, pepper in self.peppers.items():
            if not _VERSION_RE.fullmatch(version):
                raise ConfigError(
                    f"pepper version {version!r} must be 1-16 of [a-z0-9_-], starting alphanumeric"
                )
            if not 16 <= len(pepper) <= 64:
                raise ConfigError(f"pepper {version!r} must be 16 to 64 bytes long")

    def for_domain(self, person: bytes) -> PepperSet:
        """The same peppers hashing under another personalisation (another kind of secret)."""
        return replace(self, person=person)

    def hash(self, key_id: str, secret: str, version: str | None = None) -> tuple[str, str]:
        """Return ``(hex digest, version)`` for a secret, under ``version`` or the current one."""
        version = version or self.current
        return hash_secret(key_id, secret, self.peppers[version], self.person).hex(), version

    def verify(self, key_id: str, secret: str, secret_hash: str, version: str) -> bool:
        """Constant-time check of a secret against a stored hex hash.

        An unknown pepper version still computes a hash, so timing does not tell it apart.
        """
        pepper = self.peppers.get(version)
        if pepper is None:
            self.dummy_verify(secret)
            return False
        computed = hash_secret(key_id, secret, pepper, self.person).hex()
        return hmac.compare_digest(computed.encode("ascii"), secret_hash.encode("ascii"))

    def dummy_verify(self, secret: str) -> bool:
        """Spend the same work as a real verification, for key IDs that do not exist."""
        computed = hash_secret(
            _DUMMY_KEY_ID, secret, self.peppers[self.current], self.person
        ).hex()
        hmac.compare_digest(computed.encode("ascii"), ("0" * 64).encode("ascii"))
        return False
