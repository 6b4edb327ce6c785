"""Key IDs and secrets: format, checksum, randomness, scanning."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from apikeys_shared.errors import MalformedKey
from apikeys_shared.keys import (
    ALPHABET,
    RANDOM_LENGTH,
    SECRET_LENGTH,
    find_secrets,
    generate_secret,
    is_valid_key_id,
    is_valid_secret,
    new_key_id,
    parse_key_id,
    secret_checksum,
)

secrets_st = st.builds(lambda _: generate_secret(), st.integers())


def test_key_ids_are_canonical_uuidv7_in_time_order() -> None:
    ids = [new_key_id() for _ in range(1000)]
    for key_id in ids:
        parsed = uuid.UUID(key_id)
        assert str(parsed) == key_id
        assert len(key_id) == 36
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert is_valid_key_id(key_id)
    assert len(set(ids)) == len(ids)
    # the 48-bit millisecond prefix never goes backwards
    stamps = [int(k.replace("-", "")[:12], 16) for k in ids]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-a-uuid",
        str(uuid.uuid4()).upper(),
        "{" + str(uuid.uuid4()) + "}",
        str(uuid.uuid4()).replace("-", ""),
        str(uuid.uuid4()) + " ",
        " " + str(uuid.uuid4()),
        str(uuid.uuid4())[:-1] + "g",
        "00000000-0000-0000-c000-000000000000",  # bad variant
        None,
        42,
        b"01a21d95-3136-734a-923c-606835ca51a5",
        "01a21d95-3136-734a-923c-606835ca51a5\n",
    ],
)
def test_malformed_key_ids_are_rejected(value: object) -> None:
    assert not is_valid_key_id(value)
    with pytest.raises(MalformedKey):
        parse_key_id(value)


@given(st.uuids())
def test_every_canonical_uuid_is_accepted(value: uuid.UUID) -> None:
    assert is_valid_key_id(str(value)) == (value.variant == uuid.RFC_4122)


@given(secrets_st)
def test_every_generated_secret_validates(secret: str) -> None:
    assert len(secret) == SECRET_LENGTH == 64
    assert set(secret) <= set(ALPHABET)
    assert is_valid_secret(secret)
    assert secret[RANDOM_LENGTH:] == secret_checksum(secret[:RANDOM_LENGTH])


@given(secrets_st, st.integers(0, SECRET_LENGTH - 1), st.sampled_from(ALPHABET))
def test_any_single_character_change_fails_the_checksum(
    secret: str, position: int, replacement: str
) -> None:
    if secret[position] == replacement:
        replacement = ALPHABET[(ALPHABET.index(replacement) + 1) % len(ALPHABET)]
    changed = secret[:position] + replacement + secret[position + 1 :]
    assert not is_valid_secret(changed)


@given(secrets_st, st.integers(0, SECRET_LENGTH - 2))
def test_adjacent_transpositions_fail_the_checksum(secret: str, position: int) -> None:
    swapped = (
        secret[:position] + secret[position + 1] + secret[position] + secret[position + 2 :]
    )
    if swapped != secret:
        assert not is_valid_secret(swapped)


@given(st.text(max_size=80))
def test_arbitrary_text_is_almost_never_a_secret(text: str) -> None:
    if len(text) != 64 or not set(text) <= set(ALPHABET):
        assert not is_valid_secret(text)


@pytest.mark.parametrize("value", [None, 7, b"x" * 64, "a" * 63, "a" * 65, "!" * 64])
def test_wrong_types_and_lengths_are_not_secrets(value: object) -> None:
    assert not is_valid_secret(value)


def test_no_secret_is_produced_twice_in_100000() -> None:
    produced = {generate_secret() for _ in range(100_000)}
    assert len(produced) == 100_000


def test_character_frequencies_are_uniform() -> None:
    # 20,000 secrets x 58 random characters = 1.16 M samples over 62 symbols. A modulo bias of
    # the kind rejection sampling prevents (256 % 62 = 8 over-represented symbols) would push
    # the statistic far past any sane threshold; a fair source fails this about once in 10^6.
    counts: Counter[str] = Counter()
    for _ in range(20_000):
        counts.update(generate_secret()[:RANDOM_LENGTH])
    observed = [counts[c] for c in ALPHABET]
    result = chisquare(observed)
    assert result.pvalue > 1e-6, (result.statistic, observed)
    # and position by position: no column is skewed either (first and last random character)
    for column in (0, RANDOM_LENGTH - 1):
        col = Counter(generate_secret()[column] for _ in range(12_400))
        assert chisquare([col[c] for c in ALPHABET]).pvalue > 1e-6


def test_scanner_finds_secrets_in_text_and_ignores_lookalikes() -> None:
    a, b = generate_secret(), generate_secret()
    broken = a[:-1] + ("0" if a[-1] != "0" else "1")
    text = (
        f"config: key={a}\n"
        f"log line with {b}, and a near miss {broken}.\n"
        f"embedded x{generate_secret()}y is not standalone\n"
        f"{'A' * 64} looks right but has no checksum"
    )
    found = list(find_secrets(text))
    assert [s for _, s in found] == [a, b]
    for offset, secret in found:
        assert text[offset : offset + 64] == secret


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=200), secrets_st)
def test_scanner_finds_a_secret_wherever_it_stands_alone(noise: str, secret: str) -> None:
    cut = len(noise) // 2
    text = noise[:cut] + " " + secret + " " + noise[cut:]
    assert secret in [s for _, s in find_secrets(text)]
