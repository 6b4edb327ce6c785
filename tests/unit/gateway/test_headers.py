"""What the upstream and the client see of the headers."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from auth_gateway.abuse import client_address
from auth_gateway.headers import header_safe, response_headers, upstream_headers


def _proxy(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_upstream_headers_drop_credentials_hop_by_hop_and_spoofed_identity() -> None:
    incoming = _proxy(
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


def test_unauthenticated_route_gets_no_identity_headers() -> None:
    out = upstream_headers(
        _proxy(("X-Authenticated-Key-Id", "spoof")), forwarded_for="1.2.3.4",
        forwarded_proto="https", forwarded_host=None, request_id="r", identity=None,
    )
    assert "X-Authenticated-Key-Id" not in out
    assert "X-Forwarded-Host" not in out


def test_response_headers_drop_hop_by_hop() -> None:
    out = response_headers(_proxy(
        ("Content-Type", "text/plain"), ("Connection", "X-Up"), ("X-Up", "1"),
        ("Transfer-Encoding", "chunked"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ))
    assert list(out.items()) == [
        ("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ]


def test_header_safe_leaves_plain_names_alone() -> None:
    assert header_safe("Billing (prod) #1") == "Billing (prod) #1"
    assert header_safe("tab\there") == "tab%09here"


def test_client_address_trusts_forwarded_for_only_from_trusted_peers() -> None:
    assert client_address("9.9.9.9", ["1.1.1.1"], ()) == "9.9.9.9"
    assert client_address("9.9.9.9", ["1.1.1.1"], ("10.0.0.0/8",)) == "9.9.9.9"
    assert client_address("10.0.0.5", ["1.1.1.1, 10.0.0.7"], ("10.0.0.0/8",)) == "1.1.1.1"
    assert client_address("10.0.0.5", ["spoof, 2.2.2.2"], ("10.0.0.0/8",)) == "2.2.2.2"
    assert client_address("10.0.0.5", [], ("10.0.0.0/8",)) == "10.0.0.5"
    assert client_address("10.0.0.5", ["garbage"], ("10.0.0.0/8",)) == "10.0.0.5"


def test_underscore_spellings_of_identity_and_credential_headers_never_pass() -> None:
    # WSGI/CGI backends map X-Authenticated_Key_Id and X-Authenticated-Key-Id to one variable.
    incoming = _proxy(
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
