"""The responder fed with bytes, no sockets: answer semantics of the DNS face."""

from __future__ import annotations

import asyncio
import itertools
import random
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.answer import Responder
from dnsdisc.dnsserver.index import POOL, REUSE
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.server.parts import attach, build_index
from stats import assert_shares, chi_square

ROOT = Path(__file__).resolve().parent.parent


class World:
    def __init__(self, zone_dir: Path | None = None, **config: object) -> None:
        self.config = Config(**config)  # type: ignore[arg-type]
        zone_data = (
            zones.load_dir(zone_dir, self.config.domain, self.config.defaults)
            if zone_dir
            else zones.ZoneData()
        )
        self.index = build_index(self.config, zone_data)
        self.registry = Registry(defaults=self.config.defaults, reserved={"ns"})
        self.health = HealthMonitor(self.registry, self.config.health)
        attach(self.registry, self, self.health)
        for svc_settings, instances in zone_data.services:
            self.registry.add_static(svc_settings, instances)
        self.responder = Responder(self.index, random.Random(7))

    def add(self, service: str, iid: str, **body: object) -> None:
        asyncio.run(self.registry.put_instance(Instance.from_json(service, iid, body)))

    def settings(self, service: str, **body: object) -> None:
        asyncio.run(self.registry.put_service(ServiceSettings.from_json(service, body)))

    def ask(
        self, name: str, rdtype: str | int = "A", *, tcp: bool = False, **kw: object
    ) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
        reply = self.responder.respond(query.to_wire(), tcp)
        assert reply is not None
        msg = dns.message.from_wire(reply)
        assert msg.id == query.id
        return msg

    def raw(self, data: bytes, tcp: bool = False) -> bytes | None:
        return self.responder.respond(data, tcp)


def texts(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rr.to_text() for rrset in getattr(msg, section) for rr in rrset)


@pytest.fixture
def world() -> World:
    w = World()
    w.add(
        "web",
        "web-1",
        address="10.0.0.1",
        port=8080,
        tags=["blue"],
        meta={"version": "1.2", "team": "a b"},
    )
    w.add("web", "web-2", address="10.0.0.2", port=8080, weight=50, tags=["green"])
    w.add("web", "web-6", address="2001:db8::6", port=8081, protocol="udp", tags=["blue"])
    return w


def test_service_a_and_aaaa(world: World) -> None:
    msg = world.ask("web.svc.internal.")
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.QR
    assert not msg.flags & dns.flags.RA
    assert texts(msg) == ["10.0.0.1", "10.0.0.2"]
    assert msg.answer[0].ttl == 5
    assert texts(world.ask("web.svc.internal.", "AAAA")) == ["2001:db8::6"]


def test_srv_on_service_name_and_rfc2782_names_with_glue(world: World) -> None:
    msg = world.ask("web.svc.internal.", "SRV")
    assert texts(msg) == [
        "0 100 8080 web-1.web.svc.internal.",
        "0 100 8081 web-6.web.svc.internal.",
        "0 50 8080 web-2.web.svc.internal.",
    ]
    glue = {rrset.name.to_text(): [rr.to_text() for rr in rrset] for rrset in msg.additional}
    assert glue == {
        "web-1.web.svc.internal.": ["10.0.0.1"],
        "web-2.web.svc.internal.": ["10.0.0.2"],
        "web-6.web.svc.internal.": ["2001:db8::6"],
    }
    assert texts(world.ask("_web._tcp.svc.internal.", "SRV")) == [
        "0 100 8080 web-1.web.svc.internal.",
        "0 50 8080 web-2.web.svc.internal.",
    ]
    assert texts(world.ask("_web._udp.svc.internal.", "SRV")) == [
        "0 100 8081 web-6.web.svc.internal."
    ]
    # Any other label in the proto position filters by tag.
    assert texts(world.ask("_web._blue.svc.internal.", "SRV")) == [
        "0 100 8080 web-1.web.svc.internal.",
        "0 100 8081 web-6.web.svc.internal.",
    ]


def test_every_srv_target_resolves(world: World) -> None:
    for rrset in world.ask("web.svc.internal.", "SRV").answer:
        for rr in rrset:
            kind = "AAAA" if rr.port == 8081 else "A"
            assert world.ask(rr.target.to_text(), kind).answer


def test_tag_names(world: World) -> None:
    assert texts(world.ask("blue.web.svc.internal.")) == ["10.0.0.1"]
    assert texts(world.ask("blue.web.svc.internal.", "AAAA")) == ["2001:db8::6"]
    assert texts(world.ask("green.web.svc.internal.", "SRV")) == [
        "0 50 8080 web-2.web.svc.internal."
    ]


def test_instance_wins_over_tag_with_the_same_label(world: World) -> None:
    world.add("web", "web-3", address="10.0.0.3", port=80, tags=["web-1"])
    assert texts(world.ask("web-1.web.svc.internal.")) == ["10.0.0.1"]


def test_txt_metadata_one_string_per_pair(world: World) -> None:
    msg = world.ask("web-1.web.svc.internal.", "TXT")
    rr = msg.answer[0][0]
    assert rr.strings == (b"team=a b", b"version=1.2")
    world.settings("web", meta={"owner": "platform"})
    assert texts(world.ask("web.svc.internal.", "TXT")) == ['"owner=platform"']


def test_ptr_for_registered_addresses(world: World) -> None:
    assert texts(world.ask("1.0.0.10.in-addr.arpa.", "PTR")) == ["web-1.web.svc.internal."]
    rev6 = dns.reversename.from_address("2001:db8::6").to_text()
    assert texts(world.ask(rev6, "PTR")) == ["web-6.web.svc.internal."]
    # Unknown reverse names are outside our zones unless reverse_zones says otherwise.
    assert world.ask("9.0.0.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED


def test_ptr_shared_by_two_services_follows_each_of_them() -> None:
    w = World(reverse_zones=("10.in-addr.arpa.",))
    w.settings("api", ttl=30)
    w.settings("db", ttl=10)
    w.add("api", "a-1", address="10.9.9.9", port=80)
    w.add("db", "d-1", address="10.9.9.9", port=5432)
    msg = w.ask("9.9.9.10.in-addr.arpa.", "PTR")
    assert texts(msg) == ["a-1.api.svc.internal.", "d-1.db.svc.internal."]
    assert msg.answer[0].ttl == 10  # one RRset, one TTL: the shorter
    w.add("db", "d-1", address="10.9.9.8", port=5432)  # moves: the old name keeps api only
    msg = w.ask("9.9.9.10.in-addr.arpa.", "PTR")
    assert texts(msg) == ["a-1.api.svc.internal."] and msg.answer[0].ttl == 30
    assert texts(w.ask("8.9.9.10.in-addr.arpa.", "PTR")) == ["d-1.db.svc.internal."]
    asyncio.run(w.registry.delete_instance("api", "a-1"))
    assert w.ask("9.9.9.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.NXDOMAIN
    assert texts(w.ask("8.9.9.10.in-addr.arpa.", "PTR")) == ["d-1.db.svc.internal."]


def test_reverse_zone_gives_nxdomain_for_unknown_addresses() -> None:
    w = World(reverse_zones=("10.in-addr.arpa.",))
    w.add("db", "db-1", address="10.1.2.3", port=5432)
    assert texts(w.ask("3.2.1.10.in-addr.arpa.", "PTR")) == ["db-1.db.svc.internal."]
    msg = w.ask("4.2.1.10.in-addr.arpa.", "PTR")
    assert msg.rcode() == dns.rcode.NXDOMAIN
    assert msg.authority[0].name.to_text() == "10.in-addr.arpa."


def test_soa_and_ns_at_apex_and_ns_target_resolves(world: World) -> None:
    soa = world.ask("svc.internal.", "SOA")
    assert soa.answer[0][0].mname.to_text() == "ns.svc.internal."
    ns = world.ask("svc.internal.", "NS")
    assert texts(ns) == ["ns.svc.internal."]
    assert texts(ns, "additional") == ["127.0.0.1"]
    assert texts(world.ask("ns.svc.internal.")) == ["127.0.0.1"]


def test_nxdomain_and_nodata_carry_the_soa(world: World) -> None:
    nx = world.ask("missing.svc.internal.")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert not nx.answer
    assert nx.authority[0].rdtype == dns.rdatatype.SOA
    assert nx.authority[0].name.to_text() == "svc.internal."
    assert nx.authority[0].ttl == 5  # the negative TTL (RFC 2308)
    nodata = world.ask("web.svc.internal.", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    unknown_type = world.ask("web.svc.internal.", 666)
    assert unknown_type.rcode() == dns.rcode.NOERROR and not unknown_type.answer


def test_known_service_without_instances_is_nodata(world: World) -> None:
    world.settings("empty", policy="random")
    for rdtype in ("A", "AAAA", "SRV"):
        msg = world.ask("empty.svc.internal.", rdtype)
        assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority
    assert world.ask("_empty._tcp.svc.internal.", "SRV").rcode() == dns.rcode.NOERROR


def test_empty_non_terminals_are_nodata(world: World) -> None:
    for name in ("_tcp.svc.internal.", "_udp.svc.internal.", "_blue.svc.internal."):
        msg = world.ask(name, "A")
        assert msg.rcode() == dns.rcode.NOERROR, name
        assert msg.authority[0].rdtype == dns.rdatatype.SOA


def test_deleting_the_last_name_removes_empty_non_terminals() -> None:
    w = World()
    w.add("api", "a-1", address="10.0.0.9", port=80)
    assert w.ask("_tcp.svc.internal.").rcode() == dns.rcode.NOERROR
    asyncio.run(w.registry.delete_service("api"))
    assert w.ask("_tcp.svc.internal.").rcode() == dns.rcode.NXDOMAIN
    assert w.ask("api.svc.internal.").rcode() == dns.rcode.NXDOMAIN
    assert w.ask("9.0.0.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED


def test_outside_our_zones_is_refused_without_aa(world: World) -> None:
    msg = world.ask("example.com.")
    assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.AA
    assert msg.question[0].name.to_text() == "example.com."


def test_question_case_is_echoed_and_names_are_case_insensitive(world: World) -> None:
    query = dns.message.make_query("wEb.SvC.InTeRnAl.", "A")
    raw = world.raw(query.to_wire())
    assert raw is not None
    assert b"\x03wEb\x03SvC\x08InTeRnAl\x00" in raw
    msg = dns.message.from_wire(raw)
    assert texts(msg) == ["10.0.0.1", "10.0.0.2"]
    assert msg.answer[0].name.to_text() == "wEb.SvC.InTeRnAl."


def test_opt_only_when_the_query_had_one(world: World) -> None:
    assert world.ask("web.svc.internal.", use_edns=False).edns == -1
    with_opt = world.ask("web.svc.internal.", use_edns=0)
    assert with_opt.edns == 0 and with_opt.payload == wire.EDNS_SIZE
    assert world.ask("web.svc.internal.", use_edns=0, want_dnssec=True).ednsflags & dns.flags.DO


def test_rd_is_copied_and_ra_stays_clear(world: World) -> None:
    msg = world.ask("web.svc.internal.")
    assert msg.flags & dns.flags.RD  # make_query sets RD
    query = dns.message.make_query("web.svc.internal.", "A")
    query.flags &= ~dns.flags.RD
    reply = world.raw(query.to_wire())
    assert reply is not None
    assert not dns.message.from_wire(reply).flags & (dns.flags.RD | dns.flags.RA)


def many(w: World, n: int) -> None:
    for i in range(n):
        w.add(
            "big", f"instance-number-{i}", address=f"10.1.{i // 250}.{i % 250 + 1}", port=9000 + i
        )


def test_udp_truncation_sets_tc_and_tcp_gets_everything() -> None:
    w = World()
    many(w, 60)
    msg = w.ask("big.svc.internal.", "SRV", use_edns=False)
    assert msg.flags & dns.flags.TC
    reply = w.raw(dns.message.make_query("big.svc.internal.", "SRV").to_wire())
    assert reply is not None and len(reply) <= 512
    full = w.ask("big.svc.internal.", "SRV", tcp=True)
    assert not full.flags & dns.flags.TC
    assert len(texts(full)) == 60
    # A records: 60 * 16 bytes do not fit 512 either; the EDNS size of the client is honoured.
    assert w.ask("big.svc.internal.", use_edns=False).flags & dns.flags.TC
    big = w.ask("big.svc.internal.", use_edns=0, payload=1232)
    assert not big.flags & dns.flags.TC and len(texts(big)) == 60


def test_glue_that_does_not_fit_is_left_out_without_tc() -> None:
    w = World()
    many(w, 8)
    msg = w.ask("_big._tcp.svc.internal.", "SRV", use_edns=False)
    assert not msg.flags & dns.flags.TC
    assert len(texts(msg)) == 8
    assert 0 < len(msg.additional) < 8


def test_round_robin_rotates_the_first_record(world: World) -> None:
    world.settings("web", policy="round_robin")
    firsts = [world.ask("web.svc.internal.").answer[0][0].to_text() for _ in range(10)]
    assert firsts.count("10.0.0.1") == 5 and firsts.count("10.0.0.2") == 5
    assert all(a != b for a, b in itertools.pairwise(firsts))


def test_drained_instances_only_when_nothing_else_is() -> None:
    w = World()
    w.add("api", "a-1", address="10.0.0.1", port=80, weight=0)
    w.add("api", "a-2", address="10.0.0.2", port=80)
    assert texts(w.ask("api.svc.internal.")) == ["10.0.0.2"]
    assert len(texts(w.ask("api.svc.internal.", "SRV"))) == 1
    # The drained instance keeps its own name.
    assert texts(w.ask("a-1.api.svc.internal.")) == ["10.0.0.1"]
    asyncio.run(w.registry.delete_instance("api", "a-2"))
    assert texts(w.ask("api.svc.internal.")) == ["10.0.0.1"]


def test_max_answers_and_ttl_per_service(world: World) -> None:
    world.settings("web", max_answers=1, ttl=0)
    msg = world.ask("web.svc.internal.")
    assert len(texts(msg)) == 1 and msg.answer[0].ttl == 0
    assert len(texts(world.ask("web.svc.internal.", "SRV"))) == 3  # SRV is not capped


def test_example_zones_answer() -> None:
    w = World(ROOT / "zones")
    w.add("web", "web-1", address="10.0.0.1", port=80)
    msg = w.ask("www.svc.internal.")
    assert texts(msg) == ["10.0.0.1", "web.svc.internal."]  # CNAME followed into our data
    assert texts(w.ask("svc.internal.", "MX")) == ["10 mail.svc.internal."]
    assert texts(w.ask("postgres.svc.internal.", "SRV")) == [
        "0 100 5432 pg-1.postgres.svc.internal.",
        "10 100 5432 pg-2.postgres.svc.internal.",
    ]
    assert texts(w.ask("primary.postgres.svc.internal.")) == ["192.0.2.10"]
    assert texts(w.ask("billing.partners.internal.")) == [
        "198.51.100.10",
        "198.51.100.11",
        "api.partners.internal.",
    ]
    assert w.ask("nope.partners.internal.").rcode() == dns.rcode.NXDOMAIN
    assert w.ask("partners.internal.", "SOA").answer
    assert texts(w.ask("partners.internal.", "NS")) == ["ns.svc.internal."]
    assert texts(w.ask("docs.svc.internal.", "TXT")) == [
        '"owner=platform-team" "see=https://example.invalid/docs"'
    ]
    assert texts(w.ask("_ldap._tcp.svc.internal.", "SRV")) == ["0 100 389 ldap.svc.internal."]


# -- malformed and unusual packets ---------------------------------------------------------


def header_only(reply: bytes | None) -> tuple[int, int]:
    assert reply is not None and len(reply) >= 12
    qid, flags = struct.unpack_from("!HH", reply)
    return qid, flags


def test_formerr_for_garbage_with_a_header(world: World) -> None:
    qid, flags = header_only(world.raw(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05ab"))
    assert qid == 0xABCD and flags & 0xF == dns.rcode.FORMERR and flags & wire.FLAG_QR


def test_too_short_is_dropped_and_responses_are_dropped(world: World) -> None:
    assert world.raw(b"\x01\x02") is None
    response = dns.message.make_response(dns.message.make_query("web.svc.internal.", "A"))
    assert world.raw(response.to_wire()) is None


def test_other_opcodes_get_notimp(world: World) -> None:
    query = dns.message.make_query("web.svc.internal.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    _, flags = header_only(world.raw(query.to_wire()))
    assert flags & 0xF == dns.rcode.NOTIMP
    assert (flags >> 11) & 0xF == dns.opcode.NOTIFY


def test_qdcount_not_one_is_formerr(world: World) -> None:
    data = bytearray(dns.message.make_query("web.svc.internal.", "A").to_wire())
    struct.pack_into("!H", data, 4, 2)
    assert header_only(world.raw(bytes(data)))[1] & 0xF == dns.rcode.FORMERR
    struct.pack_into("!H", data, 4, 0)
    assert header_only(world.raw(bytes(data[:12])))[1] & 0xF == dns.rcode.FORMERR


def test_edns_version_above_zero_is_badvers(world: World) -> None:
    msg = world.ask("web.svc.internal.", use_edns=1)
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0 and not msg.answer


def test_class_other_than_in_is_refused(world: World) -> None:
    msg = world.ask("web.svc.internal.", "A", rdclass="CH")
    assert msg.rcode() == dns.rcode.REFUSED


def _mutations() -> st.SearchStrategy[bytes]:
    base = dns.message.make_query("web.svc.internal.", "SRV", use_edns=0).to_wire()

    def mutate(args: tuple[int, int, int]) -> bytes:
        pos, value, cut = args
        data = bytearray(base)
        data[pos % len(data)] = value
        return bytes(data[: max(cut, 0) or None])

    return st.one_of(
        st.binary(max_size=600),
        st.tuples(st.integers(0, 1000), st.integers(0, 255), st.integers(-5, 80)).map(mutate),
    )


@settings(max_examples=400, deadline=None)
@given(data=_mutations())
def test_fuzz_nothing_raises_and_replies_parse(data: bytes) -> None:
    w = _FUZZ_WORLD()
    reply = w.raw(data)
    if reply is not None:
        dns.message.from_wire(reply, question_only=len(reply) == 12)
    assert w.responder.errors == 0


def _make_fuzz_world() -> Callable[[], World]:
    cache: list[World] = []

    def get() -> World:
        if not cache:
            w = World()
            w.add("web", "web-1", address="10.0.0.1", port=80)
            cache.append(w)
        return cache[0]

    return get


_FUZZ_WORLD = _make_fuzz_world()


# -- named wire behaviours (RFC 1035, 6891, 8482) -------------------------------------------


def test_z_bit_is_clear_in_replies(world: World) -> None:
    data = bytearray(dns.message.make_query("web.svc.internal.", "A").to_wire())
    data[3] |= 0x40  # Z bit set by the client
    reply = world.raw(bytes(data))
    assert reply is not None and reply[3] & 0x40 == 0


def test_unknown_edns_options_and_flags_are_not_echoed(world: World) -> None:
    import dns.edns

    option = dns.edns.GenericOption(65001, b"hello")
    query = dns.message.make_query(
        "web.svc.internal.", "A", use_edns=0, options=[option], ednsflags=0x4000 | dns.flags.DO
    )
    reply = world.raw(query.to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.edns == 0 and msg.options == ()
    assert msg.ednsflags == dns.flags.DO  # DO copied (RFC 3225), the unknown flag not
    assert not any(
        rrset.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC)
        for rrset in msg.answer + msg.authority
    )


def test_client_payload_size_bounds_the_reply() -> None:
    w = World()
    many(w, 60)
    for payload in (512, 800, 1232, 4096):
        reply = w.raw(
            dns.message.make_query(
                "big.svc.internal.", "SRV", use_edns=0, payload=payload
            ).to_wire()
        )
        assert reply is not None and len(reply) <= min(payload, wire.EDNS_SIZE)
        assert dns.message.from_wire(reply).flags & dns.flags.TC


def test_duplicate_opt_is_formerr(world: World) -> None:
    data = bytearray(dns.message.make_query("web.svc.internal.", "A", use_edns=0).to_wire())
    opt = bytes(data[-11:])
    data += opt
    struct.pack_into("!H", data, 10, 2)
    _, flags = header_only(world.raw(bytes(data)))
    assert flags & 0xF == dns.rcode.FORMERR


def test_any_returns_the_records_at_the_name(world: World) -> None:
    msg = world.ask("web-1.web.svc.internal.", "ANY")
    kinds = sorted(dns.rdatatype.to_text(r.rdtype) for r in msg.answer)
    assert kinds == ["A", "SRV", "TXT"]
    assert world.ask("missing.svc.internal.", "ANY").rcode() == dns.rcode.NXDOMAIN


def test_ch_class_version_bind_is_refused(world: World) -> None:
    msg = world.ask("version.bind.", "TXT", rdclass="CH")
    assert msg.rcode() == dns.rcode.REFUSED and not msg.answer


# -- replies cached per query -------------------------------------------------------------------


def test_a_repeated_query_is_answered_from_the_cache_with_its_own_id(world: World) -> None:
    query = dns.message.make_query("blue.web.svc.internal.", "A")
    first = world.raw(query.to_wire())
    assert first is not None
    assert world.index.replies, "the reply was not cached"
    query.id = (query.id + 1) % 65536
    again = world.raw(query.to_wire())
    assert again is not None
    assert again[:2] == query.id.to_bytes(2, "big") and again[2:] == first[2:]
    before = world.responder.stats.by_type_rcode[(1, 0)]
    world.raw(query.to_wire())
    assert world.responder.stats.by_type_rcode[(1, 0)] == before + 1  # hits are counted


def test_a_change_empties_the_cache(world: World) -> None:
    assert texts(world.ask("web.svc.internal.")) == ["10.0.0.1", "10.0.0.2"]
    assert texts(world.ask("nothing.web.svc.internal.")) == []
    world.add("web", "web-3", address="10.0.0.3", port=8080)
    assert texts(world.ask("web.svc.internal.")) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    # The NXDOMAIN cached before is not kept past the change either.
    world.add("other", "nothing", address="10.0.0.9", port=80)
    assert world.ask("nothing.web.svc.internal.").rcode() == dns.rcode.NXDOMAIN
    world.add("web", "nothing", address="10.0.0.9", port=80)
    assert texts(world.ask("nothing.web.svc.internal.")) == ["10.0.0.9"]


def test_cached_truncated_replies_stay_truncated_and_counted() -> None:
    w = World()
    for n in range(60):
        w.add("big", f"i{n}", address=f"10.1.0.{n}", port=80)
    stats = w.responder.stats
    for _ in range(3):
        assert w.ask("big.svc.internal.", use_edns=False).flags & dns.flags.TC
    assert stats.truncated == 3
    assert len(texts(w.ask("big.svc.internal.", tcp=True))) == 60  # TCP is cached apart


def test_cached_orders_keep_the_weighted_shares() -> None:
    """Replies come from the cache, but every answer still draws its own order."""
    w = World()
    weights = {"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 3, "10.0.0.4": 4}
    for n, (address, weight) in enumerate(weights.items()):
        w.add("web", f"w{n}", address=address, port=80, weight=weight)
    w.settings("web", max_answers=1)
    query = dns.message.make_query("web.svc.internal.", "A").to_wire()
    firsts: Counter[str] = Counter()
    for _ in range(8000):
        reply = w.raw(query)
        assert reply is not None
        firsts[dns.message.from_wire(reply).answer[0][0].to_text()] += 1
    assert_shares(firsts, weights, max_abs_error=0.02)
    assert len(w.index.replies) == 1


def test_many_instances_draw_from_a_resampled_pool_with_the_weight_shares() -> None:
    """8 instances have 40320 orders, too many for a table: orders come from a pool that is
    redrawn as it is read. Shares still follow the weights; cached replies stay bounded."""
    w = World()
    weights = {f"10.0.0.{n}": n for n in range(1, 9)}
    for n, (address, weight) in enumerate(weights.items()):
        w.add("web", f"w{n}", address=address, port=80, weight=weight)
    query = dns.message.make_query("web.svc.internal.", "A").to_wire()
    firsts: Counter[str] = Counter()
    for _ in range(20000):
        reply = w.raw(query)
        assert reply is not None
        msg = dns.message.from_wire(reply)
        assert len(msg.answer[0]) == 8
        firsts[msg.answer[0][0].to_text()] += 1
    # A pooled order serves a geometric number of answers (mean REUSE), so counts vary about
    # E[K^2]/E[K] = 2*REUSE - 1 times as much as independent draws would: scale the chi-square
    # by that. Uniform or first-listed orders would still be far outside (0.09 or more off for
    # the heaviest instance; the share check allows 0.03, about 4 standard deviations).
    total = sum(weights.values())
    for address, weight in weights.items():
        assert abs(firsts[address] / 20000 - weight / total) < 0.03, (address, firsts)
    assert chi_square(firsts, weights) / (2 * REUSE - 1) < 24.32, firsts  # 7 df, alpha 0.001
    entry = next(iter(w.index.replies.values()))
    # An order the pool replaces is dropped from the cache: it holds at most the pool's orders.
    assert 0 < len(entry.replies) <= POOL
    assert w.index.reply_count == len(entry.replies)


def test_a_drawn_rrset_keeps_few_replies_whatever_asks_for_it() -> None:
    """Orders a pool replaces are dropped only from the entry being read; the same RRset asked
    over UDP, with EDNS and over TCP has three entries, each bounded by twice the pool."""
    w = World()
    for n in range(1, 13):
        w.add("web", f"w{n}", address=f"10.0.0.{n}", port=80, weight=n)
    plain = dns.message.make_query("web.svc.internal.", "A").to_wire()
    edns = dns.message.make_query("web.svc.internal.", "A", use_edns=0).to_wire()
    for _ in range(6000):
        w.raw(plain)
        w.raw(edns)
        w.raw(plain, tcp=True)
    entries = [*w.index.replies.values(), *w.index.replies_tcp.values()]
    assert len(entries) == 3
    assert all(0 < len(e.replies) <= 2 * POOL for e in entries), [len(e.replies) for e in entries]
    assert w.index.reply_count == sum(len(e.replies) for e in entries)


def test_every_order_of_a_table_stays_cached() -> None:
    """5 weighted instances with max_answers 5 have 120 orders (the benchmark's data set): once
    each has been drawn, every answer comes from the cache."""
    w = World()
    for n in range(1, 6):
        w.add("web", f"w{n}", address=f"10.0.0.{n}", port=80, weight=10 * n)
    w.settings("web", max_answers=5)
    queries = [dns.message.make_query(name, kind).to_wire() for name, kind in
               [("web.svc.internal.", "A"), ("_web._tcp.svc.internal.", "SRV")]]  # fmt: skip
    # The rarest order has a chance of about 1/1000: 20000 draws see every one (odds e**-21).
    for _ in range(20000):
        for query in queries:
            w.raw(query)
    assert sorted(len(e.replies) for e in w.index.replies.values()) == [120, 120]
    assert w.index.reply_count == 240
    for _ in range(1000):
        for query in queries:
            w.raw(query)
    assert w.index.reply_count == 240  # nothing encoded again


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, 15])
def test_other_opcodes_get_notimp_with_no_flag_of_a_query(world: World, opcode: int) -> None:
    """ISC genreport's ``opcodeflg`` probe: opcode 15, header only, with TC, RD, RA, CD, AD, AA
    and Z set. RD and CD are copied only for opcode QUERY; the reply carries QR, the opcode and
    NOTIMP and nothing else."""
    every_flag = 0x0200 | 0x0100 | 0x0080 | 0x0010 | 0x0020 | 0x0400 | 0x0040
    data = struct.pack("!HHHHHH", 0x4242, (opcode << 11) | every_flag, 0, 0, 0, 0)
    qid, flags = header_only(world.raw(data))
    assert qid == 0x4242
    assert flags == 0x8000 | (opcode << 11) | dns.rcode.NOTIMP


def test_a_query_still_copies_rd_and_cd(world: World) -> None:
    reply = world.ask("web.svc.internal.", "A", flags=dns.flags.RD | dns.flags.CD)
    assert reply.flags & dns.flags.RD and reply.flags & dns.flags.CD
    assert not reply.flags & (dns.flags.RA | dns.flags.AD)
