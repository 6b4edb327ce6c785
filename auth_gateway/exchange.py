"""One request on its way through the gateway: the handler's record of it.

The handler makes an ``Exchange`` for each request the server hands it and passes it down the
request path (docs/architecture.md, "The request path"): what the steps learn is kept here, once,
and read by the steps after. It is also the request's access-log record: request ID, route
label, key ID and verdict (the server's ``Request`` adds only what was sent).
"""

from __future__ import annotations

from aiohttp import hdrs

from .clients import client_address, failure_group
from .http_server import Request

__all__ = ["Exchange"]


class Exchange:
    """One request and what the request path learnt about it.

    The client's address and its failure group are worked out when first asked, and then
    remembered: a request answered on the fast path (a pair verified before, from an address
    nothing holds back) never needs them, and every other request needs them once.
    """

    __slots__ = ("_client", "_group", "_trusted", "auth", "key_id", "label", "request",
                 "request_id")

    def __init__(self, request: Request, request_id: str, trusted: tuple[str, ...]) -> None:
        self.request = request
        self.request_id = request_id
        self._trusted = trusted
        # For metrics and the access log: the route prefix, or what the request was instead
        # ("_refused", "_unmatched", "_ops", "/_auth/verify"); "_none" until routed.
        self.label = "_none"
        self.key_id: str | None = None
        self.auth: str | None = None  # the verdict: "ok", or why not (never told the client)
        self._client: str | None = None
        self._group: str | None = None

    def client(self) -> str:
        """The client's address (``clients.client_address``)."""
        client = self._client
        if client is None:
            request = self.request
            client = self._client = client_address(
                request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ()), self._trusted)
        return client

    def group(self) -> str:
        """What the client's failed attempts count against (``clients.failure_group``)."""
        group = self._group
        if group is None:
            group = self._group = failure_group(self.client())
        return group
