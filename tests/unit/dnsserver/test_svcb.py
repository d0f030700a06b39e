"""HTTPS records (RFC 9460): their encoding, and the answers a service with ``https`` gives —
balanced, healthy and capped exactly like its A/AAAA records."""

from __future__ import annotations

import asyncio
import collections
import random
import time

import dns.rdata
import dns.rdatatype
import dns.rdtypes.svcbbase as svcbbase
from hypothesis import given
from hypothesis import strategies as st

from dnsdisc.dnsserver import svcb, wire
from dnsdisc.registry.model import HttpsSettings
from tests.support.world import World, texts

TARGET = wire.text_to_wire("web-1.web.svc.internal.")


def _parse(rdata: bytes) -> dns.rdata.Rdata:
    return dns.rdata.from_wire("IN", "HTTPS", rdata, 0, len(rdata))


@given(
    alpn=st.lists(st.sampled_from(["h2", "h3", "http/1.1", "h3-29", "x"]), unique=True),
    no_default=st.booleans(),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    ech=st.one_of(st.none(), st.binary(min_size=4, max_size=40)),
    priority=st.integers(0, 65535),
    inst_port=st.integers(1, 65535),
    v6=st.booleans(),
    host=st.integers(1, 254),
)
def test_the_encoding_is_dnspythons_for_the_whole_record(
    alpn: list[str],
    no_default: bool,
    port: int | None,
    ech: bytes | None,
    priority: int,
    inst_port: int,
    v6: bool,
    host: int,
) -> None:
    """Only the service's SvcParams go through dnspython (once per setting); the per-instance
    port and hint are packed by hand: the bytes are the ones dnspython makes of the whole
    record."""
    no_default = no_default and bool(alpn)
    ech_list = None if ech is None else len(ech).to_bytes(2) + ech
    https = HttpsSettings(tuple(alpn), no_default, port, ech_list)
    address = f"fd00::{host:x}" if v6 else f"10.0.0.{host}"
    ours = svcb.https_rdata(https, priority, TARGET, inst_port, address)
    key = svcbbase.ParamKey
    params: dict[svcbbase.ParamKey, svcbbase.Param | None] = {
        key.PORT: svcbbase.PortParam(port or inst_port),
        key.IPV6HINT if v6 else key.IPV4HINT: (
            svcbbase.IPv6HintParam((address,)) if v6 else svcbbase.IPv4HintParam((address,))
        ),
    }
    if alpn:
        params[key.ALPN] = svcbbase.ALPNParam(tuple(a.encode() for a in alpn))
    if no_default:
        params[key.NO_DEFAULT_ALPN] = None
    if ech_list is not None:
        params[key.ECH] = svcbbase.ECHParam(ech_list)
    whole = dns.rdata.from_text(
        "IN", "HTTPS", f"{min(priority + 1, 65535)} web-1.web.svc.internal."
    )
    theirs = whole.replace(params=params).to_wire()  # type: ignore[attr-defined]
    assert ours == theirs
    assert _parse(ours).to_wire() == ours


def test_svc_priority_keeps_the_tiers_order_and_never_is_alias_mode() -> None:
    assert [svcb.svc_priority(p) for p in (0, 1, 7, 65534, 65535)] == [1, 2, 8, 65535, 65535]


def _https(world: World, name: str = "web.svc.internal.", **kw: object) -> list[dns.rdata.Rdata]:
    msg = world.ask(name, "HTTPS", **kw)
    return [rr for rrset in msg.answer for rr in rrset]


def _world(**settings: object) -> World:
    w = World()
    w.add("web", "web-1", address="10.0.0.1", port=8080, tags=["blue"])
    w.add("web", "web-2", address="10.0.0.2", port=8080, weight=50, priority=1)
    w.add("web", "web-6", address="2001:db8::6", port=8081, protocol="udp", tags=["blue"])
    w.settings("web", https={"alpn": ["h2", "h3"]}, **settings)
    return w


def test_service_and_instance_names_answer_https_service_mode_records() -> None:
    world = _world()
    rrs = _https(world)
    by_target = {rr.target.to_text(): rr for rr in rrs}  # type: ignore[attr-defined]
    assert sorted(by_target) == [
        "web-1.web.svc.internal.",
        "web-2.web.svc.internal.",
        "web-6.web.svc.internal.",
    ]
    key = svcbbase.ParamKey
    one = by_target["web-1.web.svc.internal."]
    assert one.priority == 1  # type: ignore[attr-defined]
    assert one.params[key.ALPN].ids == (b"h2", b"h3")  # type: ignore[attr-defined]
    assert one.params[key.PORT].port == 8080  # type: ignore[attr-defined]
    assert one.params[key.IPV4HINT].addresses == ("10.0.0.1",)  # type: ignore[attr-defined]
    # Priority 1, the second tier, is SvcPriority 2; the IPv6 instance has an ipv6hint.
    assert by_target["web-2.web.svc.internal."].priority == 2  # type: ignore[attr-defined]
    six = by_target["web-6.web.svc.internal."]
    assert six.params[key.IPV6HINT].addresses == ("2001:db8::6",)  # type: ignore[attr-defined]
    assert key.IPV4HINT not in six.params  # type: ignore[attr-defined]
    # The instance's own name, and a tag's name, answer theirs.
    assert texts(world.ask("web-2.web.svc.internal.", "HTTPS")) == [
        '2 web-2.web.svc.internal. alpn="h2,h3" port="8080" ipv4hint="10.0.0.2"'
    ]
    assert [rr.target.to_text() for rr in _https(world, "blue.web.svc.internal.")] == [  # type: ignore[attr-defined]
        "web-1.web.svc.internal.",
        "web-6.web.svc.internal.",
    ]
    # The targets' addresses ride in the additional section (RFC 9460 4.2).
    glue = texts(world.ask("web.svc.internal.", "HTTPS"), "additional")
    assert glue == ["10.0.0.1", "10.0.0.2", "2001:db8::6"]


def test_the_setting_port_no_default_alpn_and_ech() -> None:
    ech = "AARhYmNk"  # an ECHConfigList: length 4, then 4 bytes
    world = _world()
    world.settings("web", https={"alpn": ["h3"], "no_default_alpn": True, "port": 443, "ech": ech})
    assert texts(world.ask("web-1.web.svc.internal.", "HTTPS")) == [
        f'1 web-1.web.svc.internal. alpn="h3" no-default-alpn port="443" ipv4hint="10.0.0.1" ech="{ech}"'
    ]
    world.settings("web", https=None)
    assert not world.ask("web.svc.internal.", "HTTPS").answer
    assert not world.ask("web-1.web.svc.internal.", "HTTPS").answer


def test_no_https_setting_no_https_records_and_nodata() -> None:
    world = World()
    world.add("web", "web-1", address="10.0.0.1", port=8080)
    msg = world.ask("web.svc.internal.", "HTTPS")
    assert msg.rcode() == 0 and not msg.answer and msg.authority  # NODATA with the SOA


def test_https_follows_health_like_a() -> None:
    world = _world()
    asyncio.run(world.registry.maintenance("web", "web-1", "upgrade"))
    assert texts(world.ask("web.svc.internal.")) == ["10.0.0.2"]
    assert sorted(rr.target.to_text() for rr in _https(world)) == [  # type: ignore[attr-defined]
        "web-2.web.svc.internal.",
        "web-6.web.svc.internal.",
    ]
    asyncio.run(world.registry.maintenance("web", "web-1", None))
    assert len(_https(world)) == 3


def test_https_is_drawn_by_the_policy_and_max_answers_like_a() -> None:
    world = _world(max_answers=1)
    seen_a: collections.Counter[str] = collections.Counter()
    seen_https: collections.Counter[str] = collections.Counter()
    for _ in range(2000):
        a = world.ask("web.svc.internal.")
        assert len(a.answer[0]) == 1
        seen_a[a.answer[0][0].to_text()] += 1
        rrs = _https(world)
        assert len(rrs) == 1
        seen_https[rrs[0].target.to_text()] += 1  # type: ignore[attr-defined]
    # Weighted: web-1 (100) and web-6 (100) twice as often as web-2 (50), over both families.
    assert 0.13 < seen_https["web-2.web.svc.internal."] / 2000 < 0.27  # 50/250 = 0.2
    assert abs(seen_https["web-1.web.svc.internal."] - seen_https["web-6.web.svc.internal."]) < 200
    assert seen_a["10.0.0.1"] > seen_a["10.0.0.2"]
    # The priority policy hands out the first tier only, SvcPriority 1.
    world.settings("web", https={"alpn": ["h2"]}, policy="priority")
    targets = {rr.target.to_text() for _ in range(50) for rr in _https(world)}  # type: ignore[attr-defined]
    assert targets == {"web-1.web.svc.internal.", "web-6.web.svc.internal."}


def test_the_udp_cap_applies_to_https_as_to_a() -> None:
    world = World()
    world.responder.udp_cap = 2  # dns.udp_answer_limit
    for n in range(1, 6):
        world.add("web", f"w{n}", address=f"10.0.0.{n}", port=80)
    world.settings("web", https={"alpn": ["h2"]})
    assert len(_https(world)) == 2
    assert len(_https(world, tcp=True)) == 5


def test_drained_instances_only_when_nothing_else_is_left() -> None:
    world = _world()
    world.add("web", "web-2", address="10.0.0.2", port=8080, weight=0)
    assert "web-2.web.svc.internal." not in {rr.target.to_text() for rr in _https(world)}  # type: ignore[attr-defined]
    assert _https(world, "web-2.web.svc.internal.")  # its own name still answers


def test_any_stays_one_rrset_and_full_any_carries_https() -> None:
    world = _world()
    msg = world.ask("web-1.web.svc.internal.", "ANY")
    assert len(msg.answer) == 1
    full = World()
    full.responder.any_full = True  # dns.any: full
    full.add("web", "web-1", address="10.0.0.1", port=8080)
    full.settings("web", https={"alpn": ["h2"]})
    types = {rrset.rdtype for rrset in full.ask("web-1.web.svc.internal.", "ANY").answer}
    assert dns.rdatatype.HTTPS in types and dns.rdatatype.A in types


def test_encoding_is_cheap_enough_for_a_large_start() -> None:
    """~2 us per record, not dnspython's ~120 us: 100,000 instances in every DNS worker."""
    https = HttpsSettings(("h2", "h3"))
    rng = random.Random(3)
    addresses = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.1" for _ in range(2000)]
    started = time.perf_counter()
    for a in addresses:
        svcb.https_rdata(https, 0, TARGET, 443, a)
    assert (time.perf_counter() - started) / len(addresses) < 40e-6
