"""The authentication pipeline of DESIGN §4 steps 2-5 and 7, shared by proxying and forward-auth.

Verdicts are kept apart internally (for metrics and logs) but the client sees only three
outcomes: the one identical 401, a 429 for a throttled address, and a 503 when nothing could
verify the key. A request is let through only on a positive match against an active record.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from apikeys_shared.hashing import PepperSet

from .abuse import FailureCounter, client_address
from .credentials import CredentialProblem, read_credentials
from .errors import VerificationUnavailable
from .keystore import KeyStore
from .metrics import Metrics
from .problems import problem, unauthorized

__all__ = ["Authenticator", "Denial", "Identity"]


@dataclass(frozen=True)
class Identity:
    """Who a request authenticated as."""

    key_id: str
    name: str


@dataclass(frozen=True)
class Denial:
    """Why a request is refused; ``reason`` is for metrics and logs only."""

    reason: str
    status: int = 401
    retry_after: int | None = None
    key_id: str | None = None

    def response(self) -> web.Response:
        """What the client gets."""
        if self.status == 401:
            return unauthorized()
        headers = {"Retry-After": str(self.retry_after or 1)}
        if self.status == 429:
            return problem(429, "Too many failed authentications; retry later.", headers)
        return problem(503, "Keys cannot be verified right now; retry later.", headers)


class Authenticator:
    """Turns a request's credential headers into an Identity or a Denial."""

    def __init__(
        self, *, store: KeyStore, peppers: PepperSet, failures: FailureCounter, metrics: Metrics,
        trusted_proxies: tuple[str, ...] = (), unavailable_retry_after: int = 2,
    ) -> None:
        self._store = store
        self._peppers = peppers
        self._failures = failures
        self._metrics = metrics
        self._trusted = trusted_proxies
        self._retry_after = unavailable_retry_after

    def client_address(self, request: web.BaseRequest) -> str:
        """The address failures are counted against."""
        return client_address(
            request.remote, request.headers.getall("X-Forwarded-For", []), self._trusted
        )

    async def authenticate(self, request: web.BaseRequest) -> Identity | Denial:
        """Verify the request's credentials; see the module docstring."""
        verdict = await self._verdict(request)
        reason = "ok" if isinstance(verdict, Identity) else verdict.reason
        self._metrics.child(self._metrics.auth_results, reason).inc()
        return verdict

    async def _verdict(self, request: web.BaseRequest) -> Identity | Denial:
        address = self.client_address(request)
        wait = await self._failures.retry_after(address)
        if wait is not None:
            return Denial("throttled", status=429, retry_after=wait)
        creds = read_credentials(request.headers)
        if isinstance(creds, CredentialProblem):
            await self._failures.record_failure(address)
            return Denial(creds.value)
        try:
            record = await self._store.lookup(creds.key_id)
        except VerificationUnavailable:
            return Denial(
                "unavailable", status=503, retry_after=self._retry_after, key_id=creds.key_id
            )
        if record is None:
            # Same work as a real check, so that response time does not reveal unknown IDs.
            self._peppers.dummy_verify(creds.secret)
            denial = Denial("unknown", key_id=creds.key_id)
        elif not self._peppers.verify(
            creds.key_id, creds.secret, record.secret_hash, record.hash_version
        ):
            denial = Denial("wrong_secret", key_id=creds.key_id)
        elif not record.active:
            denial = Denial("revoked", key_id=creds.key_id)
        else:
            return Identity(key_id=record.key_id, name=record.name)
        await self._failures.record_failure(address)
        return denial
