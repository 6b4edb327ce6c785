"""The numbers the benchmark reports: percentiles, ratios against aims, and the rank test.

Pure functions, unit-tested in tests/unit/bench/, so that what the table says is checked apart
from the machinery that measures it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Aim",
    "RankTest",
    "Summary",
    "histogram_percentile",
    "merge_histograms",
    "percentile",
    "rank_test",
    "ratio",
    "summarize",
]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    The same definition as numpy's default, so that figures agree with any notebook that
    re-reads the raw samples.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    weight = position - low
    return float(ordered[low] * (1.0 - weight) + ordered[high] * weight)


def histogram_percentile(histogram: Mapping[int, int], q: float) -> float:
    """The nearest-rank ``q``-th percentile of a ``value -> count`` histogram (wrk's definition).

    The smallest value whose cumulative count reaches ``ceil(q / 100 * total)`` (at least 1).
    """
    total = sum(histogram.values())
    if total <= 0:
        raise ValueError("percentile of an empty histogram")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    rank = max(1, math.ceil(q / 100.0 * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def merge_histograms(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """The sum of several ``value -> count`` histograms."""
    merged: dict[int, int] = {}
    for histogram in histograms:
        for value, count in histogram.items():
            merged[value] = merged.get(value, 0) + count
    return merged


@dataclass(frozen=True)
class Summary:
    """Count, p50, p99 and max of one set of samples (same unit as the samples)."""

    count: int
    p50: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    """p50 / p99 / max of ``values``; raises ValueError when there are none."""
    return Summary(
        count=len(values),
        p50=percentile(values, 50),
        p99=percentile(values, 99),
        max=float(max(values)),
    )


@dataclass(frozen=True)
class Aim:
    """A target the issue sets: ``measured`` must reach ``target`` in ``direction``."""

    label: str
    measured: float
    target: float
    at_least: bool = True
    by_cpu: float = math.nan  # the same ratio from CPU time per request, for information

    @property
    def met(self) -> bool:
        """True when the measured value is on the right side of the target (inclusive)."""
        if math.isnan(self.measured):
            return False
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    @property
    def verdict(self) -> str:
        """``met`` or ``not met``, as the table prints it."""
        return "met" if self.met else "not met"


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    if denominator <= 0:
        return math.nan
    return numerator / denominator


@dataclass(frozen=True)
class RankTest:
    """A two-sided Mann-Whitney U test between two latency samples."""

    statistic: float
    p_value: float
    median_a: float
    median_b: float
    count_a: int
    count_b: int
    alpha: float = 0.01

    @property
    def differs(self) -> bool:
        """True when the test rejects "same distribution" at ``alpha``."""
        return self.p_value < self.alpha


def rank_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.01) -> RankTest:
    """Two-sided Mann-Whitney U of ``a`` against ``b`` (scipy), with both medians."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        raise ValueError("the rank test needs at least two samples on each side")
    result = mannwhitneyu(a, b, alternative="two-sided")
    return RankTest(
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        median_a=percentile(a, 50),
        median_b=percentile(b, 50),
        count_a=len(a),
        count_b=len(b),
        alpha=alpha,
    )
