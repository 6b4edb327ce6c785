"""The benchmark's nginx configs: the shipped forward-auth example on the benchmark's ports."""

from __future__ import annotations

from tests.bench.nginx import forward_auth_server, proxy_server, upstream_server, verdict_server


def test_forward_auth_uses_the_shipped_example_on_the_given_ports() -> None:
    text = forward_auth_server(18000, 18090, "unix:/tmp/x/gateway.sock")
    assert "auth_request" in text
    assert "listen 127.0.0.1:18000;" in text
    assert "server unix:/tmp/x/gateway.sock;" in text  # the gateway
    assert "server 127.0.0.1:18090;" in text  # the upstream
    for old in ("127.0.0.1:8000", "server unix:/run/apikeys/gateway.sock;", "127.0.0.1:8090"):
        assert old not in text
    assert "server 127.0.0.1:18080;" in forward_auth_server(18000, 18090, "127.0.0.1:18080")


def test_plain_proxy_and_upstream_name_their_ports() -> None:
    assert "listen 127.0.0.1:19000 reuseport;" in proxy_server(19000, 19001)
    assert "server 127.0.0.1:19001;" in proxy_server(19000, 19001)
    assert "return 200" in upstream_server(19001)


def test_a_second_copy_gets_its_own_upstream_names() -> None:
    first = forward_auth_server(18000, 18090, "127.0.0.1:18080")
    second = forward_auth_server(18001, 18090, "127.0.0.1:18081", name_suffix="_ref")
    assert "upstream apikeys_gateway {" in first
    assert "_ref" not in first
    assert "upstream apikeys_gateway_ref {" in second
    assert "upstream apikeys_backend_ref {" in second
    assert "proxy_pass http://apikeys_gateway_ref/_auth/verify;" in second
    assert "proxy_pass http://apikeys_backend_ref;" in second


def test_the_reference_verdict_service_answers_204_with_an_identity() -> None:
    text = verdict_server(18082)
    assert "listen 127.0.0.1:18082 reuseport;" in text
    assert "unix:" not in text
    assert "listen unix:/tmp/x/verdict.sock;" in verdict_server(18082, "/tmp/x/verdict.sock")
    assert "return 204;" in text
    assert "X-Authenticated-Key-Id" in text
