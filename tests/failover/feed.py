"""Reading key_service's feed whole, and what the failover tests check it against."""

from __future__ import annotations

import itertools

import aiohttp

from apikeys_shared.events import Event, SignedEvent
from apikeys_shared.signing import Verifier
from tests.support.stack import Stack

__all__ = ["out_of_order", "read_feed", "sequence_faults"]


async def read_feed(http: aiohttp.ClientSession, stack: Stack, verifier: Verifier) -> list[Event]:
    """Every event of the feed, verified, in the order the feed gives them."""
    events: list[Event] = []
    after = 0
    token = stack.secrets["APIKEYS_INTERNAL_TOKEN"]
    while True:
        async with http.get(
            f"{stack.key_service_url}/internal/v1/events",
            params={"after": str(after), "limit": "1000"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        for entry in page["events"]:
            events.append(SignedEvent.from_json(entry).verify(verifier))
        if not page["events"] or events[-1].sequence >= page["last_sequence"]:
            return events
        after = events[-1].sequence


def out_of_order(events: list[Event]) -> list[tuple[int, int]]:
    """Each pair of neighbours (earlier, later) whose sequences go backwards."""
    return [(a.sequence, b.sequence) for a, b in itertools.pairwise(events)
            if b.sequence < a.sequence]


def sequence_faults(events: list[Event], *, in_order: bool = True) -> list[str]:
    """What is wrong with a list of events that should be the sequences 1..N, each once, one
    event per sequence (and ``in_order``, in that order): empty when nothing is."""
    faults = []
    sequences = [e.sequence for e in events]
    expected = list(range(1, len(events) + 1))
    if (sequences if in_order else sorted(sequences)) != expected:
        missing = sorted(set(range(1, max(sequences, default=0) + 1)) - set(sequences))
        faults.append(f"not 1..N{' in order' if in_order else ''}: missing {missing[:10]}, "
                      f"backwards {out_of_order(events)[:5]}, got {sequences[:5]}...")
    ids = [e.id for e in events]
    if len(set(ids)) != len(ids):
        faults.append("an event ID appears twice")
    return faults
