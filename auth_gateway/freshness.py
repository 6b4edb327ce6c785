"""How far behind the newest key event a gateway process may be: its revocation lag.

Pure bookkeeping (no I/O but a log line). A process learns what the newest event is from two
answers of key_service: a feed page (``last_sequence``) and a heartbeat's reply (the same
number). Each is a *report*: "at moment t, the newest sequence was n". When the process's
watermark (every event up to it applied, see sync.py) reaches n, it knows that it was current
as of t: nothing it had not applied existed then. The lag is the time since the latest such
moment, so it grows while the process hears nothing (key_service away) and while it has not
applied what it heard of (RabbitMQ and the feed both behind); docs/operations.md gives the alert
rule on it.

The same moment decides how long L1 keeps a record (``cache``), so two things stop it:

* a report whose newest sequence is below the watermark the process had when it asked: the
  process applied events key_service's history does not hold (a database restored from a
  backup, an asynchronous standby promoted). Its watermark means nothing there any more, so
  the process never counts itself current again (``diverged``; a restart clears it);
* an event the process could not apply for a reason it did not foresee: not current until a
  catch-up has applied everything (``suspend`` / ``resume``).
"""

from __future__ import annotations

import logging

__all__ = ["Freshness"]

log = logging.getLogger("auth_gateway.sync")

# Reports waiting for the watermark to reach them; past this the oldest go (a lag a little
# larger than the truth, never smaller).
_MAX_REPORTS = 64


class Freshness:
    """The latest moment this process knew itself current; times are ``time.monotonic()``."""

    def __init__(self, started: float) -> None:
        self._started = started
        self.current_as_of: float | None = None
        # (newest sequence, as of when): none dominates another (both grow together).
        self._reports: list[tuple[int, float]] = []
        self.diverged = False
        self._suspended = False

    def learn(self, newest: int, as_of: float, watermark: int,
              asked_watermark: int | None = None) -> None:
        """key_service said the newest sequence at ``as_of`` was ``newest``; ``watermark`` is
        the process's now, ``asked_watermark`` its watermark when it asked."""
        if asked_watermark is not None and newest < asked_watermark and not self.diverged:
            self.diverged = True
            self._reports.clear()
            log.error(
                "key_service says the newest key event is %d, but this process had applied "
                "every event up to %d: the database holds another history (restored from a "
                "backup, or an asynchronous standby promoted). This process no longer counts "
                "itself current (its L1 lets records go GATEWAY_L1_TTL after the last moment it "
                "did); restart it", newest, asked_watermark)
        if self.diverged or self._suspended:
            return
        if not any(n <= newest and t >= as_of for n, t in self._reports):
            self._reports = sorted(
                [(n, t) for n, t in self._reports if not (newest <= n and as_of >= t)]
                + [(newest, as_of)]
            )[-_MAX_REPORTS:]
        self.reached(watermark)

    def suspend(self) -> None:
        """An event could not be applied, for a reason not foreseen: not current until
        ``resume``."""
        self._suspended = True
        self._reports.clear()

    def resume(self) -> None:
        """Everything the feed held has been applied since ``suspend``."""
        self._suspended = False

    def reached(self, watermark: int) -> None:
        """Every event up to ``watermark`` is now applied in this process."""
        if self.diverged or self._suspended:
            return
        done = [t for n, t in self._reports if n <= watermark]
        if not done:
            return
        self._reports = [(n, t) for n, t in self._reports if n > watermark]
        latest = max(done)
        if self.current_as_of is None or latest > self.current_as_of:
            self.current_as_of = latest

    def lag(self, now: float) -> float:
        """Seconds since the process last knew itself current (since it started, if never)."""
        since = self._started if self.current_as_of is None else self.current_as_of
        return max(0.0, now - since)
