"""The management token's text: prefix, embedded ID, 256 random bits, checksum; and the scanner."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys_shared.keys import find_secrets, new_key_id
from key_service.tokenformat import (
    TOKEN_LENGTH,
    TOKEN_PATTERN,
    TOKEN_PREFIX,
    find_tokens,
    mint_token,
    parse_token,
)

ids = st.builds(lambda _: new_key_id(), st.integers())


@given(ids)
def test_a_minted_token_parses_back_to_its_id(token_id: str) -> None:
    token = mint_token(token_id)
    assert len(token) == TOKEN_LENGTH == 87
    assert token.startswith(TOKEN_PREFIX)
    assert re.fullmatch(TOKEN_PATTERN, token)
    assert parse_token(token) == token_id
    assert token_id.replace("-", "") in token


def test_tokens_are_random() -> None:
    token_id = new_key_id()
    assert len({mint_token(token_id) for _ in range(100)}) == 100


@given(ids, st.data())
def test_any_changed_character_is_refused_without_a_lookup(
    token_id: str, data: st.DataObject,
) -> None:
    token = mint_token(token_id)
    position = data.draw(st.integers(len(TOKEN_PREFIX), len(token) - 1))
    alphabet = "0123456789abcdefABCDEFxyzXYZ_"
    # Drawn from a fixed list (the token is random), then moved on if it is the same character.
    replacement = data.draw(st.sampled_from(alphabet))
    if replacement == token[position]:
        replacement = alphabet[(alphabet.index(replacement) + 1) % len(alphabet)]
    changed = token[:position] + replacement + token[position + 1:]
    # A CRC32 catches every single-character change.
    assert parse_token(changed) is None


@pytest.mark.parametrize(
    "text",
    ["", "ksmt_", "Bearer x", "ksmt_" + "0" * 82, TOKEN_PREFIX.upper() + "0" * 82,
     "x" * TOKEN_LENGTH, "ksmt_" + "é" * 82],
)
def test_malformed_text_is_refused(text: str) -> None:
    assert parse_token(text) is None


def test_truncated_or_extended_tokens_are_refused() -> None:
    token = mint_token(new_key_id())
    assert parse_token(token[:-1]) is None
    assert parse_token(token + "0") is None
    assert parse_token(" " + token) is None


def test_an_id_that_is_no_uuid_is_refused() -> None:
    with pytest.raises(ValueError):
        mint_token("not-a-uuid")


def test_the_scanner_finds_tokens_in_text_and_api_key_scanning_does_not() -> None:
    tokens = [mint_token(new_key_id()) for _ in range(3)]
    text = f"export APIKEYS_TOKEN={tokens[0]}\nAuthorization: Bearer {tokens[1]}\n'{tokens[2]}'"
    assert [t for _, t in find_tokens(text)] == tokens
    # The token is no API key secret to the API key scanner (its random part is not 64 long).
    assert list(find_secrets(text)) == []
    # Glued to other word characters it is not a token standing alone.
    assert list(find_tokens("x" + tokens[0])) == []
    assert list(find_tokens(tokens[0] + "_x")) == []
