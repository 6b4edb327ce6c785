"""The route table: parsing, validation naming the entry, longest-prefix matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth_gateway.errors import RouteTableError
from auth_gateway.routes import (
    Route,
    RouteTable,
    is_safe_path,
    load_routes,
    normalize_path,
    parse_routes,
)

TABLE = """
[[route]]
prefix = "/api/"
upstream = "http://127.0.0.1:9000"

[[route]]
prefix = "/api/reports"
upstream = "http://127.0.0.1:9001/base/"
strip_prefix = true

[[route]]
prefix = "/public"
upstream = "https://example.org"
auth = "none"
"""


def test_parses_defaults_and_orders_longest_first() -> None:
    table = parse_routes(TABLE)
    assert [r.prefix for r in table.routes] == ["/api/reports", "/public", "/api/"]
    api = table.match("/api/x")
    assert api == Route("/api/", "http://127.0.0.1:9000", "required", False)
    assert api.requires_auth
    public = table.match("/public")
    assert public is not None
    assert not public.requires_auth


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/api/reports", "/api/reports"),
        ("/api/reports/2024", "/api/reports"),
        ("/api/reportsx", "/api/"),
        ("/api/reports;jsessionid=1", "/api/reports"),
        ("/public;x", "/public"),
        ("/api/", "/api/"),
        ("/public/a", "/public"),
        ("/publicity", None),
        ("/api", "/api/"),  # "/api/" covers the path without its slash
        ("/api;x/y", "/api/"),
        ("/apix", None),
        ("/", None),
    ],
)
def test_longest_prefix_on_segment_boundaries(path: str, prefix: str | None) -> None:
    route = parse_routes(TABLE).match(path)
    assert (route.prefix if route else None) == prefix


def test_upstream_url_keeps_or_strips_the_prefix() -> None:
    table = parse_routes(TABLE)
    reports = table.match("/api/reports/2024")
    assert reports is not None
    assert reports.upstream_url("/api/reports/2024", "a=1&b=%20") == (
        "http://127.0.0.1:9001/base/2024?a=1&b=%20"
    )
    assert reports.upstream_url("/api/reports", "") == "http://127.0.0.1:9001/base/"
    api = table.match("/api/x%2Fy")
    assert api is not None
    assert api.upstream_url("/api/x", "") == "http://127.0.0.1:9000/api/x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[route]]\nprefix = "/a"\nupstream = "http://h"\ncolour = "red"\n',
         "route #1 (prefix '/a') has unknown keys: colour"),
        ('[[route]]\nprefix = "/a"\nupstream = "ftp://h"\n', "route #1 (prefix '/a'): upstream"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://"\n', "route #1 (prefix '/a'): upstream"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://h?x=1"\n', "must not carry a query"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://h:99999"\n', "is not a valid URL"),
        ('[[route]]\nprefix = "a"\nupstream = "http://h"\n', "prefix must be a path"),
        ('[[route]]\nprefix = "/a/../b"\nupstream = "http://h"\n', "dot segments"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://h"\nauth = "maybe"\n', "auth must be"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://h"\nstrip_prefix = "yes"\n',
         "strip_prefix must be"),
        ('[[route]]\nprefix = "/a"\nupstream = "http://h"\n[[route]]\nprefix = "/a"\n'
         'upstream = "http://g"\n', "route #2 repeats prefix '/a' of route #1"),
        ("routes = 1\n", "unknown top-level keys: routes"),
        ("", "needs at least one [[route]]"),
        ("[[route\n", "is not valid TOML"),
        ('[[route]]\nupstream = "http://h"\n', "route #1: prefix must be a path"),
    ],
)
def test_bad_tables_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(RouteTableError) as caught:
        parse_routes(text, "routes.toml")
    assert message in str(caught.value)
    assert "routes.toml" in str(caught.value)


def test_load_routes_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RouteTableError, match="cannot read route table"):
        load_routes(tmp_path / "nope.toml")
    path = tmp_path / "routes.toml"
    path.write_text(TABLE)
    assert len(load_routes(path).routes) == 3


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("/api/x", True),
        ("/api/x.json", True),
        ("/api/..", False),
        ("/api/../admin", False),
        ("/api/./x", False),
        ("/api/%2e%2e/admin", False),
        ("/api/x%2Fy", False),
        ("/api/x%5cy", False),
        ("/api\\x", False),
        ("http://evil/api", False),
        ("/api/x#frag", False),
        ("/api/..;jsessionid=1/admin", False),
        ("/api/.;x/admin", False),
        ("/api/x;v=1", True),
        ("/api/%41", True),
        ("/%2561dmin/x", False),  # "/%61dmin", then "/admin", to an upstream decoding twice
        ("/api/%252e%252e/admin", False),
        ("/api/100%25", True),
        ("/api/100%25x", True),
        ("/%25u0061dmin/x", False),  # "%u0061dmin" to an upstream decoding twice
        ("/%%36%31dmin/x", False),  # a '%' that begins no escape ("%61" once normalised)
        ("/public/%2%65%2%65/api/x", False),
        ("/api/100%", False),
        ("/public/.../api/x", False),  # dots and spaces only: ".." to Windows and IIS
        ("/public/..%20/api/x", False),
        ("/public/%20/x", False),
        ("/api/x.%20y", True),
        ("/api/...x", True),
    ],
)
def test_unsafe_paths(path: str, safe: bool) -> None:
    assert is_safe_path(path) is safe


@pytest.mark.parametrize("raw", ["/%25%36%31dmin/x", "/api/%25%32%65%25%32%65/x",
                                 "/%25%75%30%30%36%31dmin"])
def test_escapes_that_normalising_brings_together_are_refused(raw: str) -> None:
    # Safe as received, but decoding makes "%2561": the path is checked again once normalised.
    assert is_safe_path(raw)
    assert not is_safe_path(normalize_path(raw))


def test_empty_table_matches_nothing() -> None:
    assert RouteTable([]).match("/x") is None


def _table(*routes: tuple[str, str]) -> RouteTable:
    """A route table of ``(prefix, auth)`` entries, all to one upstream."""
    return parse_routes("".join(
        f'[[route]]\nprefix = "{prefix}"\nupstream = "http://127.0.0.1:9000"\nauth = "{auth}"\n\n'
        for prefix, auth in routes
    ))


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/admin/x", "/admin/x"),
        ("/%61dmin/secret", "/admin/secret"),
        ("/%41%44%4D%49%4E", "/ADMIN"),
        ("/a%7e%2D%5f", "/a~-_"),
        ("//admin///x", "/admin/x"),
        ("/caf%c3%a9/%20x", "/caf%C3%A9/%20x"),  # not unreserved: kept, hex in upper case
        ("/a%3bb", "/a%3Bb"),  # an encoded ';' stays encoded: no segment parameter appears
    ],
)
def test_paths_are_normalised_before_matching(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


def test_an_encoded_or_doubled_path_cannot_slip_past_a_required_route() -> None:
    table = _table(("/", "none"), ("/admin/", "required"))
    for raw in ("/%61dmin/secret", "//admin/secret", "/admin", "/admin;x",
                "/adm%69n/secret"):
        route = table.match(normalize_path(raw))
        assert route is not None
        assert route.prefix == "/admin/", raw
        assert route.requires_auth, raw


def test_a_bare_path_goes_to_the_longest_route_covering_it_and_an_exact_one_first() -> None:
    table = _table(("/a", "none"), ("/a/b/", "required"), ("/admin", "required"),
                   ("/admin/", "none"))
    for path, prefix in (("/a/b", "/a/b/"), ("/a/b;x", "/a/b/"), ("/a/c", "/a"),
                         ("/admin", "/admin"), ("/admin;x", "/admin"), ("/admin/x", "/admin/")):
        route = table.match(path)
        assert route is not None
        assert route.prefix == prefix, path


def test_a_path_that_folds_into_a_required_route_is_never_given_an_open_one() -> None:
    table = _table(("/", "none"), ("/admin/", "required"), ("/Docs/", "none"))
    for path in ("/ADMIN/secret", normalize_path("/%41dmin/secret"), "/ADMIN", "/aDmIn;x"):
        route = table.match(path)
        assert route is not None
        assert route.prefix == "/admin/", path
    for path, prefix in (("/Docs/x", "/Docs/"), ("/docs/x", "/"), ("/Administrator", "/")):
        route = table.match(path)
        assert route is not None
        assert route.prefix == prefix, path


def test_a_path_whose_segment_ends_iis_drops_falls_under_the_required_route() -> None:
    # IIS (and Windows) drop dots and spaces that end a segment: "/admin./x" is "/admin/x".
    table = _table(("/", "none"), ("/admin/", "required"), ("/Docs/", "none"))
    for raw in ("/admin./secret", "/admin%20/secret", "/ADMIN.%20./secret", "/admin.",
                "/admin..;x", "/admin.//secret"):
        route = table.match(normalize_path(raw))
        assert route is not None
        assert route.prefix == "/admin/", raw
    # A prefix is folded alike: "/ETC./x" is "/etc./x" to a case-blind upstream.
    table2 = _table(("/", "none"), ("/etc./", "required"))
    for path in ("/ETC./x", "/Etc%20./x"):
        route = table2.match(path)
        assert route is not None
        assert route.prefix == "/etc./", path
    for path, prefix in (("/adminx./y", "/"), ("/Docs./x", "/"),
                         ("/x/admin./y", "/"), ("/static/app.js", "/")):
        route = table.match(path)
        assert route is not None
        assert route.prefix == prefix, path


def test_format_suffixes_and_non_ascii_case_fold_into_the_required_route() -> None:
    # Rails ("/admin(.:format)") and Spring's suffix matching serve /admin.json as /admin;
    # .NET and Java fold the dotless i, the long s and the Kelvin sign to ASCII ignoring case.
    table = _table(("/", "none"), ("/admin/", "required"), ("/sec", "required"),
                   ("/key/", "required"))
    for raw in ("/admin.json", "/ADMIN.tar.gz", "/admin.json;x", "/adm%C4%B1n/x",
                "/%C5%BFec", "/ADM%c4%b1N.xml", "/sec.json", "/%E2%84%AAey/x"):
        route = table.match(normalize_path(raw))
        assert route is not None
        assert route.requires_auth, raw
    for path in ("/admins.json", "/static/admin.js", "/adm%C4%B0n/x", "/a.b/admin"):
        route = table.match(path)
        assert route is not None
        assert route.prefix == "/", path
    # A prefix's own dots are kept: "/files.zip" does not cover "/files/x".
    table2 = _table(("/", "none"), ("/files.zip", "required"))
    route = table2.match("/files/x")
    assert route is not None
    assert route.prefix == "/"


@pytest.mark.parametrize("raw", ["/;/admin/x", "/;x/admin/x", "/api;x/v1/secret", "/%u0061dmin"])
def test_parameters_before_the_last_segment_and_iis_escapes_are_refused(raw: str) -> None:
    assert not is_safe_path(raw)


def test_strip_prefix_of_a_path_matched_without_its_slash() -> None:
    route = Route("/api/", "http://u", "required", True)
    assert route.forward_path("/api/x") == "/x"
    assert route.forward_path("/api") == "/"
    assert route.forward_path("/api;v=1") == "/;v=1"
    # Matched only as folded: the prefix's segments go whole, whatever their spelling.
    assert route.forward_path("/API/x") == "/x"
    assert route.forward_path("/api../x") == "/x"
    assert route.forward_path("/api%20/x/y") == "/x/y"
    assert route.forward_path("/api.") == "/"
    deep = Route("/a/b/", "http://u/base/", "required", True)
    assert deep.forward_path("/A/b./c") == "/c"
    # A prefix without its slash, met by a longer segment that folds into it.
    raw = Route("/raw", "http://u/base", "required", True)
    assert raw.forward_path("/raw../x") == "/x"
    assert raw.forward_path("/raw..") == "/"
    assert raw.forward_path("/raw/x") == "/x"
    assert raw.forward_path("/raw;v=1") == "/;v=1"
