"""Bounded loads for fault and failover tests, keeping every answer for the assertions.

``Load`` sends requests with valid, revoked and unknown keys to every gateway process and records
what came back (and which key ID the backend saw for each request it answered); ``Probe`` asks
each gateway process about one key; ``AdminLoad`` issues and revokes keys on key_service's JSON
API in a loop, recording each call's outcome. None of them is a benchmark: each worker pauses
between requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from tests.support.stack import Admin, Stack, credentials

__all__ = ["AdminCall", "AdminLoad", "Key", "Load", "Probe"]

WORKERS = 4
PAUSE = 0.02  # between one worker's requests: a bounded load, not a benchmark

Key = tuple[str, str]


@dataclass
class Load:
    """Requests by category against every gateway, with what came back."""

    http: aiohttp.ClientSession
    urls: list[str]
    keys: dict[str, list[Key]]
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    passed: list[tuple[str, str, float]] = field(default_factory=list)  # category, seen ID, start
    answered_by_backend: int = 0
    other: list[str] = field(default_factory=list)
    workers: int = WORKERS
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _worker(self, offset: int) -> None:
        plan = [(c, k) for c, keys in self.keys.items() for k in keys]
        urls = itertools.cycle(self.urls[offset % len(self.urls):] + self.urls[:offset])
        for index in itertools.count(offset):
            if self._stop.is_set():
                return
            category, key = plan[index % len(plan)]
            started = time.monotonic()
            try:
                async with self.http.get(
                    f"{next(urls)}/api/load", headers=credentials(*key)
                ) as resp:
                    body = await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.other.append(f"{category}: {type(exc).__name__}")
                continue
            self.statuses[(category, status)] += 1
            if status == 200:
                self.answered_by_backend += 1
                seen = [v for n, v in json.loads(body)["headers"]
                        if n.lower() == "x-authenticated-key-id"]
                self.passed.append((category, seen[0] if len(seen) == 1 else repr(seen), started))
            elif status == 503 and retry_after is None:
                self.other.append(f"{category}: 503 without Retry-After")
            await asyncio.sleep(PAUSE)

    async def run(self) -> None:
        """Run until ``stop()``."""
        await asyncio.gather(*(self._worker(i) for i in range(self.workers)))

    def stop(self) -> None:
        """Ask the workers to finish."""
        self._stop.set()

    def of(self, category: str) -> Counter[int]:
        """Statuses seen for one category."""
        return Counter({s: n for (c, s), n in self.statuses.items() if c == category})

    def wrongly_forwarded(self, allowed: set[str]) -> int:
        """Requests the backend answered for a key that was not in ``allowed`` at that time."""
        return sum(1 for _category, seen, _ in self.passed if seen not in allowed)


@dataclass
class Probe:
    """Single requests beside the load, counting the ones the backend answered."""

    http: aiohttp.ClientSession
    stack: Stack
    answered_by_backend: int = 0

    async def statuses(self, key: Key) -> list[int]:
        """What each gateway process answers for ``key`` right now."""
        out = []
        for url in self.stack.gateway_urls:
            async with self.http.get(f"{url}/api/probe", headers=credentials(*key)) as resp:
                await resp.read()
                out.append(resp.status)
                if resp.status == 200:
                    self.answered_by_backend += 1
        return out

    async def recovered(self, valid: list[Key], refused: list[Key]) -> bool:
        """Every gateway ready, valid keys pass, the others get the 401."""
        for url in self.stack.gateway_urls:
            async with self.http.get(f"{url}/readyz") as resp:
                if resp.status != 200:
                    return False
        for keys, expected in ((valid, 200), (refused, 401)):
            for key in keys:
                if await self.statuses(key) != [expected] * len(self.stack.gateway_urls):
                    return False
        return True


@dataclass(frozen=True)
class AdminCall:
    """One issue or revoke call and its answer."""

    action: str  # "issue" | "revoke"
    key_id: str | None  # the key revoked, or the key issued (None when the issue failed)
    status: int
    started: float
    ended: float
    problem: str | None = None  # what was wrong with the answer, beyond its status


@dataclass
class AdminLoad:
    """Issue keys in a loop and revoke every other one, recording every call."""

    admin: Admin
    calls: list[AdminCall] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Run until ``stop()``."""
        for n in itertools.count():
            if self._stop.is_set():
                return
            call = await self._call("issue", None, f"churn {n}")
            if call.status == 201 and n % 2 == 0:
                await self._call("revoke", call.key_id, "")
            await asyncio.sleep(PAUSE)

    async def _call(self, action: str, key_id: str | None, name: str) -> AdminCall:
        started = time.monotonic()
        try:
            if action == "issue":
                status, body, headers = await self.admin.try_issue(name)
                key_id = body.get("key_id") if status == 201 else None
            else:
                assert key_id is not None
                status, body, headers = await self.admin.try_revoke(key_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            call = AdminCall(action, key_id, 0, started, time.monotonic(), type(exc).__name__)
            self.calls.append(call)
            return call
        problem = None
        media_type = headers.get("Content-Type", "").split(";")[0]
        if status == 503 and (headers.get("Retry-After") is None
                              or media_type != "application/problem+json"):
            problem = "503 without Retry-After or problem+json"
        elif status not in (200, 201, 503):
            problem = str(body.get("detail"))
        call = AdminCall(action, key_id, status, started, time.monotonic(), problem)
        self.calls.append(call)
        return call

    def stop(self) -> None:
        """Ask the loop to finish after the call in flight."""
        self._stop.set()

    def statuses(self) -> Counter[tuple[str, int]]:
        """How many calls of each action got each status."""
        return Counter((c.action, c.status) for c in self.calls)
