"""Reading the two credential headers strictly, before any lookup.

The request path's "credentials" step (docs/architecture.md). Missing, duplicated and malformed
credentials (including a secret whose checksum is wrong) are refused here, so that no cache,
Redis or key_service work is spent on them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDictProxy, istr

from apikeys_shared.keys import is_valid_key_id, is_valid_secret

__all__ = [
    "ID_HEADER",
    "SECRET_HEADER",
    "CredentialProblem",
    "Credentials",
    "read_credentials",
]

# istr: multidict finds a case-insensitive name without folding its case on every lookup.
ID_HEADER = istr("X-AuthenticationKeyId")
SECRET_HEADER = istr("X-AuthenticationKeyValue")  # a header name, not a secret


class CredentialProblem(enum.Enum):
    """Why the headers were refused before any lookup (the metric label; never told the client)."""

    MISSING = "missing"
    DUPLICATED = "duplicated"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class Credentials:
    """A well-formed key ID and secret; the secret never appears in a repr."""

    key_id: str
    secret: str = field(repr=False)


def read_credentials(
    headers: CIMultiDictProxy[str] | Mapping[str, str],
) -> Credentials | CredentialProblem:
    """The credentials of a request, or why they cannot be used."""
    ids = _all(headers, ID_HEADER)
    secrets = _all(headers, SECRET_HEADER)
    if not ids or not secrets:
        return CredentialProblem.MISSING
    if len(ids) > 1 or len(secrets) > 1:
        return CredentialProblem.DUPLICATED
    key_id, secret = ids[0], secrets[0]
    # No trimming or case folding: a canonical key is sent exactly as issued.
    if not is_valid_key_id(key_id) or not is_valid_secret(secret):
        return CredentialProblem.MALFORMED
    return Credentials(key_id=key_id, secret=secret)


def _all(headers: CIMultiDictProxy[str] | Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, CIMultiDictProxy):
        return headers.getall(name, [])
    value = headers.get(name)
    return [] if value is None else [value]
