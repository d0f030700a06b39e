"""wire: query parsing and name/record encoding, checked against dnspython."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest

from dnsdisc.dnsserver import wire


def make(name: str = "web.svc.internal.", rdtype: str = "A", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def test_parse_plain_query_keeps_case_and_question_bytes() -> None:
    data = make("WeB.Svc.Internal.", "SRV")
    q = wire.parse_query(data)
    assert q.qdcount == 1
    assert q.qname == b"\x03WeB\x03Svc\x08Internal\x00"
    assert q.qtype == 33 and q.qclass == 1
    assert q.question == data[12 : 12 + len(q.qname) + 4]
    assert not q.edns and q.udp_size == 512


def test_parse_edns_size_version_and_do_bit() -> None:
    q = wire.parse_query(make(use_edns=0, payload=4096, want_dnssec=True))
    assert q.edns and q.udp_size == 4096 and q.edns_version == 0
    assert q.edns_flags & wire.DO_BIT
    q1 = wire.parse_query(make(use_edns=1))
    assert q1.edns_version == 1
    # A payload size under 512 is treated as 512 (RFC 6891 section 6.2.5).
    assert wire.parse_query(make(use_edns=0, payload=100)).udp_size == 512


def test_short_packet_and_format_errors() -> None:
    with pytest.raises(wire.ShortPacketError):
        wire.parse_query(b"\x00\x01\x00")
    good = make()
    with pytest.raises(wire.FormatError):
        wire.parse_query(good[:20])  # name cut off
    with pytest.raises(wire.FormatError):
        wire.parse_query(good[:-6])  # no room for type and class (OPT-less query)
    pointer = good[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    with pytest.raises(wire.FormatError):
        wire.parse_query(pointer)
    long_name = good[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00" + b"\x00\x01\x00\x01"
    with pytest.raises(wire.FormatError):
        wire.parse_query(long_name)


def test_two_opt_records_or_opt_in_answer_is_format_error() -> None:
    data = bytearray(make(use_edns=0))
    opt = bytes(data[-11:])
    twice = bytearray(data + opt)
    struct.pack_into("!H", twice, 10, 2)
    with pytest.raises(wire.FormatError):
        wire.parse_query(bytes(twice))
    in_answer = bytearray(data)
    struct.pack_into("!HH", in_answer, 6, 1, 0)
    struct.pack_into("!H", in_answer, 10, 0)
    with pytest.raises(wire.FormatError):
        wire.parse_query(bytes(in_answer))


def test_response_and_other_opcode_are_not_parsed_further() -> None:
    q = wire.parse_query(b"\x12\x34\x80\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\xff")
    assert q.flags & wire.FLAG_QR and q.qname == b""


def test_text_and_labels_to_wire_agree_with_dnspython() -> None:
    expected = dns.name.from_text("a-1.Web.svc.internal.").canonicalize().to_wire()
    assert wire.text_to_wire("a-1.Web.svc.internal") == expected
    assert wire.labels_to_wire(("a-1", "web"), wire.text_to_wire("svc.internal.")) == expected
    assert wire.text_to_wire("www", wire.text_to_wire("svc.internal.")) == wire.text_to_wire(
        "www.svc.internal."
    )
    assert wire.wire_to_text(expected) == "a-1.web.svc.internal."
    with pytest.raises(ValueError):
        wire.labels_to_wire(("a" * 63,) * 5)


def test_subdomain_and_parents() -> None:
    apex = wire.text_to_wire("svc.internal.")
    assert wire.is_subdomain(wire.text_to_wire("a.svc.internal."), apex)
    assert wire.is_subdomain(apex, apex)
    assert not wire.is_subdomain(wire.text_to_wire("xsvc.internal."), apex)
    assert wire.parent_names(wire.text_to_wire("a.b.c.")) == [
        wire.text_to_wire("b.c."),
        wire.text_to_wire("c."),
    ]


def test_owner_pointer_points_into_the_question() -> None:
    qname = wire.text_to_wire("_web._tcp.svc.internal.")
    assert wire.owner_pointer(qname, qname) == b"\xc0\x0c"
    target = wire.text_to_wire("web-1.web.svc.internal.")
    enc = wire.owner_pointer(target, qname)
    offset = 12 + len(b"\x04_web\x04_tcp")
    assert enc == b"\x05web-1\x03web" + struct.pack("!H", 0xC000 | offset)
    # Unrelated names stay whole.
    other = wire.text_to_wire("example.org.")
    assert wire.owner_pointer(other, qname) == other


def test_record_bodies_parse_with_dnspython() -> None:
    owner = wire.text_to_wire("x.svc.internal.")
    target = wire.text_to_wire("t.svc.internal.")
    bodies = [
        wire.rr_body(wire.A, 5, wire.address_rdata("10.0.0.1")[1]),
        wire.rr_body(wire.AAAA, 5, wire.address_rdata("2001:db8::1")[1]),
        wire.rr_body(wire.SRV, 5, wire.srv_rdata(1, 2, 3, target)),
        wire.rr_body(wire.TXT, 5, wire.txt_rdata([b"a=b", b"c=d"])),
        wire.rr_body(wire.SOA, 5, wire.soa_rdata(target, target, 7, 1, 2, 3, 4)),
    ]
    packet = wire.header(1, wire.FLAG_QR, 0, len(bodies), 0, 0) + b"".join(
        owner + b for b in bodies
    )
    msg = dns.message.from_wire(packet)
    texts = [rrset.to_text() for rrset in msg.answer]
    assert texts == [
        "x.svc.internal. 5 IN A 10.0.0.1",
        "x.svc.internal. 5 IN AAAA 2001:db8::1",
        "x.svc.internal. 5 IN SRV 1 2 3 t.svc.internal.",
        'x.svc.internal. 5 IN TXT "a=b" "c=d"',
        "x.svc.internal. 5 IN SOA t.svc.internal. t.svc.internal. 7 1 2 3 4",
    ]
    assert wire.address_rdata("::1")[0] == wire.AAAA
    with pytest.raises(ValueError):
        wire.txt_rdata([b"x" * 256])


def test_reverse_pointer() -> None:
    assert wire.wire_to_text(wire.reverse_pointer("10.0.0.1")) == "1.0.0.10.in-addr.arpa."
    assert wire.wire_to_text(wire.reverse_pointer("2001:db8::1")).endswith(
        ".8.b.d.0.1.0.0.2.ip6.arpa."
    )


def test_opt_record_parses() -> None:
    packet = wire.header(1, wire.FLAG_QR, 0, 0, 0, 1) + wire.opt_record(1232, 1, do=True)
    msg = dns.message.from_wire(packet)
    assert msg.edns == 0 and msg.payload == 1232
    assert msg.ednsflags & dns.flags.DO
    assert msg.rcode() == 16  # BADVERS: ext rcode 1 << 4


def test_fast_address_encodings_agree_with_ipaddress_and_dnspython() -> None:
    """address_rdata and reverse_pointer build from inet_pton bytes; check them against the
    standard library's parser and dnspython's reverse names on many addresses."""
    import ipaddress
    import random

    rng = random.Random(5)
    addrs = ["0.0.0.0", "255.255.255.255", "::", "::1", "::ffff:1.2.3.4", "fe80::abcd:12"]
    addrs += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(500)]
    addrs += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(500)]
    for a in addrs:
        ip = ipaddress.ip_address(a)
        expected = dns.name.from_text(ip.reverse_pointer + ".").canonicalize().to_wire()
        assert wire.reverse_pointer(a) == expected, a
        assert wire.address_rdata(a) == (wire.AAAA if ip.version == 6 else wire.A, ip.packed)
