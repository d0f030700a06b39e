"""Unicast DNS-SD (RFC 6763): browsing from ``_services._dns-sd._udp.D`` down to each instance's
SRV and TXT, only for instances handed out, and a patched index equal to one built from scratch
with HTTPS and DNS-SD on."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from dnsdisc.dnsserver import wire
from dnsdisc.policies.roles import FALLBACK, IN
from dnsdisc.registry.model import ServiceSettings
from tests.support.members import Member, instance, make_index, names
from tests.support.world import World, texts

SERVICES = "_services._dns-sd._udp.svc.internal."


def _world() -> World:
    w = World(reverse_zones=("10.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."))
    w.add("web", "web-1", address="10.0.0.1", port=8080, meta={"path": "/", "v": "2"})
    w.add("web", "web-2", address="10.0.0.2", port=8081)
    w.add("web", "web-6", address="2001:db8::6", port=53, protocol="udp")
    w.settings("web", dnssd=True)
    w.add("db", "db-1", address="10.0.1.1", port=5432)  # not browsable: no dnssd
    return w


def _browse(world: World) -> dict[str, dict[str, list[str]]]:
    """What a DNS-SD client finds walking PTRs from the service type enumeration."""
    out: dict[str, dict[str, list[str]]] = {}
    for stype in texts(world.ask(SERVICES, "PTR")):
        for inst in texts(world.ask(stype, "PTR")):
            srv = texts(world.ask(inst, "SRV"))
            txt = texts(world.ask(inst, "TXT"))
            out.setdefault(stype, {})[inst] = srv + txt
    return out


def test_a_browse_walk_finds_every_instance_with_srv_and_txt() -> None:
    world = _world()
    assert _browse(world) == {
        "_web._tcp.svc.internal.": {
            "web-1._web._tcp.svc.internal.": [
                "0 100 8080 web-1.web.svc.internal.",
                '"path=/" "v=2"',
            ],
            # RFC 6763 6.1: no metadata is still a TXT record, of one empty string.
            "web-2._web._tcp.svc.internal.": ["0 100 8081 web-2.web.svc.internal.", '""'],
        },
        "_web._udp.svc.internal.": {
            "web-6._web._udp.svc.internal.": ["0 100 53 web-6.web.svc.internal.", '""'],
        },
    }
    # The SRV name keeps its SRV records beside the new PTR; the instance's SRV has its glue.
    assert len(texts(world.ask("_web._tcp.svc.internal.", "SRV"))) == 2
    assert texts(world.ask("web-1._web._tcp.svc.internal.", "SRV"), "additional") == ["10.0.0.1"]


def test_browse_domains_under_each_reverse_zone_point_at_the_domain() -> None:
    world = _world()
    for zone in ("10.in-addr.arpa.", "8.b.d.0.1.0.0.2.ip6.arpa."):
        for label in ("b", "lb"):
            msg = world.ask(f"{label}._dns-sd._udp.{zone}", "PTR")
            assert texts(msg) == ["svc.internal."], (label, zone)
            assert msg.answer[0].ttl == 300  # static_ttl: they change with the config only
    assert world.ask("db._dns-sd._udp.10.in-addr.arpa.", "PTR").rcode() == 3  # NXDOMAIN


def test_only_handed_out_instances_are_browsable() -> None:
    world = _world()
    asyncio.run(world.registry.maintenance("web", "web-1", "upgrade"))
    assert texts(world.ask("_web._tcp.svc.internal.", "PTR")) == ["web-2._web._tcp.svc.internal."]
    assert world.ask("web-1._web._tcp.svc.internal.", "SRV").rcode() == 3
    asyncio.run(world.registry.maintenance("web", "web-2", "upgrade"))
    # No tcp instance left: the type leaves the enumeration; _web._tcp itself is NODATA.
    assert texts(world.ask(SERVICES, "PTR")) == ["_web._udp.svc.internal."]
    msg = world.ask("_web._tcp.svc.internal.", "PTR")
    assert msg.rcode() == 0 and not msg.answer
    asyncio.run(world.registry.maintenance("web", "web-1", None))
    assert "_web._tcp.svc.internal." in texts(world.ask(SERVICES, "PTR"))
    # A drained instance is browsable only when nothing else is left, as SRV hands it out.
    world.add("web", "web-1", address="10.0.0.1", port=8080, weight=0)
    world.add("web", "web-3", address="10.0.0.3", port=8080)
    assert texts(world.ask("_web._tcp.svc.internal.", "PTR")) == ["web-3._web._tcp.svc.internal."]


def test_turning_dnssd_off_or_deleting_the_service_removes_every_name() -> None:
    world = _world()
    world.settings("web", dnssd=False)
    for name in (SERVICES, "b._dns-sd._udp.10.in-addr.arpa."):
        assert world.ask(name, "PTR").rcode() == 3
    assert not world.ask("_web._tcp.svc.internal.", "PTR").answer
    assert world.ask("web-1._web._tcp.svc.internal.", "TXT").rcode() == 3
    world.settings("web", dnssd=True)
    assert len(texts(world.ask(SERVICES, "PTR"))) == 2
    asyncio.run(world.registry.delete_service("web"))
    assert world.ask(SERVICES, "PTR").rcode() == 3


def test_any_on_dnssd_names_is_one_rrset() -> None:
    world = _world()
    for name in (SERVICES, "web-1._web._tcp.svc.internal.", "_web._tcp.svc.internal."):
        msg = world.ask(name, "ANY")
        assert msg.rcode() == 0 and len(msg.answer) == 1, name
    world = _world()  # a fresh reply cache
    world.responder.any_full = True  # dns.any: full
    msg = world.ask("web-1._web._tcp.svc.internal.", "ANY")
    assert sorted(r.rdtype for r in msg.answer) == [16, 33]  # TXT, SRV
    msg = world.ask("_web._tcp.svc.internal.", "ANY")
    assert sorted(r.rdtype for r in msg.answer) == [12, 33]  # PTR beside SRV


def test_the_enumeration_takes_the_shortest_ttl_of_the_services() -> None:
    world = _world()
    world.add("api", "api-1", address="10.0.2.1", port=80)
    world.settings("api", dnssd=True, ttl=2)
    msg = world.ask(SERVICES, "PTR")
    assert texts(msg) == [
        "_api._tcp.svc.internal.",
        "_web._tcp.svc.internal.",
        "_web._udp.svc.internal.",
    ]
    assert msg.answer[0].ttl == 2


def test_random_changes_with_https_and_dnssd_give_the_table_of_a_build_from_scratch() -> None:
    rng = random.Random(2323)
    on = {"https": {"alpn": ["h2", "h3"]}, "dnssd": True}
    settings = ServiceSettings.from_json("big", on)
    members: dict[str, Member] = {}
    index = make_index()
    index.rebuild("big", settings, [])

    def scratch() -> Any:
        fresh = make_index()
        fresh.rebuild("big", settings, list(members.values()))
        return names(fresh)

    for step in range(300):
        op = rng.random()
        if op < 0.5 or not members:
            iid = f"i{rng.randrange(40)}"
            extra: dict[str, Any] = {"meta": {"k": str(step)}} if rng.random() < 0.3 else {}
            member = Member(
                instance(iid, rng, tags=2, **extra),
                weight=rng.choice([0, 1, 2, 5]),
                priority=rng.choice([0, 0, 1]),
                role=rng.choice([IN, IN, IN, FALLBACK, -1]),
            )
            members[iid] = member
            if rng.random() < 0.5:
                index.patch("big", [member], [])
            else:
                index.rebuild("big", settings, list(members.values()))
        elif op < 0.85:
            iid = rng.choice(list(members))
            del members[iid]
            index.patch("big", [], [iid])
        else:
            body = dict(on, ttl=rng.choice([5, 30]), dnssd=rng.random() < 0.8)
            settings = ServiceSettings.from_json("big", body)
            index.rebuild("big", settings, list(members.values()))
        if step % 10 == 0 or step > 290:
            assert names(index) == scratch(), f"step {step}"
    index.rebuild("big", None, [])
    assert names(index) == names(make_index())
    assert wire.text_to_wire(SERVICES) not in index.nodes
