"""Prometheus metrics of one gateway process (a registry per app, so tests stay apart)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

M = TypeVar("M", Counter, Histogram)

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)


@dataclass
class Metrics:
    """Every metric the gateway exports at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _counts: dict[tuple[Counter, tuple[str, ...]], int] = field(
        default_factory=dict, init=False, repr=False)
    # Requests authenticated on the remembered path: each one an L1 hit and an "ok" verdict.
    fast_ok: int = field(default=0, init=False, repr=False)

    def child(self, metric: M, *labels: str) -> M:
        """``metric.labels(*labels)``, memoised: the hot path pays a dict lookup, not a lock.

        Every label set used here is bounded (route prefixes, statuses, fixed reasons).
        """
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        child: M = found
        return child

    def count(self, metric: Counter, *labels: str) -> None:
        """Add one to ``metric{labels}``: a dict increment now, folded in when collected.

        For the counters every request touches; a Prometheus counter's own ``inc`` takes a
        lock and costs several times as much. Any read of the registry (``/metrics``,
        ``get_sample_value``) sees the counts, as the registry's first collector folds them in.
        """
        key = (metric, labels)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def _fold(self) -> None:
        if self.fast_ok:
            fast, self.fast_ok = self.fast_ok, 0
            self.child(self.cache_lookups, "l1", "hit").inc(fast)
            self.child(self.auth_results, "ok").inc(fast)
        counts = self._counts
        self._counts = {}
        for (metric, labels), n in counts.items():
            self.child(metric, *labels).inc(n)

    def __post_init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        r.register(_Fold(self))  # first, so that it runs before the counters are read
        self.requests = Counter(
            "gateway_http_requests", "Requests answered, by route prefix and status",
            ["route", "status"], registry=r,
        )
        self.auth_results = Counter(
            "gateway_auth_results",
            "Authentication verdicts by reason (ok, missing, duplicated, malformed, unknown, "
            "wrong_secret, revoked, throttled, unavailable)",
            ["reason"], registry=r,
        )
        self.cache_lookups = Counter(
            "gateway_cache_lookups",
            "Key lookups by tier (l1, negative, redis, key_service) and result (hit, miss, error, "
            "skipped); unknown/refused: IDs this process does not know to exist, refused "
            "without a lookup once GATEWAY_UNKNOWN_KEY_LOOKUPS was spent",
            ["tier", "result"], registry=r,
        )
        self.rejected_records = Counter(
            "gateway_rejected_records",
            "Signed records or events refused, by where they came from (redis, key_service, "
            "event, feed) and why (signature, malformed, wrong_key, stale: older than a record "
            "this process applied)",
            ["origin", "reason"], registry=r,
        )
        self.records_applied = Counter(
            "gateway_records_applied", "Signed records written to Redis by apply(), by outcome",
            ["outcome"], registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_seconds", "Time to the upstream's response headers, by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors",
            "Upstream failures by kind (connect, connect_timeout, timeout, reset, pool_exhausted)",
            ["kind"], registry=r,
        )
        self.event_lag = Gauge(
            "gateway_event_lag_seconds",
            "Age of the newest key event applied, when it was applied (set by the event consumer)",
            registry=r,
        )
        self.last_sequence = Gauge(
            "gateway_last_sequence", "Highest event sequence applied by this process", registry=r,
        )
        self.events = Counter(
            "gateway_events", "Key events received, by source (amqp, feed) and outcome",
            ["source", "outcome"], registry=r,
        )
        self.snapshots = Counter(
            "gateway_snapshots",
            "Revocation snapshots a starting process used or passed over, by source (redis, "
            "key_service) and outcome (used, stale, rejected, absent)",
            ["source", "outcome"], registry=r,
        )
        self.keys_in_doubt = Gauge(
            "gateway_keys_in_doubt",
            "Keys named by key events that did not verify, whose Redis copy is not used until "
            "key_service's verified answer or a verified revocation settles them; -1 once there "
            "were too many and every key's Redis copy is doubted (until the process restarts)",
            registry=r,
        )


class _Fold(Collector):
    """Folds ``Metrics.count`` increments into their counters whenever the registry is read."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> list[Metric]:
        self._metrics._fold()
        return []
