"""The Markdown report, rendered from made-up figures."""

from __future__ import annotations

import math

from apikeys_shared.keys import generate_secret, is_valid_secret
from tests.bench.probe import half_right_secret
from tests.bench.report import ProbeRow, Report, render
from tests.bench.stats import Aim, RankTest, Summary


def _report(**overrides: object) -> Report:
    values: dict[str, object] = {
        "header": ["Run on a test machine."],
        "throughput": [("plain nginx", 20000.0, 1.0, 5.0, 0, 40.0),
                       ("gateway", 4000.0, 10.0, 40.0, 0, 400.0)],
        "aims": [Aim("gateway / nginx", 0.2, 0.25, by_cpu=0.1),
                 Aim("revocation p99 (ms)", 12.0, 100.0, at_least=False)],
        "revocation": Summary(count=100, p50=5.0, p99=12.0, max=30.0),
        "revocation_note": "How it was measured.",
        "probe_rows": [ProbeRow("wrong", 3000, 900.0, 2000.0)],
        "secret_test": RankTest(statistic=1.0, p_value=0.4, median_a=900.0, median_b=905.0,
                                count_a=3000, count_b=3000, alpha=0.05),
        "info_tests": {"unknown ID": RankTest(statistic=1.0, p_value=1e-9, median_a=900.0,
                                              median_b=5000.0, count_a=3000, count_b=500)},
    }
    values.update(overrides)
    return Report(**values)  # type: ignore[arg-type]


def test_render_has_one_row_per_setup_and_the_verdicts() -> None:
    text = render(_report())
    assert "| plain nginx | 20,000 | 1.00 | 5.00 | 0 | 40 |" in text
    assert "| gateway / nginx | 0.20 | ≥ 0.25 | not met | 0.10 |" in text
    assert "| revocation p99 (ms) | 12.00 | ≤ 100.00 | met |  |" in text
    assert "| 100 | 5.00 | 12.00 | 30.00 |" in text
    assert "**no difference found** at alpha = 0.05" in text
    assert "wrong secret vs unknown ID: p = 1e-09 (medians 900 µs vs 5,000 µs)" in text


def test_a_value_that_rounds_to_its_target_shows_a_third_digit() -> None:
    text = render(_report(aims=[Aim("close below", 0.9489, 0.95), Aim("close above", 0.9512, 0.95),
                                Aim("far", 0.91, 0.95)]))
    assert "| close below | 0.949 | ≥ 0.95 | not met |  |" in text
    assert "| close above | 0.951 | ≥ 0.95 | met |  |" in text
    assert "| far | 0.91 | ≥ 0.95 | not met |  |" in text


def test_render_names_failures_and_missing_figures() -> None:
    text = render(_report(revocation=None, aims=[Aim("x", math.nan, 1.0)],
                          failures={"revocation propagation": "gateway did not start"}))
    assert "| x | n/a | ≥ 1.00 | not met |  |" in text
    assert "Not measured" in text
    assert "- **revocation propagation**: gateway did not start" in text


def test_half_right_secret_keeps_exactly_the_first_half_and_a_valid_checksum() -> None:
    import random

    rng = random.Random(1)
    for _ in range(200):
        secret = generate_secret()
        probe = half_right_secret(secret, rng)
        assert is_valid_secret(probe)
        assert probe[:32] == secret[:32]
        assert probe[32] != secret[32]


def test_instructions_are_relative_to_the_first_class_and_absent_when_not_counted() -> None:
    text = render(_report(instructions=[("open", 200_000.0), ("authenticated", 216_000.0)],
                          instructions_note="Counted by callgrind."))
    assert "### Instructions per request" in text
    assert "Counted by callgrind." in text
    assert "| open | 200,000 | 1.00 |" in text
    assert "| authenticated | 216,000 | 1.08 |" in text
    assert "Instructions per request" not in render(_report())
