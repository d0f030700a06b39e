"""The reply cache after a write: the replies made from what changed go, the others stay.

A write to one service drops the cached replies of that service's names (and of the names a
CNAME chain took through them, of the reverse names of its addresses, of names that stop or
start being empty non-terminals) and every negative reply (its SOA carries the serial, which
every write moves); the replies of other names are still answered from the cache."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.cache import key_of
from dnsdisc.registry.queries import QueryDef
from tests.support.world import World, texts

REVERSE = ("10.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa.")


def key(name: str, rdtype: str = "A") -> bytes | None:
    """The cache key of the query ``World.ask`` sends for ``name``."""
    return key_of(dns.message.make_query(name, rdtype).to_wire(), False)


def counting(w: World) -> Callable[[], int]:
    """How many replies the responder has encoded since."""
    calls = [0]
    encode = w.responder._encode

    def counted(*args, **kw):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return encode(*args, **kw)

    w.responder._encode = counted  # type: ignore[method-assign]
    return lambda: calls[0]


def two_services() -> World:
    w = World(reverse_zones=REVERSE)
    for n in range(3):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
        w.add("api", f"a{n}", address=f"10.0.1.{n + 1}", port=80)
    return w


def test_a_write_drops_its_services_replies_and_keeps_the_others() -> None:
    w = two_services()
    asked = [
        ("web.svc.internal.", "A"),
        ("_web._tcp.svc.internal.", "SRV"),
        ("w1.web.svc.internal.", "A"),
        ("api.svc.internal.", "A"),
        ("_api._tcp.svc.internal.", "SRV"),
        ("a1.api.svc.internal.", "A"),
    ]
    for name, rdtype in asked:
        w.ask(name, rdtype)
    cache = w.index.cache
    api_entries = {k: cache.table[k] for k in (key(n, t) for n, t in asked[3:])}
    encoded = counting(w)

    w.add("web", "w1", address="10.0.0.9", port=80)  # a new address for w1

    assert texts(w.ask("w1.web.svc.internal.")) == ["10.0.0.9"]
    assert "10.0.0.9" in texts(w.ask("web.svc.internal."))
    srv = w.ask("_web._tcp.svc.internal.", "SRV")
    assert "10.0.0.9" in texts(srv, "additional") and "10.0.0.2" not in texts(srv, "additional")
    assert encoded() == 3  # web's names were encoded again
    for k, entry in api_entries.items():
        assert cache.table[k] is entry  # api's replies were kept
    assert sorted(texts(w.ask("api.svc.internal."))) == ["10.0.1.1", "10.0.1.2", "10.0.1.3"]
    w.ask("_api._tcp.svc.internal.", "SRV")
    w.ask("a1.api.svc.internal.")
    assert encoded() == 3  # and answered from the cache


def test_a_name_a_write_creates_is_no_longer_nxdomain() -> None:
    w = two_services()
    for name in ("new.svc.internal.", "n1.new.svc.internal.", "_new._tcp.svc.internal."):
        rdtype = "SRV" if name.startswith("_") else "A"
        assert w.ask(name, rdtype).rcode() == dns.rcode.NXDOMAIN
        assert w.ask(name, rdtype).rcode() == dns.rcode.NXDOMAIN  # from the cache
    w.add("new", "n1", address="10.0.2.1", port=80)
    assert texts(w.ask("new.svc.internal.")) == ["10.0.2.1"]
    assert texts(w.ask("n1.new.svc.internal.")) == ["10.0.2.1"]
    assert texts(w.ask("_new._tcp.svc.internal.", "SRV")) == ["0 100 80 n1.new.svc.internal."]
    asyncio.run(w.registry.delete_service("new"))
    assert w.ask("n1.new.svc.internal.").rcode() == dns.rcode.NXDOMAIN


def test_empty_non_terminals_follow_the_names_below_them() -> None:
    """A reverse name's parents exist while an address lies below them: NXDOMAIN before the
    first address, NODATA while one is there, NXDOMAIN again after it goes."""
    w = two_services()
    parent = "9.9.10.in-addr.arpa."
    assert w.ask(parent, "PTR").rcode() == dns.rcode.NXDOMAIN
    w.add("web", "w9", address="10.9.9.1", port=80)
    msg = w.ask(parent, "PTR")
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert texts(w.ask("1.9.9.10.in-addr.arpa.", "PTR")) == ["w9.web.svc.internal."]
    asyncio.run(w.registry.delete_instance("web", "w9"))
    assert w.ask(parent, "PTR").rcode() == dns.rcode.NXDOMAIN
    assert w.ask("1.9.9.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN


def test_negative_replies_carry_the_current_serial() -> None:
    w = two_services()
    before = w.ask("missing.svc.internal.")
    w.ask("api.svc.internal.", "AAAA")  # NODATA
    w.add("web", "w1", address="10.0.0.9", port=80)
    after = w.ask("missing.svc.internal.")
    assert after.authority[0][0].serial == w.index.serial != before.authority[0][0].serial
    assert w.ask("api.svc.internal.", "AAAA").authority[0][0].serial == w.index.serial
    assert w.ask("svc.internal.", "SOA").answer[0][0].serial == w.index.serial
    assert not w.index.cache.negative - set(w.index.cache.table)


def test_a_cname_into_a_service_follows_its_changes(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text("records:\n  - {name: www, type: CNAME, value: web}\n")
    w = World(tmp_path)
    w.add("web", "w1", address="10.0.0.1", port=80)
    assert texts(w.ask("www.svc.internal.")) == ["10.0.0.1", "web.svc.internal."]
    w.add("web", "w1", address="10.0.0.7", port=80)
    assert texts(w.ask("www.svc.internal.")) == ["10.0.0.7", "web.svc.internal."]
    asyncio.run(w.registry.delete_service("web"))
    assert w.ask("www.svc.internal.").rcode() == dns.rcode.NXDOMAIN


def test_a_named_query_follows_the_service_it_selects() -> None:
    w = two_services()
    asyncio.run(w.registry.put_query(QueryDef.from_json("q", {"service": "web"})))
    assert len(texts(w.ask("q.query.svc.internal."))) == 3
    w.add("web", "w1", address="10.0.0.9", port=80)
    assert "10.0.0.9" in texts(w.ask("q.query.svc.internal."))


def test_cached_answers_match_a_fresh_responder_through_random_writes() -> None:
    """Random writes (instances added, moved, retagged, removed; service settings changed;
    services deleted) between random queries: every reply of the cached world has the records
    of a world that answers each query afresh, fed the same writes."""
    rng = random.Random(25)
    cached, fresh = World(reverse_zones=REVERSE), World(reverse_zones=REVERSE)
    both = (cached, fresh)
    services = ["s0", "s1", "s2", "s3"]
    for w in both:
        asyncio.run(w.registry.put_query(QueryDef.from_json("q", {"service": "s1"})))

    existing: dict[str, set[str]] = {}  # what the registries hold

    def write() -> None:
        svc = rng.choice(services)
        iid = f"i{rng.randrange(4)}"
        pick = rng.random()
        if pick < 0.55:
            v6 = rng.random() < 0.2
            address = (
                f"2001:db8::{rng.randrange(1, 6)}"
                if v6
                else f"10.0.{rng.randrange(3)}.{rng.randrange(1, 6)}"
            )
            tags = rng.sample(["blue", "green"], rng.randrange(3))
            for w in both:
                w.add(svc, iid, address=address, port=80, tags=tags)
            existing.setdefault(svc, set()).add(iid)
        elif pick < 0.75:
            if iid in existing.get(svc, set()):
                for w in both:
                    asyncio.run(w.registry.delete_instance(svc, iid))
                existing[svc].discard(iid)
        elif pick < 0.9:
            dnssd, ttl = rng.random() < 0.5, rng.choice([5, 30])
            for w in both:
                w.settings(svc, dnssd=dnssd, ttl=ttl)
            existing.setdefault(svc, set())
        elif svc in existing:
            for w in both:
                asyncio.run(w.registry.delete_service(svc))
            del existing[svc]

    names = (
        [(f"{s}.svc.internal.", "A") for s in services]
        + [(f"{s}.svc.internal.", "AAAA") for s in services]
        + [(f"_{s}._tcp.svc.internal.", "SRV") for s in services]
        + [(f"i{i}.{s}.svc.internal.", "A") for s in services for i in range(4)]
        + [(f"blue.{s}.svc.internal.", "A") for s in services]
        + [(f"{s}.svc.internal.", "TXT") for s in services]
        + [
            ("_services._dns-sd._udp.svc.internal.", "PTR"),
            ("_tcp.svc.internal.", "A"),
            ("q.query.svc.internal.", "A"),
            ("0.10.in-addr.arpa.", "PTR"),
            ("svc.internal.", "SOA"),
            ("missing.svc.internal.", "A"),
        ]
        + [(f"{n}.0.0.10.in-addr.arpa.", "PTR") for n in range(1, 6)]
        + [(f"_{s}._tcp.svc.internal.", "PTR") for s in services]
    )

    def shown(w: World, name: str, rdtype: str) -> tuple[object, ...]:
        msg = w.ask(name, rdtype)
        return (msg.rcode(), texts(msg), texts(msg, "authority"), texts(msg, "additional"))

    compared = 0
    for _ in range(400):
        write()
        for name, rdtype in rng.sample(names, 12):
            fresh.index.cache.forget()
            want = shown(fresh, name, rdtype)
            assert shown(cached, name, rdtype) == want, (name, rdtype)
            compared += 1
    assert compared == 4800
    cache = cached.index.cache
    assert len(cache) > 0
    listed = {k for keys in cache.names.values() for k in keys}
    assert listed == set(cache.table)  # every key listed under its names, no key dropped
    assert cache.size == sum(e.size for e in cache.table.values())


def test_forget_name_and_negative_keep_the_tables_consistent() -> None:
    w = two_services()
    for n in range(20):
        w.ask(f"x{n}.svc.internal.")
        w.ask("web.svc.internal.")
        w.ask("api.svc.internal.")
    cache = w.index.cache
    assert len(cache.negative) == 20
    cache.forget_name(wire.text_to_wire("web.svc.internal."))
    assert key("web.svc.internal.") not in cache.table and key("api.svc.internal.") in cache.table
    cache.forget_negative()
    assert not cache.negative and len(cache) == 1
    assert set(cache.names) == {wire.text_to_wire("api.svc.internal.")}
    assert cache.size == sum(e.size for e in cache.table.values())
    assert len(cache.udp) == sum(len(e.raws) for e in cache.table.values())


def test_a_cname_to_an_empty_non_terminal_follows_the_names_below_it(tmp_path: Path) -> None:
    """The alias's reply (the CNAME alone: its target exists, with nothing of its own) is made
    from its target's standing; a write that removes the last name below the target makes it
    NXDOMAIN (RFC 6604: the rcode is the last name's)."""
    (tmp_path / "z.yaml").write_text("records:\n  - {name: alias, type: CNAME, value: _tcp}\n")
    w = World(tmp_path)
    w.add("web", "w1", address="10.0.0.1", port=80)
    msg = w.ask("alias.svc.internal.")
    assert msg.rcode() == dns.rcode.NOERROR and texts(msg) == ["_tcp.svc.internal."]
    assert w.ask("alias.svc.internal.").rcode() == dns.rcode.NOERROR  # from the cache
    asyncio.run(w.registry.delete_service("web"))
    assert w.ask("alias.svc.internal.").rcode() == dns.rcode.NXDOMAIN
