"""Several RabbitMQ nodes in one ``RABBITMQ_URL``, and connecting to the next one after a loss.

A client of a RabbitMQ cluster may use any node: exchanges, bindings and quorum queues are the
cluster's, not a node's. ``RABBITMQ_URL`` names every node the client may use, in order::

    amqp://user:password@rabbit1:5672,rabbit2:5672,rabbit3:5672/vhost?heartbeat=10

User, password, virtual host and query apply to every node; a host without a port gets 5672
(``amqps://``: 5671, TLS to every node); an IPv6 address goes in brackets. A URL with one host is
the plain URL aio-pika knows, and behaves exactly as before.

Why not ``aio_pika.connect_robust``: it reconnects to the one address it was given, for ever, so
a client of a node that died would wait for that node rather than use the two that are up. Every
client here runs its own reconnect loop instead (each has to act on a loss anyway: the gateway
polls the feed, the relay publishes again from the first unconfirmed event, the example
subscriber declares its queue again) and asks ``BrokerAddresses.connect`` for each connection.
That tries every address once, starting with the one *after* the address of the previous
connection: a client that lost its node goes to the next node at once, and the first address
is tried again only after the others. Clients given the list in the same order all start on the
first node; give hosts the list in different orders to spread them over the cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from .rabbitmq_url import BrokerAddress, check_rabbitmq_url, parse_rabbitmq_url

__all__ = ["BrokerAddress", "BrokerAddresses", "check_rabbitmq_url", "parse_rabbitmq_url"]

log = logging.getLogger("apikeys_shared.amqp")

# What aio-pika raises when one address cannot be connected to: the next one is tried.
_CONNECT_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError)


class BrokerAddresses:
    """The nodes of one ``RABBITMQ_URL``, and which one to try first; see the module docstring."""

    def __init__(self, url: str, what: str = "RABBITMQ_URL", *,
                 query_defaults: Mapping[str, str] | None = None) -> None:
        self.addresses = parse_rabbitmq_url(url, what, query_defaults)
        # Index of the address of the latest connection made; None before the first.
        self._last: int | None = None

    @property
    def connected(self) -> BrokerAddress | None:
        """The address of the latest connection made (None before the first)."""
        return None if self._last is None else self.addresses[self._last]

    async def connect(self, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
        """A connection to the first address that takes one, trying each once, starting after
        the address of the previous connection; ``kwargs`` go to ``aio_pika.connect`` (pass a
        ``timeout``). Raises the last address's error when none takes one."""
        count = len(self.addresses)
        start = 0 if self._last is None else (self._last + 1) % count
        failure: BaseException | None = None
        for step in range(count):
            index = (start + step) % count
            address = self.addresses[index]
            try:
                connection: aio_pika.abc.AbstractConnection = await aio_pika.connect(
                    address.url, **kwargs,
                )
            except _CONNECT_ERRORS as exc:
                # Never log the URL: it carries the password.
                log.info("RabbitMQ at %s: %s", address.name, type(exc).__name__)
                failure = exc
                continue
            self._last = index
            return connection
        assert failure is not None
        raise failure
