"""Reading the gateway's event counters from a Prometheus page."""

from __future__ import annotations

from tests.bench.metrics import parse_event_sources

PAGE = """\
# HELP gateway_events_total Key events received, by source (amqp, feed) and outcome
# TYPE gateway_events_total counter
gateway_events_total{outcome="applied",source="amqp"} 180.0
gateway_events_total{outcome="stale",source="amqp"} 20.0
gateway_events_total{outcome="applied",source="feed"} 3.0
gateway_events_created{outcome="applied",source="amqp"} 1.7e+09
gateway_http_requests_total{route="/auth",status="200"} 5.0
"""


def test_event_sources_sum_outcomes_per_source_and_skip_other_series() -> None:
    assert parse_event_sources(PAGE) == {"amqp": 200, "feed": 3}


def test_no_events_is_an_empty_mapping() -> None:
    assert parse_event_sources("# nothing here\n") == {}
