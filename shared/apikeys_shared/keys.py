"""The key format: key IDs (UUIDv7) and checksummed base62 secrets.

A secret is 64 characters of ``[0-9A-Za-z]``: 58 uniformly random characters followed by the
6-character base62 encoding of the CRC32 of those 58. The checksum lets a gateway refuse a
mistyped or truncated secret without any lookup, and lets a scanner find leaked secrets in text
with a false-positive rate of about 2^-32.
"""

from __future__ import annotations

import re
import secrets as _secrets
import time
import uuid
import zlib
from collections.abc import Iterator

from .errors import MalformedKey

__all__ = [
    "ALPHABET",
    "KEY_ID_LENGTH",
    "SECRET_LENGTH",
    "find_secrets",
    "generate_secret",
    "is_valid_key_id",
    "is_valid_secret",
    "new_key_id",
    "parse_key_id",
    "random_base62",
    "secret_checksum",
]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH = 36
SECRET_LENGTH = 64
RANDOM_LENGTH = 58
CHECKSUM_LENGTH = SECRET_LENGTH - RANDOM_LENGTH
# Bytes at or above this are rejected so that ``b % 62`` is uniform (248 = 4 * 62).
_REJECT_AT = 256 - 256 % len(ALPHABET)

_KEY_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_SECRET_RE = re.compile(r"[0-9A-Za-z]{64}")
_SCAN_RE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{64}(?![0-9A-Za-z])")


def new_key_id() -> str:
    """Return a fresh UUIDv7 (RFC 9562) as a canonical lowercase string; IDs sort by issue time."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(_secrets.token_bytes(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def is_valid_key_id(value: object) -> bool:
    """True when ``value`` is a canonical lowercase RFC 9562 UUID string of 36 characters."""
    return isinstance(value, str) and _KEY_ID_RE.fullmatch(value) is not None


def parse_key_id(value: object) -> str:
    """Return ``value`` if it is a canonical key ID, else raise MalformedKey."""
    if not is_valid_key_id(value):
        raise MalformedKey("key ID must be a lowercase UUID of 36 characters")
    assert isinstance(value, str)
    return value


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


def secret_checksum(body: str) -> str:
    """The 6-character base62 CRC32 of the 58-character random part."""
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def random_base62(count: int) -> str:
    """``count`` uniformly random characters of ``[0-9A-Za-z]`` from the OS CSPRNG."""
    out: list[str] = []
    while len(out) < count:
        for byte in _secrets.token_bytes(count * 2):
            if byte < _REJECT_AT:
                out.append(ALPHABET[byte % len(ALPHABET)])
                if len(out) == count:
                    break
    return "".join(out)


def generate_secret() -> str:
    """Return a new 64-character secret from the OS CSPRNG, checksum included."""
    body = random_base62(RANDOM_LENGTH)
    return body + secret_checksum(body)


def is_valid_secret(value: object) -> bool:
    """Check length, alphabet and checksum of a secret, without any lookup."""
    if not isinstance(value, str) or _SECRET_RE.fullmatch(value) is None:
        return False
    return secret_checksum(value[:RANDOM_LENGTH]) == value[RANDOM_LENGTH:]


def find_secrets(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(offset, secret)`` for every well-formed secret standing alone in ``text``."""
    for match in _SCAN_RE.finditer(text):
        if is_valid_secret(match.group()):
            yield match.start(), match.group()

