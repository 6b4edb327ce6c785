"""Strict reading of the two credential headers, before any lookup."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from apikeys_shared.keys import generate_secret, new_key_id
from auth_gateway.credentials import CredentialProblem, Credentials, read_credentials

KEY_ID = new_key_id()
SECRET = generate_secret()


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_well_formed_pair() -> None:
    creds = read_credentials(
        _headers(("x-authenticationkeyid", KEY_ID), ("X-AuthenticationKeyValue", SECRET))
    )
    assert creds == Credentials(KEY_ID, SECRET)
    assert SECRET not in repr(creds)


def _bad_checksum() -> str:
    last = "A" if SECRET[-1] != "A" else "B"
    return SECRET[:-1] + last


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [
        ((), CredentialProblem.MISSING),
        ((("X-AuthenticationKeyId", KEY_ID),), CredentialProblem.MISSING),
        ((("X-AuthenticationKeyValue", SECRET),), CredentialProblem.MISSING),
        ((("X-AuthenticationKeyId", KEY_ID), ("X-AuthenticationKeyId", KEY_ID),
          ("X-AuthenticationKeyValue", SECRET)), CredentialProblem.DUPLICATED),
        ((("X-AuthenticationKeyId", KEY_ID), ("X-AuthenticationKeyValue", SECRET),
          ("x-authenticationkeyvalue", SECRET)), CredentialProblem.DUPLICATED),
        ((("X-AuthenticationKeyId", KEY_ID.upper()), ("X-AuthenticationKeyValue", SECRET)),
         CredentialProblem.MALFORMED),
        ((("X-AuthenticationKeyId", "not-a-uuid"), ("X-AuthenticationKeyValue", SECRET)),
         CredentialProblem.MALFORMED),
        ((("X-AuthenticationKeyId", KEY_ID), ("X-AuthenticationKeyValue", SECRET[:-1])),
         CredentialProblem.MALFORMED),
        ((("X-AuthenticationKeyId", KEY_ID), ("X-AuthenticationKeyValue", _bad_checksum())),
         CredentialProblem.MALFORMED),
        ((("X-AuthenticationKeyId", KEY_ID), ("X-AuthenticationKeyValue", f"{SECRET},{SECRET}")),
         CredentialProblem.MALFORMED),
        ((("X-AuthenticationKeyId", ""), ("X-AuthenticationKeyValue", "")),
         CredentialProblem.MALFORMED),
    ],
)
def test_refused_before_lookup(
    pairs: tuple[tuple[str, str], ...], problem: CredentialProblem
) -> None:
    assert read_credentials(_headers(*pairs)) is problem
