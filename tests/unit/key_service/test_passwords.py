"""Password hashing and checking (argon2id through libsodium)."""

from __future__ import annotations

import asyncio

from key_service.users import _DUMMY_HASH, PasswordChecker, hash_password


async def test_check_accepts_only_the_password() -> None:
    checker = PasswordChecker(2)
    stored = await asyncio.to_thread(hash_password, "twelve chars!")
    assert stored.startswith("$argon2id$")
    assert await checker.check(stored, "twelve chars!")
    assert not await checker.check(stored, "twelve chars?")
    assert not await checker.check(None, "twelve chars!")
    assert not await checker.check("not a hash", "twelve chars!")


def test_the_dummy_hash_costs_what_a_real_one_costs() -> None:
    real = hash_password("x" * 12)
    assert _DUMMY_HASH.split("$")[:4] == real.split("$")[:4]
