"""Replies put together from a key's layout (cache.Layout) instead of encoded: byte for byte the
reply the responder encodes for the same order, for random services, questions and transports;
and queries spread over many services keep the cache within its bytes and mostly hit."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import pytest

from dnsdisc.dnsserver import cache as cache_module
from dnsdisc.dnsserver import nsid
from dnsdisc.dnsserver.cache import CachedQuery, key_of
from dnsdisc.dnsserver.rrset import RRSet
from dnsdisc.registry.model import Instance
from tests.support.world import World, packed

NETWORKS = (("eu-1a", "10.1.0.0/16"), ("eu-1b", "10.2.0.0/16"))
CLIENTS = ("", "10.1.3.4", "10.2.9.9", "192.0.2.1")
POLICIES = ("weighted", "random", "priority", "round_robin", "least_loaded")
# UDP payload sizes a client may offer (None: no EDNS); TCP takes None and 1232 too.
PAYLOADS = (None, 512, 700, 800, 1100, 1232, 4096)


# Aliases into the services' names: the RRset's records follow a CNAME, their owner a pointer
# into the question or labels and a pointer.
ZONE = """records:
  - {name: www, type: CNAME, value: web}
  - {name: srv, type: CNAME, value: _web._tcp}
  - {name: a.b.c.long-alias, type: CNAME, value: api}
"""


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zones")
    (path / "aliases.yaml").write_text(ZONE)
    return path


def service_world(seed: int, zones: Path) -> World:
    """Two services of random shape: 1 to 12 instances of IPv4 or IPv6, TCP or UDP, random
    weights (some 0) and priorities, a random policy and max_answers, HTTPS records or not; the
    second answers by the client's zone (locality). Names in ``zones`` alias them."""
    rng = random.Random(seed)
    w = World(zones, locality_networks=NETWORKS)
    for name, locality in (("web", "off"), ("api", rng.choice(["prefer", "pin", "off"]))):
        n = rng.randint(1, 12)
        settings: dict[str, object] = {"policy": rng.choice(POLICIES), "locality": locality}
        if rng.random() < 0.5:
            settings["max_answers"] = rng.randint(1, n)
        if rng.random() < 0.4:
            settings["https"] = {"alpn": ["h2"]}
        w.settings(name, **settings)
        for i in range(n):
            six = rng.random() < 0.4
            w.add(
                name,
                # Long instance names make SRV answers big enough to meet the size limits.
                f"i{i}{'x' * rng.randint(0, 60)}",
                address=f"2001:db8::{i + 1}" if six else f"10.{1 + i % 2}.0.{i + 1}",
                port=8000 + i,
                weight=rng.choice([0, 1, 10, 50, 100, 100]),
                priority=rng.choice([0, 0, 1, 2]),
                protocol=rng.choice(["tcp", "udp"]),
                tags=["blue"] if rng.random() < 0.5 else [],
                zone=rng.choice(["eu-1a", "eu-1b"]),
            )
    return w


QUESTIONS = (
    ("web.svc.internal.", "A"),
    ("web.svc.internal.", "AAAA"),
    ("web.svc.internal.", "HTTPS"),
    ("_web._tcp.svc.internal.", "SRV"),
    ("_web._udp.svc.internal.", "SRV"),
    ("blue.web.svc.internal.", "A"),
    ("_web._blue.svc.internal.", "SRV"),
    ("api.svc.internal.", "A"),
    ("api.svc.internal.", "AAAA"),
    ("_api._tcp.svc.internal.", "SRV"),
    ("_api._udp.svc.internal.", "SRV"),
    ("www.svc.internal.", "A"),
    ("www.svc.internal.", "AAAA"),
    ("srv.svc.internal.", "SRV"),
    ("a.b.c.long-alias.svc.internal.", "A"),
)


def query(rng: random.Random, name: str, rdtype: str, tcp: bool) -> bytes:
    """``name`` in random letter case (0x20), with random EDNS, RD, NSID and cookie."""
    spelled = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
    payload = rng.choice((None, 1232) if tcp else PAYLOADS)
    options: list[dns.edns.Option] = []
    if payload is not None and rng.random() < 0.3:
        options.append(dns.edns.GenericOption(nsid.OPTION, b""))
    if payload is not None and rng.random() < 0.2:
        options.append(dns.edns.GenericOption(10, rng.randbytes(8)))  # a client cookie
    q = dns.message.make_query(
        spelled,
        rdtype,
        use_edns=0 if payload is not None else None,
        payload=payload or 512,
        options=options,
    )
    q.id = rng.randrange(1 << 16)
    if rng.random() < 0.5:
        q.flags &= ~dns.flags.RD
    return q.to_wire()


def forced(w: World, rrset: RRSet, data: bytes, tcp: bool, source: bytes, order: tuple[int, ...]):
    """The responder's full encode of ``order`` (as _encode makes a reply for a drawn order)."""
    rrset.forced = order
    try:
        return w.responder._respond(data, tcp, source)
    finally:
        rrset.forced = None


def complete(reply: bytes, entry: CachedQuery, order: tuple[int, ...]) -> bool:
    """Whether the encoder showed every record of ``order`` and all their glue, untruncated."""
    layout = entry.layout
    assert layout is not None and entry.rrset is not None
    members = entry.rrset.members
    glue = sum(len(members[i].glue) for i in order)
    an, ar = int.from_bytes(reply[6:8]), int.from_bytes(reply[10:12])
    return (
        not reply[2] & 0x02 and an == layout.an + len(order) and ar == glue + layout.opt
    )  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "flat"), [(s, True) for s in range(30)] + [(s, False) for s in range(10)]
)
def test_an_assembled_reply_is_the_encoded_reply_of_its_order(
    seed: int, flat: bool, zones: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For each question, transport and client: the first reply gives the key its layout; then
    for random orders of every length (orders the policy may never draw included) the layout
    builds exactly what the encoder makes for the order, or declines, and only when the encoder
    cuts something or a member was never shown. ``flat`` false: as for an RRset too large for
    the layout's flat tuples (built from the members' own objects)."""
    if not flat:
        monkeypatch.setattr(cache_module, "FLAT_MEMBERS", 0)
    rng = random.Random(seed)
    w = service_world(seed, zones)
    if rng.random() < 0.3:
        w.responder.nsid = nsid.option("node-7")
    if rng.random() < 0.2:
        w.responder.stale = True  # Stale Answer (RFC 8914) in every OPT record
    built = declined = 0
    for name, rdtype in QUESTIONS:
        for _ in range(3):
            tcp = rng.random() < 0.3
            data = query(rng, name, rdtype, tcp)
            source = packed(rng.choice(CLIENTS))
            first = w.responder.respond(data, tcp, source)
            assert isinstance(first, bytes)
            key = key_of(data, tcp)
            entry = w.index.cache.table.get(key) if key is not None else None
            if entry is None or entry.layout is None or entry.rrset is None:
                continue
            layout, rrset = entry.layout, entry.rrset
            assert (layout.bodies is not None) == flat
            if data[12 : entry.qend] != entry.spelled:
                continue  # the entry is spelled as another query: patched, tested end to end
            n = len(rrset.members)
            for _ in range(40):
                order = tuple(rng.sample(range(n), rng.randint(1, n)))
                if rng.random() < 0.5:
                    layout.allow(order)  # as if a reply had shown them: build what fits
                encoded = forced(w, rrset, data, tcp, source, order)
                assert isinstance(encoded, bytes)
                made = layout.build(order)
                if made is None:
                    declined += 1
                    allowed = all(layout.allowed[i] for i in order)
                    assert not (allowed and complete(encoded, entry, order)), order
                    continue
                built += 1
                assert data[:2] + made == encoded, (name, rdtype, tcp, order)
                dns.message.from_wire(data[:2] + made)
    assert built > 0 or declined == 0


def twins(seed: int, limit: int, zones: Path) -> tuple[World, World]:
    cached, plain = service_world(seed, zones), service_world(seed, zones)
    cached.index.cache.limit = cached.responder.reply_cache_bytes = limit
    plain.responder.reply_cache_bytes = 0
    plain.responder.index = plain.index  # binds the limit: nothing is cached
    return cached, plain


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("limit", [1 << 25, 60_000, 20_000])
def test_cached_answers_are_byte_for_byte_the_uncached_ones(
    seed: int, limit: int, zones: Path
) -> None:
    """Two worlds alike, one answering through the cache (with assembled replies kept, not
    kept past KEEP_ASSEMBLED, trimmed and evicted at small limits), one encoding every reply,
    both drawing from the same random numbers: every reply is the same, byte for byte, for
    queries in random letter case, transports, EDNS sizes and options, and clients (ECS)."""
    cached, plain = twins(seed, limit, zones)
    rng = random.Random(seed)
    asked = [(*rng.choice(QUESTIONS), rng.random() < 0.3) for _ in range(25)]
    for _ in range(600):
        name, rdtype, tcp = rng.choice(asked)
        data = query(rng, name, rdtype, tcp)
        source = rng.choice(CLIENTS)
        if source and rng.random() < 0.3 and data[11]:  # with EDNS: say the client in ECS
            q = dns.message.from_wire(data)
            q.use_edns(0, 0, q.payload, options=[*q.options, dns.edns.ECSOption(source, 24)])
            data = q.to_wire()
        one, two = cached.raw(data, tcp, source), plain.raw(data, tcp, source)
        assert one == two, (name, rdtype, tcp, source)
        assert isinstance(one, bytes)
        dns.message.from_wire(one)
        cache = cached.index.cache
        assert cache.size == sum(e.size for e in cache.table.values()) <= limit
    assert sum(e.layout is not None for e in cached.index.cache.table.values()) > 0


def test_spread_queries_over_many_services_fit_and_mostly_hit() -> None:
    """1,000 services of 5 weighted instances (120 orders each), A and SRV asked of each: once
    each key was asked, its replies come from the cache or its layout, and the cache holds every
    key within its bytes (the first keys give up their orders for the later keys' layouts)."""
    w = World()
    services = 1000

    async def register() -> None:
        for s in range(services):
            for i in range(5):
                body = {"address": f"10.{s // 250}.{s % 250}.{i + 1}", "port": 80}
                await w.registry.put_instance(Instance.from_json(f"s{s}", f"i{i}", body))

    asyncio.run(register())
    queries = []
    for s in range(services):
        for name, rdtype in ((f"s{s}.svc.internal.", "A"), (f"_s{s}._tcp.svc.internal.", "SRV")):
            q = dns.message.make_query(name, rdtype)
            queries.append(q.to_wire())
    cache = w.index.cache
    # 2,000 keys: room for all of them with their layouts alone (about 1.8 kB each, with their
    # names listed for the changes that drop them), and for the orders of the first ones while
    # the cache is half full.
    limit = 3_800_000
    cache.limit = w.responder.reply_cache_bytes = limit
    encoded = counting(w)
    rng = random.Random(5)
    for data in queries:
        w.raw(data)
    assert encoded() == len(queries)  # each key encoded once
    for n in range(10):
        for data in rng.sample(queries, len(queries)):
            reply = w.raw(data)
            assert reply is not None and reply[:2] == data[:2] and reply[6:8] == b"\x00\x05"
            assert cache.size <= limit
            if n == 9:
                assert len(dns.message.from_wire(reply).answer[0]) == 5
    assert len(cache) == len(queries) and cache.evicted == 0
    assert cache.trimmed > 0  # orders of the first keys made room
    assert all(e.layout is not None for e in cache.table.values())
    assert encoded() == len(queries)  # every other reply kept or assembled


def counting(w: World) -> Callable[[], int]:
    """Count the replies the responder encodes from now on."""
    count = 0
    respond = w.responder._respond

    def counted(*args: object) -> object:
        nonlocal count
        count += 1
        return respond(*args)  # type: ignore[arg-type]

    w.responder._respond = counted  # type: ignore[method-assign]
    return lambda: count
