"""The keys every failover test starts from, and the subscriber that watches its events."""

from __future__ import annotations

from dataclasses import dataclass

from apikeys_shared.keys import generate_secret, new_key_id
from apikeys_shared.signing import Verifier
from tests.support.event_log import QuorumSubscriber
from tests.support.load import Key, Probe
from tests.support.stack import Admin, Stack, eventually

__all__ = ["SHORT_CACHES", "Keys", "issue_keys", "subscribe", "verifier_of"]

STEADY_BOUND = 60.0
# The gateways' caches let go within half a second, current or not, so that Redis and key_service
# are really asked while an engine fails over.
SHORT_CACHES = {"GATEWAY_L1_TTL": "0.5", "GATEWAY_L1_KEEP_WHILE_CURRENT": "false",
                "GATEWAY_NEGATIVE_TTL": "0.5"}


@dataclass(frozen=True)
class Keys:
    """Keys by what the gateways must make of them."""

    valid: list[Key]
    revoked: list[Key]
    unknown: list[Key]
    victims: list[Key]  # active now; the test revokes them during the failure

    def load_plan(self) -> dict[str, list[Key]]:
        """The categories of a ``Load``."""
        return {"valid": self.valid, "victim": self.victims, "revoked": self.revoked,
                "unknown": self.unknown}


async def issue_keys(admin: Admin, probe: Probe, victims: int) -> Keys:
    """Three valid keys, two revoked, three unknown and ``victims`` to revoke later; returns
    once every gateway answers each of them as it should."""
    keys = Keys(
        valid=[await admin.issue(f"valid {i}") for i in range(3)],
        revoked=[await admin.issue(f"revoked {i}") for i in range(2)],
        unknown=[(new_key_id(), generate_secret()) for _ in range(3)],
        victims=[await admin.issue(f"revoked during the failure {i}") for i in range(victims)],
    )
    for key in keys.revoked:
        await admin.revoke(key[0])
    await eventually(
        lambda: probe.recovered([*keys.valid, *keys.victims], [*keys.revoked, *keys.unknown]),
        "the stack is steady", STEADY_BOUND,
    )
    return keys


def verifier_of(stack: Stack) -> Verifier:
    """Trusts the stack's verify key."""
    return Verifier.from_base64(stack.secrets["APIKEYS_VERIFY_KEYS"].split(","))


async def subscribe(stack: Stack, rabbitmq_url: str) -> QuorumSubscriber:
    """A quorum-queue subscriber to the stack's events, bound before any is published."""
    return await QuorumSubscriber(
        rabbitmq_url, stack.exchange, f"{stack.queue_prefix}.subscriber", verifier_of(stack),
    ).start()
