"""NSID (RFC 5001) and Extended DNS Errors (RFC 8914) in the responder's replies, and the reply
cache keeping the replies with and without them apart."""

from __future__ import annotations

import asyncio
import random

import dns.edns
import dns.message
import dns.rcode
import pytest

from dnsdisc.dnsserver import ede, nsid
from dnsdisc.dnsserver.answer import FORWARD, Responder
from dnsdisc.dnsserver.cookies import Cookies
from dnsdisc.dnsserver.forward import Forwarder, refused, servfail
from dnsdisc.netaddr import HostPort
from tests.support.world import World

NSID = dns.edns.GenericOption(3, b"")


@pytest.fixture
def named(world: World) -> World:
    """The world's responder with ``dns.nsid: node1`` in worker 2."""
    world.responder = Responder(world.index, random.Random(7), nsid=nsid.option("node1", "w2"))
    return world


def ask(w: World, name: str, rdtype: str = "A", *, options: list[dns.edns.Option] | None = None,
        tcp: bool = False, edns: int = 0) -> dns.message.Message:  # fmt: skip
    query = dns.message.make_query(name, rdtype, use_edns=edns, options=options or [])
    query.flags = 0
    reply = w.raw(query.to_wire(max_size=65535), tcp)
    assert isinstance(reply, bytes)
    return dns.message.from_wire(reply)


def nsid_of(msg: dns.message.Message) -> bytes | None:
    found = [o for o in msg.options if o.otype == dns.edns.NSID]
    assert len(found) <= 1
    return found[0].to_wire() if found else None  # type: ignore[no-untyped-call]


def edes(msg: dns.message.Message) -> list[tuple[int, str | None]]:
    return [
        (int(o.code), o.text)  # type: ignore[attr-defined]
        for o in msg.options
        if o.otype == dns.edns.EDE
    ]


def test_nsid_names_the_process_when_asked_and_only_then(named: World) -> None:
    assert nsid.option("node1", "w2") == b"\x00\x03\x00\x08node1/w2"
    assert nsid.option(None, "w2") is None
    for _ in range(3):  # the second and third come from the cache: each keeps its own
        with_ = ask(named, "web.svc.internal.", options=[NSID])
        without = ask(named, "web.svc.internal.")
        assert nsid_of(with_) == b"node1/w2"
        assert nsid_of(without) is None
        assert with_.answer == without.answer or len(with_.answer[0]) == len(without.answer[0])
        assert ask(named, "web.svc.internal.", edns=-1).opt is None  # no EDNS: no OPT at all
    # Over TCP, for NXDOMAIN and NODATA too.
    assert nsid_of(ask(named, "nope.svc.internal.", options=[NSID], tcp=True)) == b"node1/w2"
    assert nsid_of(ask(named, "web.svc.internal.", "MX", options=[NSID])) == b"node1/w2"


def test_nsid_is_not_given_when_not_configured(world: World) -> None:
    assert nsid_of(ask(world, "web.svc.internal.", options=[NSID])) is None


def test_a_non_empty_nsid_in_a_query_is_taken_as_the_question(named: World) -> None:
    """RFC 5001 2.1 wants it empty; NSD, Knot and BIND ignore the payload and answer."""
    msg = ask(named, "web.svc.internal.", options=[dns.edns.GenericOption(3, b"junk")])
    assert msg.rcode() == dns.rcode.NOERROR and nsid_of(msg) == b"node1/w2"


def test_nsid_goes_with_a_cookie_and_a_client_subnet(named: World) -> None:
    cookie = dns.edns.GenericOption(10, bytes(range(8)))
    subnet = dns.edns.ECSOption("10.1.0.0", 24)
    query = dns.message.make_query(
        "web.svc.internal.", "A", use_edns=0, options=[NSID, subnet, cookie]
    )
    for _ in range(2):
        data = query.to_wire()
        reply = named.raw(data, source="127.0.0.1")
        assert isinstance(reply, bytes)
        cookies = Cookies(bytes(16))
        out, _ = cookies.answer(data, reply, b"\x7f\x00\x00\x01", False, named.responder.echoed)
        msg = dns.message.from_wire(out)
        kinds = sorted(o.otype for o in msg.options)
        assert kinds == [dns.edns.NSID, dns.edns.ECS, dns.edns.COOKIE], msg
        assert nsid_of(msg) == b"node1/w2"


def test_refused_out_of_our_zones_says_not_authoritative(named: World) -> None:
    msg = ask(named, "example.com.")
    assert msg.rcode() == dns.rcode.REFUSED
    assert edes(msg) == [(ede.NOT_AUTHORITATIVE, None)]
    assert ask(named, "example.com.").opt is not None  # cached: the same
    assert edes(ask(named, "example.com.")) == [(ede.NOT_AUTHORITATIVE, None)]
    assert ask(named, "example.com.", edns=-1).opt is None  # no EDNS: no extended error
    both = ask(named, "example.com.", options=[NSID])
    assert edes(both) == [(ede.NOT_AUTHORITATIVE, None)] and nsid_of(both) == b"node1/w2"


def test_nodata_for_a_service_whose_instances_are_all_unhealthy_says_so(world: World) -> None:
    world.add("api", "a1", address="10.0.9.1", port=80)
    world.add("api", "a2", address="10.0.9.2", port=80)
    assert edes(ask(world, "api.svc.internal.")) == []
    # A type the name never has: a plain NODATA, with or without health.
    assert edes(ask(world, "api.svc.internal.", "AAAA")) == []

    async def fail(iid: str) -> None:
        assert world.registry.set_status("api", iid, "critical", "down")

    asyncio.run(fail("a1"))
    assert edes(ask(world, "api.svc.internal.")) == []  # a2 still answers
    asyncio.run(fail("a2"))
    for rdtype in ("A", "SRV", "ANY"):
        msg = ask(world, "api.svc.internal.", rdtype)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
        assert edes(msg) == [(ede.OTHER, "no healthy instance")], rdtype
    assert edes(ask(world, "api.svc.internal.", "MX")) == []
    assert edes(ask(world, "api.svc.internal.", "AAAA")) == []  # IPv4 only: no AAAA to withhold
    assert edes(ask(world, "_api._tcp.svc.internal.", "MX")) == []


def test_stale_answers_say_so_and_the_cache_follows_the_flag(named: World) -> None:
    before = ask(named, "web.svc.internal.")
    assert edes(before) == []
    named.responder.stale = True
    for _ in range(2):
        msg = ask(named, "web.svc.internal.", options=[NSID])
        assert edes(msg) == [(ede.STALE_ANSWER, "the shared store is unreachable")]
        assert nsid_of(msg) == b"node1/w2"
        assert edes(ask(named, "nope.svc.internal.")) == [
            (ede.STALE_ANSWER, "the shared store is unreachable")
        ]
    # REFUSED is not an answer from our data: not stale.
    assert edes(ask(named, "example.com.")) == [(ede.NOT_AUTHORITATIVE, None)]
    named.responder.stale = False
    assert edes(ask(named, "web.svc.internal.")) == []


def test_refused_recursion_and_forwarder_failures_say_why() -> None:
    query = dns.message.make_query("example.com.", "A", use_edns=0, options=[NSID]).to_wire()
    assert edes(dns.message.from_wire(refused(query))) == [
        (ede.PROHIBITED, "recursion is not offered to this client")
    ]
    plain = dns.message.make_query("example.com.", "A").to_wire()
    assert dns.message.from_wire(refused(plain)).opt is None
    ident = nsid.option("node1", "main")
    # Nothing listens on this port (a closed UDP port answers ICMP): a network error, fast;
    # a port that drops the query is silence: no reachable authority.
    fwd = Forwarder([HostPort("127.0.0.1", 9)], timeout=0.3, nsid=ident)
    got = dns.message.from_wire(asyncio.run(fwd.forward(query, tcp=True)))
    assert got.rcode() == dns.rcode.SERVFAIL
    assert edes(got) == [(ede.NETWORK_ERROR, "a recursor could not be reached")]
    assert nsid_of(got) == b"node1/main"
    timed_out = dns.message.from_wire(
        servfail(query, ede.option(ede.NO_REACHABLE_AUTHORITY, "no recursor answered in time"))
    )
    assert edes(timed_out) == [(ede.NO_REACHABLE_AUTHORITY, "no recursor answered in time")]


def test_forwarded_names_are_not_answered_here(world: World) -> None:
    world.responder = Responder(world.index, random.Random(7), forwarding=True)
    query = dns.message.make_query("example.com.", "A", use_edns=0)
    assert world.raw(query.to_wire()) is FORWARD


def test_a_huge_options_section_is_answered(named: World) -> None:
    """Hundreds of options, one of them NSID, a malformed one last: answered, no exception."""
    many = [dns.edns.GenericOption(65001, b"x" * 10) for _ in range(400)]
    msg = ask(named, "web.svc.internal.", options=[*many, NSID], tcp=True)
    assert msg.rcode() == dns.rcode.NOERROR and nsid_of(msg) == b"node1/w2"
    data = dns.message.make_query("web.svc.internal.", "A", use_edns=0, options=[NSID]).to_wire()
    # The OPT's RDLENGTH claims more than there is: FORMERR or nothing, never an exception.
    broken = data[:-6] + b"\x00\x10" + data[-4:]
    reply = named.raw(broken)
    assert reply is None or dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    assert ask(named, "web.svc.internal.").rcode() == dns.rcode.NOERROR
