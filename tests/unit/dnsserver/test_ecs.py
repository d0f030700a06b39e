"""EDNS Client Subnet (RFC 7871): the option read from queries dnspython writes, every malformed
form refused, and the echo an answer would carry."""

from __future__ import annotations

import dns.edns
import dns.message
import pytest

from dnsdisc.dnsserver import ecs


def query(*options: dns.edns.Option) -> bytes:
    return dns.message.make_query(
        "web.svc.internal.", "A", use_edns=0, options=list(options)
    ).to_wire()


def raw(family: int, source: int, scope: int, address: bytes) -> dns.edns.GenericOption:
    return dns.edns.GenericOption(ecs.OPTION, bytes([0, family, source, scope]) + address)


def subnet_of(data: bytes) -> ecs.Subnet | None:
    found = ecs.find(data)
    return None if found is None else found.subnet


def test_the_subnet_is_read_and_the_query_without_it_is_kept() -> None:
    v4 = query(dns.edns.ECSOption("192.0.2.77", 24))
    found = ecs.find(v4)
    assert found is not None and found.subnet.address == bytes([192, 0, 2, 0])
    assert str(found.subnet.network) == "192.0.2.0/24" and found.udp_size == 1232
    # Without the option, the query is the one a resolver sends without ECS.
    assert found.plain == query()[2:]
    v6 = subnet_of(query(dns.edns.ECSOption("2001:db8:1:2::5", 56)))
    assert v6 is not None and str(v6.network) == "2001:db8:1::/56" and len(v6.address) == 16
    assert ecs.find(query()) is None
    # Found behind another option too (padding first), which the plain query keeps.
    padding = dns.edns.GenericOption(12, bytes(8))
    padded = ecs.find(query(padding, dns.edns.ECSOption("198.51.100.0", 22)))
    assert padded is not None and str(padded.subnet.network) == "198.51.100.0/22"
    assert padded.plain == query(padding)[2:]
    zero = subnet_of(query(dns.edns.ECSOption("0.0.0.0", 0)))
    assert zero is not None and str(zero.network) == "0.0.0.0/0"


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (raw(3, 24, 0, bytes(3)), "family"),
        (raw(1, 33, 0, bytes(5)), "longer than"),
        (raw(2, 129, 0, bytes(17)), "longer than"),
        (raw(1, 24, 0, bytes(4)), "bytes for a /24"),
        (raw(1, 24, 0, bytes(2)), "bytes for a /24"),
        (raw(1, 22, 0, bytes([192, 0, 3])), "beyond"),  # /22: the last 2 bits must be 0
        (dns.edns.GenericOption(ecs.OPTION, b"\x00\x01\x18"), "fixed part"),
    ],
)
def test_malformed_options_are_refused(option: dns.edns.Option, why: str) -> None:
    with pytest.raises(ecs.Malformed, match=why):
        ecs.find(query(option))


def test_the_echo_keeps_the_query_and_sets_the_scope() -> None:
    subnet = subnet_of(query(dns.edns.ECSOption("192.0.2.77", 24)))
    assert subnet is not None
    data = ecs.option(subnet, 16)
    echoed = dns.edns.option_from_wire(ecs.OPTION, data, 0, len(data))
    assert isinstance(echoed, dns.edns.ECSOption)
    assert (echoed.address, echoed.srclen, echoed.scopelen) == ("192.0.2.0", 24, 16)
    assert ecs.option(subnet, 0)[3] == 0


def test_an_option_longer_than_its_record_is_malformed() -> None:
    wire = bytearray(query(dns.edns.ECSOption("192.0.2.77", 24)))
    at = wire.rindex(bytes([0, 8, 0, 7]))  # the option's code and length
    wire[at + 3] = 40  # longer than what follows
    with pytest.raises(ecs.Malformed, match="past the end"):
        ecs.find(bytes(wire))
