"""names: which registered addresses get a PTR (``serves_ptr``)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import is_local, serves_ptr


def test_ipv4_local_agrees_with_ipaddress_plus_shared() -> None:
    rng = random.Random(16)
    shared = ipaddress.IPv4Network("100.64.0.0/10")
    samples = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(20_000)]
    # Edges of every range too.
    for net in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.0.2.0/24", "224.0.0.0/4"):
        n = ipaddress.IPv4Network(net)
        samples += [n.network_address, n.broadcast_address, n.network_address - 1,
                    n.broadcast_address + 1]  # fmt: skip
    for addr in samples:
        assert is_local(str(addr)) == (addr.is_private or addr in shared), addr


@pytest.mark.parametrize(
    ("address", "local"),
    [("fd00::1", True), ("2001:db8::1", True), ("::1", True), ("fe80::1", True),
     ("2001:4860:4860::8888", False), ("2a00:1450::1", False)],
)  # fmt: skip
def test_ipv6_local(address: str, local: bool) -> None:
    assert is_local(address) is local


def test_public_addresses_only_inside_a_zone_we_serve() -> None:
    rev = wire.reverse_pointer("8.8.8.8")
    assert not serves_ptr("8.8.8.8", rev, set())
    assert not serves_ptr("8.8.8.8", rev, {wire.text_to_wire("4.4.8.in-addr.arpa.")})
    assert serves_ptr("8.8.8.8", rev, {wire.text_to_wire("8.in-addr.arpa.")})
    assert serves_ptr("8.8.8.8", rev, {wire.text_to_wire("8.8.8.in-addr.arpa.")})
    assert serves_ptr("10.1.2.3", wire.reverse_pointer("10.1.2.3"), set())
    rev6 = wire.reverse_pointer("2001:4860::1")
    assert not serves_ptr("2001:4860::1", rev6, set())
    assert serves_ptr("2001:4860::1", rev6, {wire.text_to_wire("0.6.8.4.1.0.0.2.ip6.arpa.")})
