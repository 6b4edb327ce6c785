"""The management token's text: ``ksmt_<token ID as 32 hex>_<43 random><6 checksum>``.

    ksmt_0193a5d27f3e7b1a9c4e2d8f6a1b3c5d_x8Kp...(43 characters of [0-9A-Za-z])...Q1w2E3

* ``ksmt_`` ("key_service management token") lets secret scanners (GitHub's, gitleaks,
  trufflehog) recognise a leaked token by a rule as short as a regular expression, and people
  tell it from an API key secret at a glance. Underscores keep it one word, so a double click
  selects all of it.
* The token ID (a UUIDv7 without its hyphens) lets key_service find the token's row, hash the
  presented token with that row's pepper version and compare in constant time, as for API keys.
* 43 base62 characters carry 256 random bits.
* The last 6 characters are the base62 CRC32 of everything before them: a mistyped or truncated
  token is refused without a lookup, and a scanner confirms a match with a false-positive rate
  of about 2^-32.

Only the keyed hash of the whole token is stored (``hashing.PepperSet`` under the token's own
personalisation, never the API keys' one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from apikeys_shared.keys import is_valid_key_id, random_base62, secret_checksum

__all__ = [
    "TOKEN_LENGTH",
    "TOKEN_PATTERN",
    "TOKEN_PERSON",
    "TOKEN_PREFIX",
    "find_tokens",
    "mint_token",
    "parse_token",
]

TOKEN_PREFIX = "ksmt_"  # noqa: S105 (the public prefix, not a credential)
TOKEN_PERSON = b"ks-mgmt-token-v1"  # the BLAKE2b personalisation of token hashes (16 bytes)
_RANDOM_LENGTH = 43
_CHECKSUM_LENGTH = 6
TOKEN_PATTERN = rf"{TOKEN_PREFIX}[0-9a-f]{{32}}_[0-9A-Za-z]{{{_RANDOM_LENGTH + _CHECKSUM_LENGTH}}}"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 32 + 1 + _RANDOM_LENGTH + _CHECKSUM_LENGTH
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_SCAN_RE = re.compile(rf"(?<![0-9A-Za-z_]){TOKEN_PATTERN}(?![0-9A-Za-z_])")


def _uuid(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def mint_token(token_id: str) -> str:
    """A new token for ``token_id`` (a key-ID-shaped UUID), from the OS CSPRNG."""
    if not is_valid_key_id(token_id):
        raise ValueError("a token ID is a lowercase UUID")
    body = f"{TOKEN_PREFIX}{token_id.replace('-', '')}_{random_base62(_RANDOM_LENGTH)}"
    return body + secret_checksum(body)


def parse_token(text: str) -> str | None:
    """The token ID of a well-formed token (pattern and checksum), or None. No lookup."""
    if len(text) != TOKEN_LENGTH or _TOKEN_RE.fullmatch(text) is None:
        return None
    if secret_checksum(text[:-_CHECKSUM_LENGTH]) != text[-_CHECKSUM_LENGTH:]:
        return None
    token_id = _uuid(text[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + 32])
    return token_id if is_valid_key_id(token_id) else None


def find_tokens(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(offset, token)`` for every well-formed token standing alone in ``text``."""
    for match in _SCAN_RE.finditer(text):
        if parse_token(match.group()) is not None:
            yield match.start(), match.group()
