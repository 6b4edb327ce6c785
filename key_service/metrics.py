"""Prometheus metrics of one key_service app (a registry per app, so tests stay apart)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


@dataclass
class Metrics:
    """Every metric key_service exports at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "key_service_http_requests", "HTTP requests handled", ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "key_service_http_request_seconds", "HTTP request latency", ["route"], registry=r,
        )
        self.keys_issued = Counter("key_service_keys_issued", "Keys issued", registry=r)
        self.keys_revoked = Counter("key_service_keys_revoked", "Keys revoked", registry=r)
        self.keys_rolled = Counter(
            "key_service_keys_rolled", "Keys rolled (replaced, revocation scheduled)", registry=r,
        )
        self.scheduler_errors = Counter(
            "key_service_scheduler_errors",
            "Rounds of the revocation scheduler that failed (database away)", registry=r,
        )
        self.tokens_used = Counter(
            "key_service_management_token_requests",
            "API requests that presented a management token, by outcome", ["result"], registry=r,
        )
        self.logins = Counter("key_service_logins", "Login attempts", ["result"], registry=r)
        self.outbox_backlog = Gauge(
            "key_service_outbox_backlog", "Outbox events not yet confirmed by the broker",
            registry=r,
        )
        self.events_published = Counter(
            "key_service_events_published", "Events confirmed by the broker", registry=r,
        )
        self.relay_publish_seconds = Histogram(
            "key_service_relay_publish_seconds",
            "Time from an outbox row's commit to the broker's confirm",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.relay_errors = Counter(
            "key_service_relay_errors", "Relay failures (broker away, nack, return)", registry=r,
        )
