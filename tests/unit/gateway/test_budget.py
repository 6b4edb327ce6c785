"""The token bucket that bounds lookups of key IDs a gateway process does not know."""

from __future__ import annotations

from auth_gateway.budget import Budget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    budget = Budget(5, clock=clock)
    assert [budget.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.2  # one more unit
    assert [budget.take() for _ in range(2)] == [True, False]
    clock.now += 60  # never more than the burst in store
    assert sum(budget.take() for _ in range(20)) == 5


def test_a_rate_of_zero_never_gives() -> None:
    clock = Clock()
    budget = Budget(0, clock=clock)
    clock.now += 3600
    assert not budget.take()


def test_a_rate_below_one_still_gives_one_at_a_time() -> None:
    clock = Clock()
    budget = Budget(0.5, clock=clock)
    assert budget.take()
    assert not budget.take()
    clock.now += 2
    assert budget.take()
