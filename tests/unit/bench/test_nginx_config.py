"""The benchmark's nginx configs: the shipped forward-auth example on the benchmark's ports."""

from __future__ import annotations

from tests.bench.nginx import forward_auth_server, proxy_server, upstream_server


def test_forward_auth_uses_the_shipped_example_on_the_given_ports() -> None:
    text = forward_auth_server(18000, 18090, 18080)
    assert "auth_request" in text
    assert "listen 127.0.0.1:18000;" in text
    assert "server 127.0.0.1:18080;" in text  # the gateway
    assert "server 127.0.0.1:18090;" in text  # the upstream
    for old in ("127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:8090"):
        assert old not in text


def test_plain_proxy_and_upstream_name_their_ports() -> None:
    assert "listen 127.0.0.1:19000 reuseport;" in proxy_server(19000, 19001)
    assert "server 127.0.0.1:19001;" in proxy_server(19000, 19001)
    assert "return 200" in upstream_server(19001)
