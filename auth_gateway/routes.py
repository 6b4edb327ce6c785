"""The route table: which upstream serves a path, and whether it needs a key.

A TOML file (its path in ``GATEWAY_ROUTES``) with one ``[[route]]`` table per route::

    [[route]]
    prefix = "/api/"                      # required; matched on whole path segments
    upstream = "http://127.0.0.1:8090"    # required; http or https base URL, may carry a path
    auth = "required"                     # "required" (the default) or "none"
    strip_prefix = false                  # drop the prefix before forwarding (default false)

The longest matching prefix wins. Paths with dot segments or encoded ``.``, ``/`` or ``\\`` are
refused outright; the rest are normalised before matching and forwarded as normalised
(``normalize_path``: percent-encoded unreserved characters decoded, RFC 3986 §6.2.2, and runs
of slashes merged, as nginx does), so that ``/%61dmin`` or ``//admin`` cannot pass as something
other than ``/admin``: the route chosen here and the path the upstream resolves cannot disagree.
A prefix ending in ``/`` also matches the path without it (``/admin/`` matches ``/admin`` and
``/admin;x``). Prefixes are case-sensitive, as paths are, except that a path which, read as the
most lenient upstream reads it (``_fold``: case ignored, also for the non-ASCII letters that
.NET and Java fold to ASCII; the dots and spaces that end a segment dropped, as IIS drops them;
the last segment's suffix dropped, as Rails and Spring's suffix matching do), falls under a
route requiring a key is never given a route that does not.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .errors import RouteTableError

__all__ = [
    "Route", "RouteTable", "is_safe_path", "load_routes", "normalize_path", "parse_routes",
]

AuthMode = Literal["required", "none"]
_KEYS = {"prefix", "upstream", "auth", "strip_prefix"}
_PREFIX_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/-]*")
# Dot segments, and segments of dots and (encoded) spaces that Windows and IIS read as dot or
# empty segments ("/.../", "/..%20/"), also with path parameters ("/..;x/" is "/../" to Servlet
# containers); encoded '.', '/' and '\\', backslashes, and a fragment, which no client sends and
# which an upstream would cut off after the gateway matched the route on it.
# Also: path parameters on any segment but the last (Servlet containers drop them from every
# segment, so "/;x/admin/x" and "/api;x/v1/x" are "/admin/x" and "/api/v1/x" to them, past the
# route this gateway would match), IIS's "%u0061" escapes, a '%' that does not begin an escape
# (normalising "%%36%31" would make one), and an encoded '%' before two hex digits or a 'u':
# to an upstream that decodes twice, "/%2561dmin" is "/admin" and "%252e" a '.'.
_UNSAFE_PATH_RE = re.compile(
    r"(^|/)(?:\.|%20)+(;[^/]*)?(/|$)|%2[ef]|%5c|%u|%(?![0-9a-f]{2})|%25(?:[0-9a-f]{2}|u)"
    r"|\\|#|;[^/]*/",
    re.IGNORECASE,
)
# Dots and (encoded) spaces that end a segment, which Windows and IIS drop: "/admin./x" and
# "/admin%20/x" are "/admin/x" there.
_SEGMENT_END_RE = re.compile(r"(?:\.|%20)+(?=[/;]|$)")
# The last segment's suffix from its first dot, before any path parameters.
_SUFFIX_RE = re.compile(r"\.[^/;]*(?=(?:;[^/]*)?$)")
# Escaped (lower-cased) UTF-8 of the letters whose case mapping is ASCII: dotless i, long s,
# the Kelvin sign.
_ASCII_CASE = {"%c4%b1": "i", "%c5%bf": "s", "%e2%84%aa": "k"}
_ASCII_CASE_RE = re.compile("|".join(_ASCII_CASE))
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES_RE = re.compile(r"//+")
# RFC 3986 unreserved characters, but '.', which an encoded form may not smuggle into a dot
# segment (and which is_safe_path refuses encoded anyway).
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")


@dataclass(frozen=True)
class Route:
    """One entry of the table."""

    prefix: str
    upstream: str
    auth: AuthMode = "required"
    strip_prefix: bool = False
    # True unless the route is explicitly ``auth = "none"`` (a field, not a property: it is
    # read on every request).
    requires_auth: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires_auth", self.auth == "required")

    def forward_path(self, raw_path: str) -> str:
        """The path to append to the upstream's base URL: ``raw_path``, minus the prefix when
        stripping (and then always starting with ``/``)."""
        if not self.strip_prefix:
            return raw_path
        prefix = self.prefix
        size = len(prefix)
        bare = size - 1  # "/p/" covering "/p" or "/p;x"
        if raw_path.startswith(prefix) and (
            prefix[-1] == "/" or raw_path[size:size + 1] in ("", "/", ";")
        ):  # under the prefix on a segment boundary (';' ends a segment, as in _Prefixes)
            path = raw_path[size:]
        elif (prefix.endswith("/") and raw_path.startswith(prefix[:-1])
              and raw_path[bare:bare + 1] in ("", ";")):
            path = raw_path[bare:]
        else:
            # Matched only as folded (``/ADMIN/x``, ``/admin./x``): as many whole segments as
            # the prefix has are dropped, so that nothing of them (a dot, say) is left to
            # begin the forwarded path.
            depth = prefix.rstrip("/").count("/")
            parts = raw_path.split("/", depth + 1)
            path = parts[depth + 1] if len(parts) > depth + 1 else ""
        return path if path.startswith("/") else "/" + path

    def upstream_url(self, raw_path: str, raw_query: str) -> str:
        """The URL to forward to: upstream base + (path, minus the prefix when stripping)."""
        url = self.upstream.rstrip("/") + self.forward_path(raw_path)
        return f"{url}?{raw_query}" if raw_query else url


class RouteTable:
    """Routes ordered for longest-prefix matching."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(
            sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        )
        self._written = _Prefixes(self.routes, fold=False)
        # The same routes with their prefixes in lower case, for upstreams that ignore case;
        # only asked when some route requires a key.
        self._folded = (
            _Prefixes(self.routes, fold=True) if any(r.requires_auth for r in self.routes)
            else None
        )

    def match(self, raw_path: str) -> Route | None:
        """The route with the longest prefix matching ``raw_path``, or None.

        A prefix ``/p/`` covering the bare ``/p`` counts as ``/p`` long; at equal length a
        route the path matches as written wins (``/admin`` over ``/admin/`` for ``/admin``).
        Prefixes are compared as written; but when the path as ``_fold`` reads it would fall
        under a route that requires a key while the path as written does not, that route is
        taken: an upstream that ignores case (Express, IIS) serves ``/ADMIN/x`` as
        ``/admin/x``, IIS serves ``/admin./x``, ``/admin%20/x`` and ``/adm%C4%B1n/x`` as
        ``/admin/x``, and Rails serves ``/admin.json`` as ``/admin``.
        """
        route = self._written.longest(raw_path)
        if (route is not None and route.requires_auth) or self._folded is None:
            return route
        if raw_path.islower() and "." not in raw_path and "%" not in raw_path:
            return route  # nothing to fold (_fold's tests, without the call: most paths)
        shadow = _fold(raw_path)
        if shadow == raw_path:  # still nothing ("/123", "/admin/x.json")
            return route
        folded = self._folded.longest(shadow)
        return folded if folded is not None and folded.requires_auth else route


class _Prefixes:
    """Longest-prefix lookup over one spelling (as written, or folded) of the routes' prefixes."""

    def __init__(self, routes: tuple[Route, ...], *, fold: bool) -> None:
        # (prefix, ends with "/", route), longest first
        self._literal = tuple(
            (_fold_prefix(r.prefix) if fold else r.prefix, r.prefix.endswith("/"), r)
            for r in routes
        )
        # "/p" -> the route of prefix "/p/": it covers the bare path too
        self._bare = {
            (_fold_prefix(r.prefix) if fold else r.prefix)[:-1]: r
            for r in reversed(routes) if len(r.prefix) > 1 and r.prefix.endswith("/")
        }

    def longest(self, path: str) -> Route | None:
        found: Route | None = None
        for prefix, slash, route in self._literal:
            if path.startswith(prefix) and (
                slash or len(path) == len(prefix) or path[len(prefix)] in "/;"
            ):
                found = route
                break
        if self._bare:
            base = path.partition(";")[0]
            bare = self._bare.get(base)
            if bare is not None and (found is None or len(base) > len(found.prefix)):
                return bare
        return found


def _fold_prefix(path: str) -> str:
    """``path`` in lower case, without the dots and spaces that end its segments (IIS drops
    them). Never empties a segment: is_safe_path refuses segments of only dots and spaces."""
    folded = path if path.islower() else path.lower()
    if "." in folded or "%20" in folded:
        folded = _SEGMENT_END_RE.sub("", folded)
    return folded


def _fold(path: str) -> str:
    """``path`` as the most lenient upstream reads it, for comparing with folded prefixes.

    Beyond ``_fold_prefix``: the escapes of the non-ASCII letters whose case mapping is an
    ASCII one (.NET and Java compare "adm\u0131n" and "ADMIN" equal ignoring case), and the last
    segment's suffix from its first dot (Rails' ``(.:format)`` and Spring's suffix pattern
    matching serve ``/admin.json`` as ``/admin``).
    """
    folded = path if path.islower() else path.lower()
    if "%" in folded:
        folded = _ASCII_CASE_RE.sub(_ascii_case, folded)
    if "." in folded or "%20" in folded:
        folded = _SEGMENT_END_RE.sub("", folded)
        if "." in folded:
            folded = _SUFFIX_RE.sub("", folded)
    return folded


def _ascii_case(match: re.Match[str]) -> str:
    return _ASCII_CASE[match.group(0)]


def normalize_path(raw_path: str) -> str:
    """``raw_path`` with percent-encoded unreserved characters decoded (other escapes kept, in
    upper case) and runs of slashes merged: the form routes are matched on and forwarded in.

    Only for paths ``is_safe_path`` accepted; and decoding can bring escapes together
    ("%25%36%31" is "%2561"), so a path this changed must pass ``is_safe_path`` again. Returns
    ``raw_path`` itself when there is nothing to do.
    """
    path = raw_path
    if "%" in path:
        path = _ESCAPE_RE.sub(_unescape_unreserved, path)
    if "//" in path:
        path = _SLASHES_RE.sub("/", path)
    return path


def _unescape_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def is_safe_path(raw_path: str) -> bool:
    """False for paths whose meaning an upstream could resolve differently from the gateway."""
    if not raw_path.startswith("/"):
        return False
    # Every unsafe form holds one of these characters, and most paths hold none of them.
    if ("%" not in raw_path and "." not in raw_path and ";" not in raw_path
            and "\\" not in raw_path and "#" not in raw_path):
        return True
    return _UNSAFE_PATH_RE.search(raw_path) is None


def _entry(index: int, item: object, where: str) -> Route:
    name = f"{where}: route #{index + 1}"
    if not isinstance(item, dict):
        raise RouteTableError(f"{name} must be a table")
    prefix = item.get("prefix")
    if isinstance(prefix, str):
        name = f"{name} (prefix {prefix!r})"
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise RouteTableError(f"{name} has unknown keys: {', '.join(unknown)}")
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix):
        raise RouteTableError(f"{name}: prefix must be a path starting with '/'")
    if not is_safe_path(prefix) or "//" in prefix:
        raise RouteTableError(f"{name}: prefix must not hold dot segments, '//' or encoded / . \\")
    upstream = item.get("upstream")
    if not isinstance(upstream, str):
        raise RouteTableError(f"{name}: upstream must be a URL string")
    try:
        parts = urlsplit(upstream)
        port = parts.port
    except ValueError as exc:
        raise RouteTableError(f"{name}: upstream {upstream!r} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteTableError(f"{name}: upstream must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise RouteTableError(f"{name}: upstream must not carry a query, fragment or user info")
    del port
    auth = item.get("auth", "required")
    if auth not in ("required", "none"):
        raise RouteTableError(f"{name}: auth must be \"required\" or \"none\"")
    strip = item.get("strip_prefix", False)
    if not isinstance(strip, bool):
        raise RouteTableError(f"{name}: strip_prefix must be true or false")
    return Route(prefix=prefix, upstream=upstream, auth=auth, strip_prefix=strip)


def parse_routes(text: str, where: str = "route table") -> RouteTable:
    """Parse and validate a TOML route table; RouteTableError names the bad entry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RouteTableError(f"{where} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - {"route"})
    if unknown:
        raise RouteTableError(f"{where} has unknown top-level keys: {', '.join(unknown)}")
    items = data.get("route")
    if not isinstance(items, list) or not items:
        raise RouteTableError(f"{where} needs at least one [[route]] table")
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        route = _entry(index, item, where)
        if route.prefix in seen:
            raise RouteTableError(
                f"{where}: route #{index + 1} repeats prefix {route.prefix!r} "
                f"of route #{seen[route.prefix] + 1}"
            )
        seen[route.prefix] = index
        routes.append(route)
    return RouteTable(routes)


def load_routes(path: Path) -> RouteTable:
    """Read and validate the route table at ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RouteTableError(f"cannot read route table {path}: {exc}") from exc
    return parse_routes(text, str(path))
