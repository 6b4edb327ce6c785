"""The benchmark's statistics: percentiles, aims and the rank test."""

from __future__ import annotations

import math
import random

import pytest

from tests.bench.stats import (
    Aim,
    histogram_percentile,
    merge_histograms,
    percentile,
    rank_test,
    ratio,
    summarize,
)


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)


def test_percentile_ignores_input_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_percentile_refuses_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_summarize_gives_count_p50_p99_max() -> None:
    summary = summarize([float(i) for i in range(1, 101)])
    assert summary.count == 100
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p99 == pytest.approx(99.01)
    assert summary.max == 100.0


@pytest.mark.parametrize(
    ("measured", "target", "at_least", "met"),
    [
        (0.95, 0.95, True, True),
        (0.94, 0.95, True, False),
        (100.0, 100.0, False, True),
        (100.1, 100.0, False, False),
        (math.nan, 0.5, True, False),
        (math.nan, 100.0, False, False),
    ],
)
def test_aim_verdict(measured: float, target: float, at_least: bool, met: bool) -> None:
    aim = Aim("x", measured, target, at_least=at_least)
    assert aim.met is met
    assert aim.verdict == ("met" if met else "not met")


def test_ratio_is_nan_without_a_positive_denominator() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0))


def test_rank_test_finds_a_shift_and_not_a_reshuffle() -> None:
    rng = random.Random(7)
    base = [rng.gauss(100.0, 10.0) for _ in range(2000)]
    shifted = [x + 5.0 for x in base]
    shuffled = base[:]
    rng.shuffle(shuffled)
    assert rank_test(base, shifted).differs
    same = rank_test(base, shuffled)
    assert not same.differs
    assert same.p_value == pytest.approx(1.0)
    assert same.median_a == same.median_b


def test_rank_test_needs_samples_on_both_sides() -> None:
    with pytest.raises(ValueError, match="at least two"):
        rank_test([1.0], [1.0, 2.0])


def test_histogram_percentile_is_nearest_rank() -> None:
    histogram = {10: 50, 20: 49, 30: 1}
    assert histogram_percentile(histogram, 50) == 10.0
    assert histogram_percentile(histogram, 51) == 20.0
    assert histogram_percentile(histogram, 99) == 20.0
    assert histogram_percentile(histogram, 100) == 30.0
    assert histogram_percentile(histogram, 0) == 10.0


def test_histogram_percentile_agrees_with_the_samples_it_counts() -> None:
    rng = random.Random(3)
    samples = [rng.randrange(1, 500) for _ in range(1001)]
    histogram = merge_histograms([{v: 1} for v in samples])
    ordered = sorted(samples)
    for q in (1, 50, 90, 99):
        assert histogram_percentile(histogram, q) == ordered[math.ceil(q / 100 * 1001) - 1]


def test_histogram_percentile_refuses_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        histogram_percentile({}, 50)


def test_merge_histograms_adds_counts() -> None:
    assert merge_histograms([{1: 2, 3: 1}, {1: 1, 4: 5}]) == {1: 3, 3: 1, 4: 5}


def test_cpu_stat_parsing_survives_spaces_in_the_command_name() -> None:
    from tests.bench.cpu import _TICKS, parse_stat

    fields = ["S", "42"] + ["0"] * 9 + [str(3 * _TICKS), str(_TICKS)] + ["0"] * 30
    ppid, seconds = parse_stat("1234 (nginx: worker) " + " ".join(fields))
    assert ppid == 42
    assert seconds == pytest.approx(4.0)


def test_cpu_tree_follows_descendants_only() -> None:
    from tests.bench.cpu import tree_pids

    stats = {1: (0, 0.0), 10: (1, 1.0), 11: (10, 1.0), 12: (11, 1.0), 20: (1, 1.0)}
    assert tree_pids([10], stats) == {10, 11, 12}
    assert tree_pids([99], stats) == set()
