"""What the upstream and the client see of the headers."""

from __future__ import annotations

from multidict import CIMultiDict

from auth_gateway.auth import Identity
from auth_gateway.headers import header_safe, response_header_block, upstream_header_block


def _raw(*pairs: tuple[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """Header pairs as the parser hands them over (bytes, as received)."""
    return tuple((name.encode(), value.encode()) for name, value in pairs)


def _parse(block: bytes) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            out.add(name.decode(), value.decode())
    return out


def upstream_headers(raw: tuple[tuple[bytes, bytes], ...], *, forwarded_for: str,
                     forwarded_proto: str, forwarded_host: str | None, request_id: str,
                     identity: tuple[str, str] | None) -> CIMultiDict[str]:
    return _parse(upstream_header_block(
        raw, forwarded_for=forwarded_for, forwarded_proto=forwarded_proto,
        forwarded_host=forwarded_host.encode() if forwarded_host else None,
        request_id=request_id, identity=Identity(*identity).block if identity else b"",
    ))


def response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> CIMultiDict[str]:
    block, _ = response_header_block(raw, keep_length=False)
    return _parse(block)


def test_upstream_headers_drop_credentials_hop_by_hop_and_spoofed_identity() -> None:
    incoming = _raw(
        ("Host", "gw.example"), ("X-AuthenticationKeyId", "id"), ("X-AuthenticationKeyValue", "s"),
        ("X-Authenticated-Key-Id", "spoof"), ("x-authenticated-anything", "spoof"),
        ("Connection", "keep-alive, X-Private"), ("X-Private", "p"), ("Keep-Alive", "5"),
        ("TE", "trailers"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
        ("Proxy-Authorization", "x"), ("X-Forwarded-For", "6.6.6.6"), ("X-Request-Id", "mine"),
        ("Accept", "a"), ("Set-Thing", "1"), ("Set-Thing", "2"),
    )
    out = upstream_headers(
        incoming, forwarded_for="1.2.3.4", forwarded_proto="http", forwarded_host="gw.example",
        request_id="rid", identity=("kid", "Billing \u2013 \u00fcn\u00efcode %"),
    )
    assert sorted(name for name, _ in out.items()) == sorted([
        "Accept", "Set-Thing", "Set-Thing", "X-Forwarded-For", "X-Forwarded-Proto",
        "X-Forwarded-Host", "X-Request-Id", "X-Authenticated-Key-Id", "X-Authenticated-Key-Name",
    ])
    assert out.getall("Set-Thing") == ["1", "2"]
    assert out["X-Forwarded-For"] == "1.2.3.4"
    assert out["X-Request-Id"] == "rid"
    assert out["X-Authenticated-Key-Id"] == "kid"
    assert out["X-Authenticated-Key-Name"] == "Billing %E2%80%93 %C3%BCn%C3%AFcode %25"


def test_proxy_set_headers_a_client_sends_never_pass() -> None:
    incoming = _raw(
        ("Host", "gw.example"), ("X-Forwarded-Prefix", "/evil"), ("X-Forwarded-Port", "1"),
        ("X-Forwarded-Ssl", "on"), ("x_forwarded_server", "evil"), ("X-Original-URL", "/admin/x"),
        ("X-Rewrite-URL", "/admin/x"), ("X-Client-IP", "1.1.1.1"), ("True-Client-IP", "1.1.1.1"),
        ("CF-Connecting-IP", "1.1.1.1"), ("Accept", "a"),
    )
    out = upstream_headers(
        incoming, forwarded_for="1.2.3.4", forwarded_proto="http", forwarded_host=None,
        request_id="rid", identity=None,
    )
    assert sorted(name for name, _ in out.items()) == [
        "Accept", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id",
    ]


def test_names_a_connection_header_lists_are_dropped_whatever_their_spelling() -> None:
    incoming = _raw(("Connection", "x_hop"), ("X_Hop", "1"), ("X-Hop", "2"), ("Accept", "a"))
    out = upstream_headers(
        incoming, forwarded_for="1.2.3.4", forwarded_proto="http", forwarded_host=None,
        request_id="rid", identity=None,
    )
    assert "X_Hop" not in out
    assert "X-Hop" not in out
    assert "Accept" in out


def test_unauthenticated_route_gets_no_identity_headers() -> None:
    out = upstream_headers(
        _raw(("X-Authenticated-Key-Id", "spoof")), forwarded_for="1.2.3.4",
        forwarded_proto="https", forwarded_host=None, request_id="r", identity=None,
    )
    assert "X-Authenticated-Key-Id" not in out
    assert "X-Forwarded-Host" not in out


def test_response_headers_drop_hop_by_hop() -> None:
    out = response_headers(_raw(
        ("Content-Type", "text/plain"), ("Connection", "X-Up"), ("X-Up", "1"),
        ("Transfer-Encoding", "chunked"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ))
    assert list(out.items()) == [
        ("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ]


def test_header_safe_leaves_plain_names_alone() -> None:
    assert header_safe("Billing (prod) #1") == "Billing (prod) #1"
    assert header_safe("tab\there") == "tab%09here"


def test_underscore_spellings_of_identity_and_credential_headers_never_pass() -> None:
    # WSGI/CGI backends map X-Authenticated_Key_Id and X-Authenticated-Key-Id to one variable.
    incoming = _raw(
        ("X-Authenticated_Key_Id", "spoof"), ("x_authenticated_key_name", "spoof"),
        ("X_AuthenticationKeyValue", "secret"), ("X-Forwarded_For", "6.6.6.6"),
        ("X_Request_Id", "mine"), ("Accept", "a"),
    )
    out = upstream_headers(
        incoming, forwarded_for="1.2.3.4", forwarded_proto="http", forwarded_host=None,
        request_id="rid", identity=("kid", "name"),
    )
    assert sorted(name for name, _ in out.items()) == sorted([
        "Accept", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id",
        "X-Authenticated-Key-Id", "X-Authenticated-Key-Name",
    ])
    assert out["X-Authenticated-Key-Id"] == "kid"
    assert out["X-Forwarded-For"] == "1.2.3.4"


def test_response_headers_keep_content_length_only_when_asked_and_report_a_date() -> None:
    raw = _raw(("Content-Length", "3"), ("Date", "Fri, 27 Nov 2026 17:00:00 GMT"),
               ("X-Request-Id", "upstream's"), ("Connection", "keep-alive"))
    block, had_date = response_header_block(raw, keep_length=False)
    assert _parse(block) == CIMultiDict([("Date", "Fri, 27 Nov 2026 17:00:00 GMT")])
    assert had_date
    block, had_date = response_header_block(raw[:1], keep_length=True)
    assert _parse(block) == CIMultiDict([("Content-Length", "3")])
    assert not had_date


def test_remembered_name_decisions_give_the_same_headers_as_the_first_sight() -> None:
    # Decisions per name are remembered across requests; a name passed before must still be
    # dropped when a later request's Connection header lists it, and the reverse.
    pairs = (("X-Private-2", "p"), ("X-AuthenticationKeyValue", "s"), ("Accept", "a"))
    plain = _raw(*pairs)
    listed = _raw(("Connection", "X-Private-2"), *pairs)

    def forward(raw: tuple[tuple[bytes, bytes], ...]) -> CIMultiDict[str]:
        return upstream_headers(raw, forwarded_for="1.2.3.4", forwarded_proto="http",
                                forwarded_host=None, request_id="r", identity=None)

    first = forward(plain)
    assert forward(plain) == first
    assert first.getall("X-Private-2") == ["p"]
    assert "X-AuthenticationKeyValue" not in first
    for _ in range(2):
        out = forward(listed)
        assert "X-Private-2" not in out
        assert "Connection" not in out
        assert "X-AuthenticationKeyValue" not in out
        assert out.getall("Accept") == ["a"]
    assert forward(plain).getall("X-Private-2") == ["p"]


def test_remembered_name_decisions_stay_bounded() -> None:
    from auth_gateway import headers

    for number in range(headers._NAMES_BOUND + 100):
        upstream_header_block(
            _raw((f"X-Flood-{number}", "v"), (f"X-Authenticated-Flood-{number}", "v")),
            forwarded_for="1.2.3.4", forwarded_proto="http", forwarded_host=None,
            request_id="r",
        )
    assert len(headers._PASSED) <= headers._NAMES_BOUND
    assert len(headers._DROPPED) <= headers._NAMES_BOUND
    # Past the bound, names are still decided correctly, only not remembered.
    out = _parse(upstream_header_block(
        _raw(("X-Late-Name", "v"), ("X-Authenticated-Late", "spoof")), forwarded_for="1.2.3.4",
        forwarded_proto="http", forwarded_host=None, request_id="r",
    ))
    assert out.getall("X-Late-Name") == ["v"]
    assert "X-Authenticated-Late" not in out
