"""Throughput and latency of the compared setups under wrk, measured in interleaved rounds.

Every setup is checked (it must answer 200), warmed up, and then measured in rounds whose order
alternates (A B C D, then D C B A, ...), so that a change in the machine's background load
during the run falls on every setup alike instead of on whichever ran at that moment. The
rounds of one setup are merged exactly: requests over seconds, and latency percentiles from the
sum of wrk's histograms.
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from auth_gateway.credentials import ID_HEADER, SECRET_HEADER

from .cpu import cpu_seconds
from .stats import histogram_percentile, merge_histograms
from .wrk import WrkResult, run_wrk

__all__ = ["LoadSettings", "Measurement", "Scenario", "ScenarioError", "combine", "measure_all"]


class ScenarioError(RuntimeError):
    """The setup does not answer 200 to the request the benchmark would load it with."""


@dataclass(frozen=True)
class LoadSettings:
    """The fixed load every setup gets: ``duration_s`` in total, split into ``rounds``."""

    connections: int = 64
    threads: int = 2
    duration_s: int = 10
    warmup_s: int = 2
    rounds: int = 2


@dataclass(frozen=True)
class Scenario:
    """One row of the table: what it is called, the URL and the headers to send."""

    label: str
    url: str
    headers: Mapping[str, str]
    # ``ID SECRET`` lines: every request sends the next pair (wrk.rotating_lua), after headers.
    keys_file: Path | None = None


@dataclass(frozen=True)
class Measurement:
    """One setup's merged rounds."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rounds: int
    cpu_s: float = 0.0  # CPU seconds the proxies under test used in the measured rounds

    @property
    def rps(self) -> float:
        """Completed requests per second over all measured rounds."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """Proxy CPU time per completed request, in microseconds."""
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")


def combine(runs: Sequence[WrkResult], cpu_s: float = 0.0) -> Measurement:
    """Merge the rounds of one setup exactly (histograms summed, not percentiles averaged)."""
    histogram = merge_histograms(run.histogram for run in runs)
    return Measurement(
        requests=sum(run.requests for run in runs),
        duration_s=sum(run.duration_s for run in runs),
        p50_ms=histogram_percentile(histogram, 50) / 1000.0,
        p99_ms=histogram_percentile(histogram, 99) / 1000.0,
        errors=sum(run.errors for run in runs),
        rounds=len(runs),
        cpu_s=cpu_s,
    )


def _check(scenario: Scenario) -> None:
    # A benchmark of 401s would be fast and worthless: make sure the request really passes.
    parts = urlsplit(scenario.url)
    headers = dict(scenario.headers)
    if scenario.keys_file is not None:
        with scenario.keys_file.open() as pairs:
            key_id, secret = pairs.readline().split()
        headers.update({ID_HEADER: key_id, SECRET_HEADER: secret})
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ScenarioError(
            f"{scenario.label}: GET {scenario.url} answered {resp.status}, expected 200: "
            f"{body[:300].decode(errors='replace')}"
        )


def round_orders(count: int, rounds: int) -> list[list[int]]:
    """The order of the setups in each round: forward, backward, forward, ..."""
    forward = list(range(count))
    return [forward if i % 2 == 0 else forward[::-1] for i in range(rounds)]


def measure_all(scenarios: Sequence[Scenario], settings: LoadSettings, script_dir: Path,
                cpu_roots: Sequence[int] = (), progress: bool = True) -> dict[str, Measurement]:
    """Check and warm up every setup, then measure them in alternating rounds.

    ``cpu_roots`` are the process trees of the proxies under test (not the upstream, not wrk);
    their CPU time during each measured run is added to that setup's.
    """
    def wrk(scenario: Scenario, seconds: int) -> WrkResult:
        return run_wrk(scenario.url, script_dir=script_dir, headers=scenario.headers,
                       connections=settings.connections, threads=settings.threads,
                       duration_s=seconds, keys_file=scenario.keys_file)

    for scenario in scenarios:
        _check(scenario)
        if settings.warmup_s > 0:
            wrk(scenario, settings.warmup_s)
    seconds = max(1, settings.duration_s // max(1, settings.rounds))
    runs: dict[str, list[WrkResult]] = {s.label: [] for s in scenarios}
    cpu: dict[str, float] = {s.label: 0.0 for s in scenarios}
    for number, order in enumerate(round_orders(len(scenarios), settings.rounds), start=1):
        for index in order:
            scenario = scenarios[index]
            if progress:
                print(f"  round {number}/{settings.rounds}: {scenario.label} ...",
                      file=sys.stderr, flush=True)
            before = cpu_seconds(cpu_roots)
            runs[scenario.label].append(wrk(scenario, seconds))
            cpu[scenario.label] += cpu_seconds(cpu_roots) - before
    return {label: combine(results, cpu[label]) for label, results in runs.items()}
