"""The timing probe: does the gateway's answer time tell how much of a secret was right?

Three classes of request, all answered 401: a known key ID with a wrong secret, the same ID with
a secret whose first half is the real one (checksum recomputed, so it passes the format check
and reaches the hash compare), and unknown IDs, new ones and a few repeated (for information
only). The classes are shuffled
into one random order so that drift on a busy machine lands on all of them alike, and every
request's latency is measured here, client-side, over keep-alive connections.
"""

from __future__ import annotations

import http.client
import random
import time
from dataclasses import dataclass, field

from apikeys_shared.keys import RANDOM_LENGTH, generate_secret, new_key_id, secret_checksum

from .admin import IssuedKey
from .stats import RankTest, rank_test

__all__ = [
    "HALF_RIGHT",
    "UNKNOWN_ID",
    "UNKNOWN_SEEN",
    "WRONG_SECRET",
    "ProbeError",
    "ProbeResult",
    "half_right_secret",
    "run_probe",
]

WRONG_SECRET = "known ID, wrong secret"
HALF_RIGHT = "known ID, first half of the secret right"
UNKNOWN_ID = "unknown ID, new each request (information)"
UNKNOWN_SEEN = "unknown ID, one of a few seen before (information)"


class ProbeError(RuntimeError):
    """A probe request got something other than the 401 every one of them must get."""


def half_right_secret(secret: str, rng: random.Random) -> str:
    """``secret`` with its first half kept, the rest of the random part redrawn, checksum valid."""
    half = len(secret) // 2
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    while True:
        body = secret[:half] + "".join(rng.choice(alphabet) for _ in range(RANDOM_LENGTH - half))
        candidate = body + secret_checksum(body)
        if candidate[half] != secret[half]:  # exactly the first half right, not one more char
            return candidate


@dataclass
class ProbeResult:
    """Latencies (microseconds) per class and the rank tests between them."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    reconnects: int = 0
    secret_test: RankTest | None = None
    # For information: wrong secret against each unknown-ID class.
    info_tests: dict[str, RankTest] = field(default_factory=dict)


class _Connections:
    """A few keep-alive connections used in turn; a dropped one is reopened and counted."""

    def __init__(self, port: int, count: int) -> None:
        self._conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                       for _ in range(count)]
        self._next = 0
        self.reconnects = 0

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, float]:
        """One GET; returns the status and the latency in microseconds."""
        conn = self._conns[self._next]
        self._next = (self._next + 1) % len(self._conns)
        if conn.sock is None:
            conn.connect()  # never inside the timed span
            self.reconnects += 1
        start = time.perf_counter_ns()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        elapsed = (time.perf_counter_ns() - start) / 1000.0
        if resp.will_close:
            conn.close()
        return resp.status, elapsed

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


def _plan(key: IssuedKey, per_class: int, unknown: int, rng: random.Random,
          seen_ids: list[str]) -> list[tuple[str, dict[str, str]]]:
    plan: list[tuple[str, dict[str, str]]] = []
    for _ in range(per_class):
        plan.append((WRONG_SECRET, {"X-AuthenticationKeyId": key.key_id,
                                    "X-AuthenticationKeyValue": generate_secret()}))
        plan.append((HALF_RIGHT, {"X-AuthenticationKeyId": key.key_id,
                                  "X-AuthenticationKeyValue": half_right_secret(key.secret, rng)}))
    for _ in range(unknown):
        plan.append((UNKNOWN_ID, {"X-AuthenticationKeyId": new_key_id(),
                                  "X-AuthenticationKeyValue": generate_secret()}))
        # The same few unknown IDs again and again: the gateway's negative cache answers.
        plan.append((UNKNOWN_SEEN, {"X-AuthenticationKeyId": rng.choice(seen_ids),
                                    "X-AuthenticationKeyValue": generate_secret()}))
    rng.shuffle(plan)
    return plan


def run_probe(port: int, key: IssuedKey, *, path: str = "/auth/", per_class: int = 3000,
              unknown: int = 500, warmup: int = 300, connections: int = 4,
              seed: int | None = None) -> ProbeResult:
    """Send the shuffled plan to the gateway on ``port`` and collect per-class latencies."""
    rng = random.Random(seed)
    seen_ids = [new_key_id() for _ in range(8)]
    conns = _Connections(port, connections)
    try:
        # Warm-up (discarded): the valid key first, so the record is cached in every worker
        # the connections reach, then a short mixed run.
        for _ in range(warmup):
            status, _ = conns.get(path, key.headers())
            if status != 200:
                raise ProbeError(f"the valid key answered {status} during the warm-up")
        for _cls, headers in _plan(key, warmup // 3, warmup // 3, rng, seen_ids):
            conns.get(path, headers)
        conns.reconnects = 0  # the first connects happened in the warm-up
        result = ProbeResult(samples={WRONG_SECRET: [], HALF_RIGHT: [], UNKNOWN_ID: [],
                                      UNKNOWN_SEEN: []})
        for cls, headers in _plan(key, per_class, unknown, rng, seen_ids):
            status, micros = conns.get(path, headers)
            if status != 401:
                raise ProbeError(f"a {cls!r} request answered {status}, expected 401")
            result.samples[cls].append(micros)
        result.reconnects = conns.reconnects
    finally:
        conns.close()
    result.secret_test = rank_test(result.samples[WRONG_SECRET], result.samples[HALF_RIGHT],
                                   alpha=0.05)
    for cls in (UNKNOWN_ID, UNKNOWN_SEEN):
        if len(result.samples[cls]) >= 2:
            result.info_tests[cls] = rank_test(result.samples[WRONG_SECRET], result.samples[cls],
                                               alpha=0.05)
    return result

