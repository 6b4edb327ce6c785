"""The bounded LRU with TTL used as the gateway's L1."""

from __future__ import annotations

from auth_gateway.cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_evicts_least_recently_used_past_the_bound() -> None:
    cache: TTLCache[int] = TTLCache(2, 60, Clock())
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None
    assert cache.get("a") == 1
    assert cache.get("c") == 3
    assert len(cache) == 2


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(10, 5, clock)
    cache.put("k", "v")
    clock.now = 4.9
    assert cache.get("k") == "v"
    clock.now = 5.0
    assert cache.get("k") is None
    assert len(cache) == 0


def test_pop_clear_and_disabled_cache() -> None:
    cache: TTLCache[int] = TTLCache(10, 5, Clock())
    cache.put("a", 1)
    cache.pop("a")
    cache.pop("missing")
    assert "a" not in cache
    cache.put("b", 2)
    cache.clear()
    assert len(cache) == 0
    off: TTLCache[int] = TTLCache(0, 5, Clock())
    off.put("a", 1)
    assert off.get("a") is None


def test_an_entry_may_end_before_its_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str] = TTLCache(10, 30, clock)
    cache.put("rolled", "record", ends=clock.now + 3)
    cache.put("plain", "record", ends=clock.now + 60)  # later than the TTL: the TTL holds
    clock.now += 2.9
    assert cache.get("rolled") == "record"
    clock.now += 0.1
    assert cache.get("rolled") is None
    clock.now += 26.9
    assert cache.get("plain") == "record"
    clock.now += 0.1
    assert cache.get("plain") is None



class Vouch:
    """The last moment the owner knew every entry right (None: never)."""

    def __init__(self) -> None:
        self.as_of: float | None = None

    def __call__(self) -> float | None:
        return self.as_of


def test_an_entry_lives_ttl_past_the_last_moment_vouched_for() -> None:
    clock, vouch = Clock(), Vouch()
    cache: TTLCache[str] = TTLCache(10, 5, clock, vouched=vouch)
    cache.put("k", "v")
    vouch.as_of = 3.0
    clock.now = 7.9  # stored 7.9 s ago, vouched for 4.9 s ago
    assert cache.get("k") == "v"
    vouch.as_of = 100.0
    clock.now = 104.9
    assert cache.get("k") == "v"
    clock.now = 105.0  # the owner stopped vouching at 100: ttl seconds later the entry goes
    assert cache.get("k") is None
    vouch.as_of = 104.0  # and a later vouch does not bring back what is gone
    assert cache.get("k") is None


def test_a_vouch_older_than_the_ttl_renews_nothing() -> None:
    clock, vouch = Clock(), Vouch()
    cache: TTLCache[str] = TTLCache(10, 5, clock, vouched=vouch)
    cache.put("k", "v")
    vouch.as_of = 0.5
    clock.now = 5.5
    assert cache.get("k") is None
    cache.put("never", "v")
    vouch.as_of = None
    clock.now += 5
    assert cache.get("never") is None


def test_a_vouch_never_takes_an_entry_past_its_end() -> None:
    clock, vouch = Clock(), Vouch()
    cache: TTLCache[str] = TTLCache(10, 5, clock, vouched=vouch)
    cache.put("rolled", "record", ends=8.0)
    clock.now = 6.0
    vouch.as_of = 5.5
    assert cache.get("rolled") == "record"
    clock.now = 8.0
    vouch.as_of = 7.9
    assert cache.get("rolled") is None
