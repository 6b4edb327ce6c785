"""Who a request comes from: the client's address behind trusted proxies, and its failure group."""

from __future__ import annotations

from apikeys_shared.addresses import forwarded_address
from auth_gateway.clients import client_address, failure_group, is_trusted


def test_client_address_trusts_forwarded_for_only_from_trusted_peers() -> None:
    assert client_address("9.9.9.9", ["1.1.1.1"], ()) == "9.9.9.9"
    assert client_address("9.9.9.9", ["1.1.1.1"], ("10.0.0.0/8",)) == "9.9.9.9"
    assert client_address("10.0.0.5", ["1.1.1.1, 10.0.0.7"], ("10.0.0.0/8",)) == "1.1.1.1"
    assert client_address("10.0.0.5", ["spoof, 2.2.2.2"], ("10.0.0.0/8",)) == "2.2.2.2"
    assert client_address("10.0.0.5", [], ("10.0.0.0/8",)) == "10.0.0.5"
    assert client_address("10.0.0.5", ["garbage"], ("10.0.0.0/8",)) == "10.0.0.5"


def test_forwarded_hops_with_ports_or_brackets_name_their_address() -> None:
    # Proxies that append the client's port (Azure Application Gateway) or bracket IPv6: the
    # address counts, not one throttle per connection, nor the proxy's own for everyone.
    trusted = ("10.0.0.0/8",)
    assert client_address("10.0.0.5", ["203.0.113.7:4242"], trusted) == "203.0.113.7"
    assert client_address("10.0.0.5", ["[2001:db8::1]:4242"], trusted) == "2001:db8::1"
    assert client_address("10.0.0.5", ["[2001:DB8::1]"], trusted) == "2001:db8::1"
    # A trusted hop with a port is still a trusted hop.
    assert client_address("10.0.0.5", ["198.51.100.9, 10.0.0.7:8080"], trusted) == "198.51.100.9"
    # Names no address: the walk stops at the peer.
    assert client_address("10.0.0.5", ["198.51.100.9, unknown"], trusted) == "10.0.0.5"
    assert client_address("10.0.0.5", ["1.2.3.4:99999999"], trusted) == "10.0.0.5"
    assert forwarded_address(" 192.0.2.1 ") == "192.0.2.1"
    assert forwarded_address("[::ffff:192.0.2.1]:80") == "::ffff:c000:201"
    assert forwarded_address("_hidden") is None
    assert forwarded_address("[192.0.2.1") is None


def test_peers_on_the_unix_socket_are_trusted_only_when_named() -> None:
    assert client_address("unix:", ["1.1.1.1"], ()) == "unix:"
    assert client_address("unix:", ["1.1.1.1"], ("0.0.0.0/0",)) == "unix:"
    assert client_address("unix:", ["1.1.1.1"], ("unix:",)) == "1.1.1.1"
    assert client_address("unix:", ["1.1.1.1, 10.0.0.7"], ("unix:", "10.0.0.0/8")) == "1.1.1.1"
    assert is_trusted("unix:", ("unix:",))
    assert not is_trusted("unix:", ("127.0.0.1",))
    assert is_trusted("127.0.0.1", ("unix:", "127.0.0.0/8"))


def test_trust_decisions_are_remembered_per_address_and_list_within_a_bound() -> None:
    from auth_gateway import clients

    remembered = clients._is_trusted
    remembered.cache_clear()
    assert is_trusted("10.0.0.5", ("10.0.0.0/8",))
    assert not is_trusted("10.0.0.5", ("192.168.0.0/16",))  # another list, another answer
    assert not is_trusted("not an address", ("10.0.0.0/8",))
    assert is_trusted("10.0.0.5", ["10.0.0.0/8"])  # remembered, whatever sequence names the list
    assert remembered.cache_info().hits == 1
    for n in range(clients._REMEMBERED + 10):
        is_trusted(f"10.1.{n // 256}.{n % 256}", ("10.0.0.0/8",))
    assert remembered.cache_info().currsize <= clients._REMEMBERED
    assert is_trusted("10.1.0.1", ("10.0.0.0/8",))


def test_failures_of_an_ipv6_client_count_against_its_slash_64() -> None:
    assert failure_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert failure_group("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert failure_group("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert failure_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert failure_group("192.0.2.7") == "192.0.2.7"
    assert failure_group("unix:") == "unix:"
    assert failure_group("unknown") == "unknown"
