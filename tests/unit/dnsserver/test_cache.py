"""The reply cache's key (the normalised question) and its bound in bytes."""

from __future__ import annotations

import random
import struct
import tracemalloc

import dns.edns
import dns.flags
import dns.message
import pytest

from dnsdisc.dnsserver.cache import MAX_KEYED, key_of, udp_limit
from tests.support.world import World


def wire(name: str, rdtype: str = "A", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def test_the_key_ignores_id_letter_case_and_usual_options() -> None:
    base = key_of(wire("web.svc.internal."), False)
    assert base is not None
    q = dns.message.make_query("WeB.sVc.InTeRnAl.", "A")
    q.id ^= 0x5555
    assert key_of(q.to_wire(), False) == base
    edns = key_of(wire("web.svc.internal.", use_edns=0, payload=1232), False)
    cookie = dns.edns.GenericOption(10, b"\x01" * 8)
    assert key_of(wire("WEB.svc.internal.", use_edns=0, payload=4096, options=[cookie]), False)
    assert (
        key_of(wire("WEB.svc.internal.", use_edns=0, payload=4096, options=[cookie]), False) == edns
    )


def test_the_key_tells_apart_what_changes_the_reply() -> None:
    keys = [
        key_of(wire("web.svc.internal."), False),
        key_of(wire("web.svc.internal."), True),
        key_of(wire("web.svc.internal.", "AAAA"), False),
        key_of(wire("web.svc.internal.", flags=0), False),  # RD clear
        key_of(wire("web.svc.internal.", flags=dns.flags.RD | dns.flags.CD), False),
        key_of(wire("web.svc.internal.", use_edns=0, payload=512), False),
        key_of(wire("web.svc.internal.", use_edns=0, payload=1100), False),
        key_of(wire("web.svc.internal.", use_edns=0, payload=1232), False),
        key_of(wire("web.svc.internal.", use_edns=0, payload=1232, want_dnssec=True), False),
        key_of(wire("web.svc.internal.", use_edns=0), True),
        key_of(wire("web2.svc.internal."), False),
        # NSID (RFC 5001): its reply carries our identifier, the same query without it none.
        key_of(
            wire("web.svc.internal.", use_edns=0, options=[dns.edns.GenericOption(3, b"")]), False
        ),
    ]
    assert None not in keys and len(set(keys)) == len(keys)
    # Payload sizes of one class share a key, and the reply limit is the class's floor.
    assert key_of(wire("a.", use_edns=0, payload=1232), False) == key_of(
        wire("a.", use_edns=0, payload=65000), False
    )
    assert [udp_limit(n) for n in (0, 512, 700, 800, 1100, 1231, 1232, 4096)] == [
        512, 512, 512, 768, 1024, 1024, 1232, 1232,
    ]  # fmt: skip


def test_odd_queries_get_no_key() -> None:
    odd = dns.message.make_query("web.svc.internal.", "A", use_edns=0)
    odd.additional.append(dns.message.make_query("x.", "A").question[0])  # a record besides OPT
    padded = wire("web.svc.internal.", use_edns=0, options=[dns.edns.GenericOption(12, bytes(600))])
    plain = wire("web.svc.internal.")
    assert len(padded) > MAX_KEYED
    for data in [
        padded,
        plain + b"\x00",  # trailing bytes
        plain[:2] + struct.pack("!H", 0x8100) + plain[4:],  # a response
        plain[:2] + struct.pack("!H", 0x2100) + plain[4:],  # opcode 4
        wire("web.svc.internal.", use_edns=1),  # EDNS version 1: BADVERS, not cached
        plain[:12],
    ]:
        assert key_of(data, False) is None, data


def test_a_0x20_query_is_answered_from_the_cache_with_its_own_spelling(world: World) -> None:
    first = world.raw(wire("web.svc.internal."))
    assert first is not None and len(world.index.cache) == 1
    rng = random.Random(3)
    for _ in range(200):
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in "web.svc.internal.")
        q = dns.message.make_query(name, "A")
        reply = world.raw(q.to_wire())
        assert reply is not None
        assert reply[:2] == q.to_wire()[:2]
        assert reply[12 : 12 + 18] == q.to_wire()[12 : 12 + 18]  # the client's letter case
        msg = dns.message.from_wire(reply)
        assert sorted(rr.to_text() for rr in msg.answer[0]) == ["10.0.0.1", "10.0.0.2"]
    cache = world.index.cache
    assert len(cache) == 1
    assert len(cache.udp) == 1  # one exact spelling indexed, the rest found by key


def test_the_cache_stays_within_its_bytes_and_counts_them_honestly() -> None:
    """A flood of distinct names (NXDOMAIN each) and of a large service's orders: the bytes
    counted never exceed the limit, and the memory really held is no more than counted."""
    w = World()
    for n in range(300):
        w.add("big", f"i{n}", address=f"10.1.{n // 250}.{n % 250 + 1}", port=80)
    w.settings("big", policy="round_robin")
    cache = w.index.cache
    limit = 400_000
    cache.limit = limit
    big = wire("big.svc.internal.", use_edns=0)
    w.raw(big)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3000):
            w.raw(wire(f"x{n}.big.svc.internal."))
            w.raw(big, tcp=n % 2 == 0)
            assert cache.size <= limit
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.evicted > 0
    assert cache.size == sum(e.size for e in cache.table.values())
    assert held <= limit * 1.1, (held, cache.size)
    assert len(cache.udp) + len(cache.tcp) == sum(len(e.raws) for e in cache.table.values())


@pytest.mark.parametrize("limit", [0])
def test_a_limit_of_zero_keeps_nothing(world: World, limit: int) -> None:
    world.responder.reply_cache_bytes = limit
    world.responder.index = world.index
    for _ in range(3):
        assert world.raw(wire("web.svc.internal.")) is not None
    assert len(world.index.cache) == 0 and world.index.cache.size == 0
