"""Throughput and latency of one setup under wrk: a correctness check, a warm-up, a measured run."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .wrk import WrkResult, run_wrk

__all__ = ["LoadSettings", "Scenario", "ScenarioError", "measure"]


class ScenarioError(RuntimeError):
    """The setup does not answer 200 to the request the benchmark would load it with."""


@dataclass(frozen=True)
class LoadSettings:
    """The fixed load every setup gets."""

    connections: int = 64
    threads: int = 2
    duration_s: int = 10
    warmup_s: int = 3


@dataclass(frozen=True)
class Scenario:
    """One row of the table: what it is called, the URL and the headers to send."""

    label: str
    url: str
    headers: Mapping[str, str]


def _check(scenario: Scenario) -> None:
    # A benchmark of 401s would be fast and worthless: make sure the request really passes.
    parts = urlsplit(scenario.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("GET", parts.path or "/", headers=dict(scenario.headers))
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise ScenarioError(
            f"{scenario.label}: GET {scenario.url} answered {resp.status}, expected 200: "
            f"{body[:300].decode(errors='replace')}"
        )


def measure(scenario: Scenario, settings: LoadSettings, script_dir: Path) -> WrkResult:
    """Check the scenario answers 200, warm it up, then return the measured wrk run."""
    _check(scenario)
    runs = [settings.warmup_s, settings.duration_s] if settings.warmup_s > 0 else [
        settings.duration_s]
    result: WrkResult | None = None
    for seconds in runs:  # the last run is the measured one
        result = run_wrk(
            scenario.url, script_dir=script_dir, headers=scenario.headers,
            connections=settings.connections, threads=settings.threads, duration_s=seconds,
        )
    assert result is not None
    return result
