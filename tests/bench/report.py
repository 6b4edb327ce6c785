"""The Markdown the benchmark prints and writes to artifacts/bench/gateway.md.

Pure rendering of already-measured numbers, so it can be unit-tested with made-up figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .stats import Aim, RankTest, Summary

__all__ = ["ProbeRow", "Report", "render"]


@dataclass(frozen=True)
class ProbeRow:
    """One request class of the timing probe (microseconds)."""

    label: str
    count: int
    median_us: float
    p99_us: float


@dataclass(frozen=True)
class Report:
    """Everything one run measured."""

    header: Sequence[str]
    # label, requests/s, p50 ms, p99 ms, errors, proxy CPU µs per request
    throughput: Sequence[tuple[str, float, float, float, int, float]]
    aims: Sequence[Aim]
    revocation: Summary | None
    revocation_note: str
    probe_rows: Sequence[ProbeRow]
    secret_test: RankTest | None
    info_tests: Mapping[str, RankTest]
    notes: Sequence[str] = ()
    failures: Mapping[str, str] | None = None
    # label, instructions per request (callgrind); the note says how they were counted
    instructions: Sequence[tuple[str, float]] = ()
    instructions_note: str = ""
    # The revoke call with ``wait``: its duration, beside the propagation figures.
    revocation_wait: Summary | None = None
    revocation_wait_note: str = ""


def _num(value: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}"


def _aim_text(aim: Aim) -> str:
    sign = "≥" if aim.at_least else "≤"
    cpu = "" if math.isnan(aim.by_cpu) else _num(aim.by_cpu)
    # A value that rounds to its target gets a third digit, so that 0.949 does not show as a
    # "0.95" that is "not met".
    digits = 3 if _num(aim.measured) == _num(aim.target) else 2
    return (f"| {aim.label} | {_num(aim.measured, digits)} | {sign} {_num(aim.target)} | "
            f"{aim.verdict} | {cpu} |")


def render(report: Report) -> str:
    """The whole report as Markdown."""
    out: list[str] = ["## Gateway benchmark", ""]
    out += [f"{line}" for line in report.header]
    out += ["", "| setup | requests/s | p50 ms | p99 ms | errors | proxy CPU µs/request |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, rps, p50, p99, errors, cpu in report.throughput:
        cpu_text = "n/a" if math.isnan(cpu) else _num(cpu, 0)
        out.append(f"| {label} | {_num(rps, 0)} | {_num(p50)} | {_num(p99)} | {errors} "
                   f"| {cpu_text} |")
    out += ["", "| aim | measured | target | verdict | same ratio by CPU/request |",
            "| --- | ---: | ---: | --- | ---: |"]
    out += [_aim_text(aim) for aim in report.aims]
    if report.instructions:
        out += ["", "### Instructions per request", "", report.instructions_note, "",
                "| request class | instructions per request | relative to the first |",
                "| --- | ---: | ---: |"]
        first = report.instructions[0][1]
        out += [f"| {label} | {_num(count, 0)} | {_num(count / first if first else math.nan)} |"
                for label, count in report.instructions]
    out += ["", "### Revocation propagation", "", report.revocation_note, ""]
    if report.revocation is not None:
        rev = report.revocation
        out += ["| revocations | p50 ms | p99 ms | max ms |", "| ---: | ---: | ---: | ---: |",
                f"| {rev.count} | {_num(rev.p50)} | {_num(rev.p99)} | {_num(rev.max)} |"]
    else:
        out.append("Not measured (see failures below).")
    if report.revocation_wait_note:
        out += ["", report.revocation_wait_note, ""]
    if report.revocation_wait is not None:
        wait = report.revocation_wait
        out += ["| revoke calls with `wait` | p50 ms | p99 ms | max ms |",
                "| ---: | ---: | ---: | ---: |",
                f"| {wait.count} | {_num(wait.p50)} | {_num(wait.p99)} | {_num(wait.max)} |"]
    out += ["", "### Timing probe", ""]
    if report.probe_rows:
        out += ["| request class | requests | median µs | p99 µs |",
                "| --- | ---: | ---: | ---: |"]
        out += [f"| {row.label} | {row.count} | {_num(row.median_us, 0)} | {_num(row.p99_us, 0)} |"
                for row in report.probe_rows]
    if report.secret_test is not None:
        test = report.secret_test
        verdict = ("a difference found" if test.differs
                   else "no difference found")
        out += ["", f"Mann-Whitney U, two-sided, wrong secret vs first half right: "
                    f"U = {test.statistic:,.0f}, p = {test.p_value:.3g} → **{verdict}** "
                    f"at alpha = {test.alpha} (medians {_num(test.median_a, 0)} µs vs "
                    f"{_num(test.median_b, 0)} µs)."]
    for label, test in report.info_tests.items():
        name = label.removesuffix(" (information)")
        out += ["", f"For information, the same test of wrong secret vs {name}: "
                    f"p = {test.p_value:.3g} (medians {_num(test.median_a, 0)} µs vs "
                    f"{_num(test.median_b, 0)} µs)."]
    if report.notes:
        out += ["", *[f"- {note}" for note in report.notes]]
    if report.failures:
        out += ["", "### Failures", ""]
        out += [f"- **{part}**: {text}" for part, text in report.failures.items()]
    return "\n".join(out) + "\n"
