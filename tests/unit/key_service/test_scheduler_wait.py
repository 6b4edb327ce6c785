"""How long the revocation scheduler sleeps between rounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from key_service.scheduler import MIN_WAIT, seconds_until

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("due", "expected"),
    [
        (None, 30.0),  # nothing scheduled: the poll interval
        (NOW + timedelta(seconds=5), 5.0),  # until the next revocation
        (NOW + timedelta(hours=5), 30.0),  # at most the poll interval (rolls elsewhere)
        (NOW, MIN_WAIT),  # due but held by another transaction: look again shortly
        (NOW - timedelta(days=1), MIN_WAIT),
    ],
)
def test_sleep_until_the_next_revocation_within_bounds(
    due: datetime | None, expected: float,
) -> None:
    assert seconds_until(NOW, due, 30.0) == expected
