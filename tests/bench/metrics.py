"""Reading a few counters from a gateway's Prometheus ``/metrics`` page."""

from __future__ import annotations

import re
import urllib.request

__all__ = ["event_sources", "metric", "parse_event_sources"]

_LINE = re.compile(r'^gateway_events_total\{(?P<labels>[^}]*)\}\s+(?P<value>[0-9.eE+-]+)$')
_SOURCE = re.compile(r'source="(?P<source>[^"]*)"')


def parse_event_sources(text: str) -> dict[str, int]:
    """Key events received, summed by ``source`` (amqp, feed), from a metrics page."""
    totals: dict[str, int] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        source = _SOURCE.search(match["labels"])
        if source is not None:
            name = source["source"]
            totals[name] = totals.get(name, 0) + int(float(match["value"]))
    return totals


def event_sources(port: int) -> dict[str, int]:
    """``parse_event_sources`` of the gateway listening on ``port``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return parse_event_sources(resp.read().decode())


def metric(port: int, name: str, **labels: str) -> float:
    """A sample from the gateway's /metrics (summed over the workers' lines)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        sample, _, rest = head.partition("{")
        if sample == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total
