"""Middlewares: request IDs, the JSON access log and metrics, body limits and problem+json errors.

They run outermost first: the request ID is set before anything logs; the error middleware turns
every exception (ours, aiohttp's, or a bug) into problem+json, so the access log and metrics see
the status the client gets.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from apikeys_shared.addresses import forwarded_address

from .appkeys import CONFIG, METRICS
from .errors import KeyServiceError
from .logs import REQUEST_ID
from .problems import problem

__all__ = [
    "API_BODY_LIMIT",
    "REQUEST_ID_HEADER",
    "access_middleware",
    "client_address",
    "error_middleware",
    "is_in",
    "request_id",
]

log = logging.getLogger("key_service.access")
errlog = logging.getLogger("key_service.errors")

REQUEST_ID_HEADER = "X-Request-Id"
# The JSON API takes small bodies only (a name, a username and password).
API_BODY_LIMIT = 16 * 1024
_REQUEST_ID_KEY = web.RequestKey("request_id", str)
# An incoming ID is kept only when it is short and plain, so it cannot forge log content.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(request: web.Request) -> str:
    """This request's ID (from ``X-Request-Id`` when well formed, else a fresh UUID)."""
    if _REQUEST_ID_KEY in request:
        return request[_REQUEST_ID_KEY]
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    value = incoming if _REQUEST_ID_RE.fullmatch(incoming) else str(uuid.uuid4())
    request[_REQUEST_ID_KEY] = value
    return value


def is_in(address: str, networks: tuple[str, ...]) -> bool:
    """Whether ``address`` (an IP) lies in one of ``networks`` (IPs or CIDR networks)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for network in networks:
        try:
            if ip in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(request: web.Request) -> str | None:
    """The client's address: the peer, or the nearest untrusted hop of X-Forwarded-For."""
    peer = request.remote
    proxies = request.config_dict[CONFIG].trusted_proxies
    if peer is None or not proxies or not is_in(peer, proxies):
        return peer
    hops = [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    # Walk from the right: every hop a trusted proxy added is skipped, the first other one wins.
    # A hop is read as an address with or without a port (a port per connection would give
    # every attempt a count of its own); one that names no address stops the walk at the peer.
    for hop in reversed(hops):
        address = forwarded_address(hop)
        if address is None:
            return peer
        if not is_in(address, proxies):
            return address
    return peer


def came_over_https(request: web.Request) -> bool:
    """Whether the client reached us over HTTPS: our own TLS, or a trusted proxy's word.

    A proxy's ``X-Forwarded-Proto`` counts only from a peer in KEY_SERVICE_TRUSTED_PROXIES,
    and only when it sent exactly one such header; of a list, the last entry (the nearest
    proxy's) is its word.
    """
    if request.secure:
        return True
    peer = request.remote
    proxies = request.config_dict[CONFIG].trusted_proxies
    if peer is None or not proxies or not is_in(peer, proxies):
        return False
    said = request.headers.getall("X-Forwarded-Proto", [])
    return len(said) == 1 and said[0].rsplit(",", 1)[-1].strip().lower() == "https"


def _route_name(request: web.Request) -> str:
    # The route's pattern, not the raw path: metric labels must not grow with every key ID.
    info = request.match_info
    resource = info.route.resource if info is not None and info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sets the request ID, then logs one JSON line and counts the request when it is done."""
    rid = request_id(request)
    token = REQUEST_ID.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            # Redirects (and anything else the error middleware lets through) arrive raised:
            # log and count the status the client gets, not a 500.
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = rid
            exc.headers.setdefault("X-Content-Type-Options", "nosniff")
            raise
        status = response.status
        response.headers[REQUEST_ID_HEADER] = rid
        # No browser may guess a JSON answer (say, an error echoing input) to be HTML.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        metrics = request.config_dict[METRICS]
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.request_seconds.labels(route).observe(elapsed)
        log.info(
            "request",
            extra={
                "request_id": rid, "method": request.method, "path": request.path,
                "route": route,
                "status": status, "duration_ms": round(elapsed * 1000, 3),
                "client": client_address(request),
            },
        )
        REQUEST_ID.reset(token)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes problem+json with the right status; bugs become a bare 500."""
    if request.path.startswith("/api/") and request.content_length is not None \
            and request.content_length > API_BODY_LIMIT:
        return problem(413, f"the request body must be at most {API_BODY_LIMIT} bytes")
    try:
        response = await handler(request)
    except KeyServiceError as exc:
        return problem(exc.status, exc.detail, field=exc.field, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except (OperationalError, PoolTimeout, ConnectionError, OSError) as exc:
        errlog.error("database unavailable: %s", type(exc).__name__)
        return problem(503, "the database is not available; try again shortly",
                       headers={"Retry-After": "5"})
    except DBAPIError:
        errlog.exception("database error")
        return problem(500, "internal error")
    except Exception:
        errlog.exception("unhandled error")
        return problem(500, "internal error")
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    details = {
        404: "no such resource",
        405: "method not allowed on this resource",
        413: f"the request body must be at most {API_BODY_LIMIT} bytes",
    }
    detail = details.get(exc.status) or exc.text or exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return problem(exc.status, detail, headers=headers)
