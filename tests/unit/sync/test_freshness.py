"""The revocation lag's bookkeeping: current as of the latest report the watermark reached."""

from __future__ import annotations

from auth_gateway.freshness import Freshness


def test_never_current_counts_from_the_start() -> None:
    freshness = Freshness(started=100.0)
    assert freshness.lag(103.0) == 3.0
    freshness.learn(5, as_of=101.0, watermark=4)
    assert freshness.lag(103.0) == 3.0


def test_a_report_already_reached_makes_it_current_as_of_the_report() -> None:
    freshness = Freshness(started=0.0)
    freshness.learn(5, as_of=10.0, watermark=5)
    assert freshness.lag(12.5) == 2.5


def test_a_report_counts_once_the_watermark_reaches_it_and_as_of_its_own_time() -> None:
    freshness = Freshness(started=0.0)
    freshness.learn(7, as_of=10.0, watermark=5)
    freshness.reached(6)
    assert freshness.current_as_of is None
    # Reached at 20: current as of 10, when 7 was the newest, not as of 20 (more may exist).
    freshness.reached(7)
    assert freshness.lag(20.0) == 10.0


def test_an_older_report_reached_later_never_moves_the_moment_back() -> None:
    freshness = Freshness(started=0.0)
    freshness.learn(3, as_of=20.0, watermark=3)
    freshness.learn(2, as_of=15.0, watermark=3)  # arrived late, older
    assert freshness.current_as_of == 20.0


def test_of_two_pending_reports_the_lower_one_counts_first() -> None:
    freshness = Freshness(started=0.0)
    freshness.learn(5, as_of=10.0, watermark=0)
    freshness.learn(9, as_of=12.0, watermark=0)
    freshness.reached(5)
    assert freshness.current_as_of == 10.0
    freshness.reached(9)
    assert freshness.current_as_of == 12.0


def test_a_later_report_of_a_lower_newest_replaces_an_earlier_higher_one() -> None:
    freshness = Freshness(started=0.0)
    freshness.learn(9, as_of=10.0, watermark=0)
    freshness.learn(4, as_of=11.0, watermark=0)  # e.g. key_service's answer lagging behind
    freshness.reached(4)
    assert freshness.current_as_of == 11.0
