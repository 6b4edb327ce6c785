"""Keyed BLAKE2b hashing: bound to the key ID and the pepper version, verified in constant time."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apikeys_shared.errors import ConfigError
from apikeys_shared.hashing import PERSON, PepperSet, hash_secret
from apikeys_shared.keys import generate_secret, new_key_id

PEPPERS = PepperSet(current="p2", peppers={"p1": b"1" * 32, "p2": b"2" * 32})
key_ids = st.builds(lambda _: new_key_id(), st.integers())
secrets_st = st.builds(lambda _: generate_secret(), st.integers())


def test_hash_is_keyed_blake2b_256_with_person() -> None:
    key_id, secret = new_key_id(), generate_secret()
    expected = hashlib.blake2b(
        f"{key_id}:{secret}".encode(), digest_size=32, key=b"2" * 32,
        person=PERSON.ljust(16, b"\0"),
    ).digest()
    assert hash_secret(key_id, secret, b"2" * 32) == expected
    assert PEPPERS.hash(key_id, secret) == (expected.hex(), "p2")


@given(key_ids, key_ids, secrets_st)
def test_hash_is_bound_to_the_key_id(id_a: str, id_b: str, secret: str) -> None:
    digest, version = PEPPERS.hash(id_a, secret)
    assert PEPPERS.verify(id_a, secret, digest, version)
    if id_a != id_b:
        assert not PEPPERS.verify(id_b, secret, digest, version)


@given(key_ids, secrets_st)
def test_hash_is_bound_to_the_pepper_version(key_id: str, secret: str) -> None:
    digest_1, _ = PEPPERS.hash(key_id, secret, "p1")
    digest_2, _ = PEPPERS.hash(key_id, secret, "p2")
    assert digest_1 != digest_2
    assert PEPPERS.verify(key_id, secret, digest_1, "p1")
    assert not PEPPERS.verify(key_id, secret, digest_1, "p2")
    assert not PEPPERS.verify(key_id, secret, digest_2, "p1")
    assert not PEPPERS.verify(key_id, secret, digest_1, "p9")  # unknown version


@given(key_ids, secrets_st, secrets_st)
def test_a_wrong_secret_never_verifies(key_id: str, secret: str, other: str) -> None:
    digest, version = PEPPERS.hash(key_id, secret)
    assert PEPPERS.verify(key_id, other, digest, version) == (other == secret)


def test_dummy_verification_never_passes() -> None:
    assert PEPPERS.dummy_verify(generate_secret()) is False


@pytest.mark.parametrize(
    ("current", "peppers"),
    [
        ("p3", {"p1": b"1" * 32}),
        ("P1", {"P1": b"1" * 32}),
        ("p1", {"p1": b"short"}),
        ("p1", {"p1": b"x" * 65}),
    ],
)
def test_bad_pepper_sets_are_refused(current: str, peppers: dict[str, bytes]) -> None:
    with pytest.raises(ConfigError):
        PepperSet(current=current, peppers=peppers)


def test_peppers_do_not_appear_in_repr() -> None:
    assert "1111" not in repr(PEPPERS)


def test_another_domain_hashes_apart_and_never_verifies_across() -> None:
    tokens = PEPPERS.for_domain(b"ks-mgmt-token-v1")
    key_id, secret = new_key_id(), generate_secret()
    api_digest, version = PEPPERS.hash(key_id, secret)
    token_digest, token_version = tokens.hash(key_id, secret)
    assert token_version == version
    assert token_digest != api_digest
    assert token_digest == hash_secret(key_id, secret, b"2" * 32, b"ks-mgmt-token-v1").hex()
    assert not PEPPERS.verify(key_id, secret, token_digest, version)
    assert not tokens.verify(key_id, secret, api_digest, version)
    assert tokens.verify(key_id, secret, token_digest, version)
    assert PEPPERS.person == PERSON  # the API keys' domain is the default, unchanged


@pytest.mark.parametrize("person", [b"", b"x" * 17])
def test_a_personalisation_is_1_to_16_bytes(person: bytes) -> None:
    with pytest.raises(ConfigError):
        PEPPERS.for_domain(person)
