"""Answers by the client: zones from ``locality.networks``, the ``locality`` modes, the
``consistent`` policy, the ECS echo and its scope, and the reply cache keyed by the decision."""

from __future__ import annotations

import random
from collections import Counter

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from dnsdisc.dnsserver.cookies import Cookies
from dnsdisc.dnsserver.locality import ZoneMap
from tests.support.world import World, packed, texts

NETWORKS = (
    ("eu-1a", "10.1.0.0/16"),
    ("eu-1a", "2001:db8:1::/48"),
    ("eu-1b", "10.2.0.0/16"),
    ("eu-1c", "10.2.7.0/24"),  # inside eu-1b's network: the most specific wins
)
A_CLIENT, B_CLIENT, C_CLIENT, NOWHERE = "10.1.3.4", "10.2.9.9", "10.2.7.1", "192.0.2.1"


def located(mode: str, **settings: object) -> World:
    w = World(locality_networks=NETWORKS)
    w.settings("web", locality=mode, **settings)
    for i, zone in enumerate(["eu-1a", "eu-1a", "eu-1b", "eu-1b"], 1):
        w.add("web", f"w{i}", address=f"10.0.0.{i}", port=80, zone=zone)
    return w


def addresses(msg: dns.message.Message) -> set[str]:
    return {rr.address for rrset in msg.answer for rr in rrset if hasattr(rr, "address")}


def ecs(address: str, prefix: int) -> dns.edns.ECSOption:
    return dns.edns.ECSOption(address, prefix)


def echoed(msg: dns.message.Message) -> dns.edns.ECSOption:
    found = [o for o in msg.options if isinstance(o, dns.edns.ECSOption)]
    assert len(found) == 1, msg.options
    return found[0]


# -- where the client is -----------------------------------------------------------------------


def test_the_most_specific_network_wins_and_the_scope_tells_the_inner_ones_apart() -> None:
    zones = ZoneMap(NETWORKS)
    assert zones.locate(packed(A_CLIENT)) == ("eu-1a", 16)
    assert zones.locate(packed(C_CLIENT)) == ("eu-1c", 24)
    # 10.2.9.9 is eu-1b, but its /16 holds eu-1c's /24: the answer holds for the /21 around
    # 10.2.9.9 (10.2.8.0/21), the widest block that leaves 10.2.7.0/24 out.
    zone, scope = zones.locate(packed(B_CLIENT))
    assert zone == "eu-1b" and scope == 21
    # 10.2.200.1 differs from 10.2.7.0 in the first bit of its third octet: a /17 will do.
    assert zones.locate(packed("10.2.200.1")) == ("eu-1b", 17)
    assert zones.locate(packed("2001:db8:1::5")) == ("eu-1a", 48)
    zone, scope = zones.locate(packed(NOWHERE))
    assert zone is None
    assert zones.locate(packed("10.3.0.1"))[0] is None
    # 10.2.0.0/16 is its neighbour: only the /16 around 10.3.0.1 leaves it out.
    assert zones.locate(packed("10.3.0.1"))[1] == 16
    assert zones.locate(packed("10.128.0.1"))[1] == 9


def test_overlapping_networks_of_one_zone_do_not_narrow_the_scope() -> None:
    zones = ZoneMap((("a", "10.0.0.0/8"), ("a", "10.1.0.0/16")))
    assert zones.locate(packed("10.9.0.1")) == ("a", 8)


# -- the modes ------------------------------------------------------------------------------------


def test_off_answers_every_client_alike_and_echoes_scope_zero() -> None:
    w = located("off")
    msg = w.ask("web.svc.internal.", source=A_CLIENT, use_edns=0, options=[ecs(A_CLIENT, 24)])
    assert len(addresses(msg)) == 4
    option = echoed(msg)
    assert option.scopelen == 0 and option.srclen == 24 and option.address == "10.1.3.0"


def test_prefer_gives_a_located_client_its_zone_and_unknown_clients_everything() -> None:
    w = located("prefer")
    for _ in range(20):
        assert addresses(w.ask("web.svc.internal.", source=A_CLIENT)) == {"10.0.0.1", "10.0.0.2"}
        assert addresses(w.ask("web.svc.internal.", source=B_CLIENT)) == {"10.0.0.3", "10.0.0.4"}
    assert len(addresses(w.ask("web.svc.internal.", source=NOWHERE))) == 4
    # SRV: the zone's records only, their priority and weight as registered.
    srv = w.ask("_web._tcp.svc.internal.", "SRV", source=A_CLIENT)
    assert sorted(rr.target.to_text().split(".")[0] for rr in srv.answer[0]) == ["w1", "w2"]


def test_prefer_falls_back_when_the_zone_has_fewer_than_locality_min_healthy() -> None:
    w = located("prefer", locality_min_healthy=3)
    assert len(addresses(w.ask("web.svc.internal.", source=A_CLIENT))) == 4
    w.settings("web", locality="prefer", locality_min_healthy=2)
    assert addresses(w.ask("web.svc.internal.", source=A_CLIENT)) == {"10.0.0.1", "10.0.0.2"}
    # A drained instance is not handed out: eu-1a keeps one, below 2.
    w.add("web", "w1", address="10.0.0.1", port=80, zone="eu-1a", weight=0)
    assert len(addresses(w.ask("web.svc.internal.", source=A_CLIENT))) == 3


def test_pin_gives_nodata_to_a_zone_with_nothing() -> None:
    w = located("pin")
    assert addresses(w.ask("web.svc.internal.", source=A_CLIENT)) == {"10.0.0.1", "10.0.0.2"}
    msg = w.ask("web.svc.internal.", source=C_CLIENT)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer
    assert msg.authority and msg.authority[0].rdtype == dns.rdatatype.SOA
    # Unknown clients: the normal answer.
    assert len(addresses(w.ask("web.svc.internal.", source=NOWHERE))) == 4


def test_max_answers_applies_within_the_chosen_zone() -> None:
    w = located("prefer", max_answers=1)
    seen = Counter()
    for _ in range(200):
        (only,) = addresses(w.ask("web.svc.internal.", source=B_CLIENT))
        seen[only] += 1
    assert set(seen) == {"10.0.0.3", "10.0.0.4"}


def test_the_scope_echoed_is_the_deciding_network_or_the_source_prefix_for_unknown() -> None:
    w = located("prefer")
    msg = w.ask("web.svc.internal.", use_edns=0, options=[ecs("10.1.3.0", 24)])
    assert addresses(msg) == {"10.0.0.1", "10.0.0.2"}  # the ECS address, not the packet's
    assert echoed(msg).scopelen == 16
    assert (
        echoed(w.ask("web.svc.internal.", use_edns=0, options=[ecs(B_CLIENT, 24)])).scopelen == 21
    )
    unknown = w.ask("web.svc.internal.", use_edns=0, options=[ecs("192.0.2.0", 24)])
    assert len(addresses(unknown)) == 4 and echoed(unknown).scopelen == 24
    # A name that does not depend on the client: scope 0.
    other = w.ask("ns.svc.internal.", use_edns=0, options=[ecs("10.1.3.0", 24)])
    assert echoed(other).scopelen == 0
    # SOURCE PREFIX-LENGTH 0: the resolver says nothing of the client; the answer is for all.
    anyone = w.ask("web.svc.internal.", use_edns=0, options=[ecs("0.0.0.0", 0)])
    assert len(addresses(anyone)) == 4 and echoed(anyone).scopelen == 0


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (b"\x00\x03\x18\x00\x0a\x01\x03", "family 3"),
        (b"\x00\x01\x21\x00\x0a\x01\x03\x04\x05", "source prefix /33"),
        (b"\x00\x01\x18\x00\x0a\x01", "address shorter than /24 needs"),
        (b"\x00\x01\x10\x00\x0a\x01\x03", "address longer than /16 needs"),
        (b"\x00\x01\x17\x00\x0a\x01\x03", "a bit set past /23"),
        (b"\x00\x01", "shorter than the fixed part"),
    ],
)
def test_a_malformed_client_subnet_gets_formerr(option: bytes, why: str) -> None:
    w = located("prefer")
    query = dns.message.make_query(
        "web.svc.internal.", "A", use_edns=0, options=[dns.edns.GenericOption(8, option)]
    )
    reply = w.raw(query.to_wire(), source=A_CLIENT)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR, why


def test_spill_sends_the_excess_of_a_busy_zone_to_the_one_with_surplus() -> None:
    # Equal capacity (2 x 100 each), demand 80/20: eu-1a keeps 0.5/0.8 = 62.5% at home.
    w = located("spill", max_answers=1)
    rng = random.Random(11)
    w.responder.rng = random.Random(5)
    home = Counter()
    for _ in range(4000):
        client = A_CLIENT if rng.random() < 0.8 else B_CLIENT
        (got,) = addresses(w.ask("web.svc.internal.", source=client))
        if client == A_CLIENT:
            home[got in ("10.0.0.1", "10.0.0.2")] += 1
        else:
            assert got in ("10.0.0.3", "10.0.0.4")  # eu-1b has surplus: always at home
    share = home[True] / (home[True] + home[False])
    assert share == pytest.approx(0.625, abs=0.04)  # prefer would be 1.0, off 0.5


def test_consistent_keeps_a_subnet_on_its_instance_and_the_reply_cache_by_decision() -> None:
    w = World()
    w.settings("web", policy="consistent", max_answers=1)
    for i in range(1, 11):
        w.add("web", f"w{i}", address=f"10.0.0.{i}", port=80)
    first = {}
    for n in range(200):
        client = f"10.9.{n}.7"
        first[client] = addresses(w.ask("web.svc.internal.", source=client))
        # Another host of the same /24, and the same host again: the same instance.
        assert addresses(w.ask("web.svc.internal.", source=f"10.9.{n}.200")) == first[client]
        assert addresses(w.ask("web.svc.internal.", source=client)) == first[client]
    assert len({a for s in first.values() for a in s}) == 10  # spread over all of them
    # ECS: the scope is the sticky prefix.
    msg = w.ask("web.svc.internal.", use_edns=0, options=[ecs("10.9.3.0", 24)])
    assert addresses(msg) == first["10.9.3.7"] and echoed(msg).scopelen == 24


def test_cookies_and_client_subnet_ride_in_one_opt_record() -> None:
    w = located("prefer")
    query = dns.message.make_query(
        "web.svc.internal.",
        "A",
        use_edns=0,
        options=[ecs("10.1.3.0", 24), dns.edns.GenericOption(10, bytes(range(8)))],
    )
    reply = w.raw(query.to_wire(), source="127.0.0.1")
    assert reply is not None
    cookies = Cookies(b"k" * 16)
    with_cookie, _ = cookies.answer(query.to_wire(), reply, packed("127.0.0.1"), False, 11)
    msg = dns.message.from_wire(with_cookie)
    assert echoed(msg).scopelen == 16
    assert [o.otype for o in msg.options] == [dns.edns.ECS, dns.edns.COOKIE]
    assert addresses(msg) == {"10.0.0.1", "10.0.0.2"}


def test_texts_of_a_located_answer_are_cached_per_zone() -> None:
    w = located("prefer")
    cache = w.responder.index.cache
    for _ in range(5):
        assert addresses(w.ask("web.svc.internal.", source=A_CLIENT)) == {"10.0.0.1", "10.0.0.2"}
        assert addresses(w.ask("web.svc.internal.", source=B_CLIENT)) == {"10.0.0.3", "10.0.0.4"}
    assert len(cache) == 1  # one key; its replies by order (the zones' orders)
    assert texts(w.ask("web.svc.internal.", source=NOWHERE))


def test_an_ipv6_client_subnet_is_located_and_echoed_with_its_network() -> None:
    w = located("prefer")
    w.add("web", "v6a", address="2001:db8:9::1", port=80, zone="eu-1a")
    msg = w.ask("web.svc.internal.", "AAAA", use_edns=0, options=[ecs("2001:db8:1:5::", 56)])
    assert [rr.address for rr in msg.answer[0]] == ["2001:db8:9::1"]
    assert echoed(msg).scopelen == 48 and echoed(msg).srclen == 56
    # The same client, for A: its zone's IPv4 instances.
    msg = w.ask("web.svc.internal.", use_edns=0, options=[ecs("2001:db8:1:5::", 56)])
    assert addresses(msg) == {"10.0.0.1", "10.0.0.2"}


def test_pin_with_fail_open_hands_out_the_zones_unhealthy_behind_its_healthy() -> None:
    # panic_threshold is judged on the whole service: 3 of 4 critical is below 0.5, so every
    # instance is handed out, the critical ones behind; a pinned client sees its zone's.
    w = located("pin", panic_threshold=0.5)
    for iid in ("w1", "w3", "w4"):
        assert w.registry.set_status("web", iid, "critical", "down")
    msg = w.ask("web.svc.internal.", source=A_CLIENT)
    assert [rr.address for rr in msg.answer[0]] == ["10.0.0.2", "10.0.0.1"]
    assert addresses(w.ask("web.svc.internal.", source=B_CLIENT)) == {"10.0.0.3", "10.0.0.4"}
    # Above the threshold (3 of 4 healthy): no fail-open; eu-1b hands out w3 alone, and
    # NODATA once w3 is critical too (2 of 4 is not below 0.5).
    assert w.registry.set_status("web", "w1", "passing", "up")
    assert w.registry.set_status("web", "w3", "passing", "up")
    assert addresses(w.ask("web.svc.internal.", source=B_CLIENT)) == {"10.0.0.3"}
    assert w.registry.set_status("web", "w3", "critical", "down")
    msg = w.ask("web.svc.internal.", source=B_CLIENT)
    assert not msg.answer and msg.authority
