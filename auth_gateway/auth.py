"""Credentials to verdict: a request's key headers become an ``Identity`` or a ``Denial``.

Shared by proxying and forward-auth (docs/architecture.md, "The request path"). Verdicts are
kept apart internally (for metrics and logs) but the client sees only three outcomes: the one
identical 401, a 429 for a throttled address, and a 503 when nothing could verify the key. A
request is let through only on a positive match against an active record.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from apikeys_shared.events import KeyRecord
from apikeys_shared.hashing import PepperSet

from .credentials import ID_HEADER, SECRET_HEADER, CredentialProblem, Credentials, read_credentials
from .errors import VerificationUnavailable
from .exchange import Exchange
from .headers import KEY_ID_OUT, KEY_NAME_OUT, header_safe
from .http_server import Request
from .keystore import Held, KeyStore
from .metrics import Metrics
from .problems import UNAUTHORIZED, Reply, problem
from .throttle import FailureCounter

__all__ = ["Authenticator", "Denial", "Identity"]

_compare_digest = hmac.compare_digest
_NO_VALUES: tuple[str, ...] = ()


class Identity:
    """Who a request authenticated as, with the headers that tell the upstream."""

    __slots__ = ("block", "key_id", "name")

    def __init__(self, key_id: str, name: str) -> None:
        self.key_id = key_id
        self.name = name
        # X-Authenticated-Key-Id / -Key-Name, ready to send (a key ID is plain ASCII).
        self.block = b"%s: %s\r\n%s: %s\r\n" % (
            KEY_ID_OUT.encode(), key_id.encode("ascii"),
            KEY_NAME_OUT.encode(), header_safe(name).encode("ascii"),
        )

    def __repr__(self) -> str:
        return f"Identity(key_id={self.key_id!r}, name={self.name!r})"


@dataclass(frozen=True)
class Denial:
    """Why a request is refused; ``reason`` is for metrics and logs only."""

    reason: str
    status: int = 401
    retry_after: int | None = None
    key_id: str | None = None

    def response(self) -> Reply:
        """What the client gets."""
        if self.status == 401:
            return UNAUTHORIZED
        headers = {"Retry-After": str(self.retry_after or 1)}
        if self.status == 429:
            return problem(429, "Too many failed authentications; retry later.", headers)
        return problem(503, "Keys cannot be verified right now; retry later.", headers)


class Authenticator:
    """Gives the verdict on a request's credential headers: an Identity or a Denial.

    The peppered hash (and the secret's checksum) cost more than anything else in
    authentication, so a pair that verified once is remembered on the key's L1 entry
    (``Held.verified``) as a BLAKE2b MAC of the secret under a random prefix of this process,
    with the identity it gave. A request whose secret has that MAC (compared in constant time)
    skips the peppered hash; everything else (header checks, the throttle, the lookup of the
    current record, the active check) runs every time, so revocation and failures work exactly
    as without it: a new record for the key is a new L1 entry, without the note. A wrong secret
    never matches and takes the full path.

    ``verified_now`` is that same remembered path without a single await, for the common case
    (the key's entry in L1, no address blocked, no throttle sync due): a request it answers
    needs no task of its own. Whatever it cannot settle, ``verdict`` does.
    """

    def __init__(
        self, *, store: KeyStore, peppers: PepperSet, failures: FailureCounter, metrics: Metrics,
        unavailable_retry_after: int = 2,
    ) -> None:
        self._store = store
        # The note's MAC: BLAKE2b-256 of a random prefix of this process, then the secret.
        # BLAKE2 has no length extension, so a secret prefix makes it a MAC; its keyed mode
        # would pad the key to a whole 128-byte block and cost a second compression, while
        # prefix and secret (32 + 64 bytes) fit in one.
        self._mac_base = hashlib.blake2b(os.urandom(32), digest_size=32)
        self._peppers = peppers
        self._failures = failures
        self._metrics = metrics
        self._retry_after = unavailable_retry_after
        self._wall = store.wall_clock

    def verified_now(self, exchange: Exchange) -> Identity | None:
        """The identity of a pair verified before, when that can be settled without waiting.

        None means only "not settled here": the caller must then ask ``verdict``. This runs on
        nearly every authenticated request, so it is ``_remembered``'s check written out (on a
        slow machine each Python call is a measurable share of a request); the client's
        address is looked at only when some address is blocked or a read of the blocks other
        processes made is due.
        """
        headers = exchange.request.headers
        try:
            # Exactly one of each, or not settled here (duplicates are refused on the full path).
            (key_id,) = headers.getall(ID_HEADER, _NO_VALUES)
            (secret,) = headers.getall(SECRET_HEADER, _NO_VALUES)
            # The same bytes as _mac's for every text this can encode; a text it cannot (a
            # lone surrogate) was never verified either.
            secret_bytes = secret.encode()
        except (ValueError, UnicodeEncodeError):
            return None
        held = self._store.cached(key_id)
        if held is None:
            return None
        ends = held.ends
        if ends is not None and self._wall() >= ends:
            return None  # a rolled key at its end, by the wall clock: the full path refuses it
        note = held.verified
        # (A note is only ever made on an active record, and a Held's record never changes:
        # the status test is a second line of defence, written out rather than the property.)
        if note is None or held.record.status != "active":
            return None
        mac = self._mac_base.copy()
        mac.update(secret_bytes)
        if not _compare_digest(note[0], mac.digest()):
            return None
        failures = self._failures
        if not failures.quiet() and not failures.clear_now(exchange.group()):
            return None
        self._metrics.fast_ok += 1  # an L1 hit and an "ok" verdict, counted when collected
        identity: Identity = note[1]
        return identity

    async def verdict(self, exchange: Exchange) -> Identity | Denial:
        """The verdict on the request's credentials; see the class docstring."""
        verdict = await self._verdict(exchange)
        reason = "ok" if isinstance(verdict, Identity) else verdict.reason
        self._metrics.count(self._metrics.auth_results, reason)
        return verdict

    async def _verdict(self, exchange: Exchange) -> Identity | Denial:
        address = exchange.group()
        wait = await self._failures.retry_after(address)
        if wait is not None:
            return await self._while_blocked(exchange.request, address, wait)
        request = exchange.request
        remembered = self._remembered(request)
        known: tuple[KeyRecord, bytes] | None = None
        if remembered is not None:
            key_id, secret, held_before, digest = remembered
            creds = Credentials(key_id=key_id, secret=secret)
            known = (held_before.record, digest)
        else:
            found = read_credentials(request.headers)
            if isinstance(found, CredentialProblem):
                await self._failures.record_failure(address)
                return Denial(found.value)
            creds = found
        try:
            record = await self._store.lookup(creds.key_id)
        except VerificationUnavailable:
            return Denial(
                "unavailable", status=503, retry_after=self._retry_after, key_id=creds.key_id
            )
        if record is None:
            # Same work as a real check, so that response time does not reveal unknown IDs.
            self._peppers.dummy_verify(creds.secret)
            # (A key revoked here, or at its scheduled end, is not looked up any more.)
            reason = "revoked" if self._store.due(creds.key_id) else "unknown"
            denial = Denial(reason, key_id=creds.key_id)
        elif not (
            known is not None
            and known[0].secret_hash == record.secret_hash
            and known[0].hash_version == record.hash_version
        ) and not self._peppers.verify(
            creds.key_id, creds.secret, record.secret_hash, record.hash_version
        ):
            denial = Denial("wrong_secret", key_id=creds.key_id)
        elif not record.active_at(datetime.fromtimestamp(self._store.wall_clock(), UTC)):
            # Revoked, or a rolled key whose revokes_at has come (on this process's clock):
            # refused even when nothing could tell this process of its revocation.
            denial = Denial("revoked", key_id=creds.key_id)
        else:
            held = self._store.cached(creds.key_id)
            if held is not None and held.record is record and held.verified is not None:
                identity: Identity = held.verified[1]
                return identity
            identity = Identity(record.key_id, record.name)
            if held is not None and held.record is record:
                digest = known[1] if known is not None else self._mac(creds.secret)
                held.verified = (digest, identity)
            return identity
        await self._failures.record_failure(address)
        return denial

    async def _while_blocked(self, request: Request, address: str, wait: int) -> Identity | Denial:
        """The verdict for an address blocked for failures: it keeps the keys held here.

        A pair whose key L1 holds as active, and whose secret verifies (the remembered note,
        else the peppered hash against L1's record), is served: a client behind the same NAT
        as a guesser keeps working. Anything else is 429 with no lookup and counts as a
        failure: a key L1 does not hold, one held revoked, a wrong secret, malformed headers.
        A key not held costs a hash too, and every refusal the same count, so that neither
        the answer nor its timing tells a held key ID from another (docs/gateway.md, "What the
        throttle protects, and what it does not").
        """
        throttled = Denial("throttled", status=429, retry_after=wait)
        found = read_credentials(request.headers)
        if isinstance(found, CredentialProblem):
            await self._failures.record_failure(address)
            return throttled
        held = self._store.cached(found.key_id)
        digest = self._mac(found.secret)
        wall = self._wall()
        if held is not None and held.ends is not None and wall >= held.ends:
            held = None  # a rolled key at its end: not held, as for the key store's lookup
        if held is None or not held.record.active_at(datetime.fromtimestamp(wall, UTC)):
            self._peppers.dummy_verify(found.secret)
        else:
            record = held.record
            note = held.verified
            if note is not None and hmac.compare_digest(note[0], digest):
                identity: Identity = note[1]
                return identity
            if self._peppers.verify(
                found.key_id, found.secret, record.secret_hash, record.hash_version
            ):
                identity = Identity(record.key_id, record.name)
                held.verified = (digest, identity)
                return identity
        await self._failures.record_failure(address)
        return Denial("throttled", status=429, retry_after=wait, key_id=found.key_id)

    def _mac(self, secret: str) -> bytes:
        # surrogatepass: any header text (even a lone surrogate) encodes, and distinct texts
        # give distinct bytes.
        mac = self._mac_base.copy()
        mac.update(secret.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def _remembered(self, request: Request) -> tuple[str, str, Held, bytes] | None:
        """Key ID and secret when they are exactly a pair verified before, else None.

        With them, the key's L1 entry that carries the note, and the secret's MAC. Exactly one
        of each header, or None (duplicates are refused on the full path).
        """
        headers = request.headers
        ids = headers.getall(ID_HEADER, _NO_VALUES)
        secrets = headers.getall(SECRET_HEADER, _NO_VALUES)
        if len(ids) != 1 or len(secrets) != 1:
            return None
        held = self._store.cached(ids[0])
        if held is None or held.verified is None:
            return None
        digest = self._mac(secrets[0])
        if not hmac.compare_digest(held.verified[0], digest):
            return None
        return ids[0], secrets[0], held, digest
