"""The responder fed with bytes, no sockets: answer semantics of the DNS face."""

from __future__ import annotations

import asyncio
import itertools
import struct
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

from dnsdisc.dnsserver import wire
from tests.support.helpers import ROOT
from tests.support.world import World, texts


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


def test_any_returns_one_rrset_of_the_name_rfc8482(world: World) -> None:
    msg = world.ask("web-1.web.svc.internal.", "ANY")
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert len(msg.answer) == 1 and msg.answer[0].rdtype in (
        dns.rdatatype.A,
        dns.rdatatype.SRV,
        dns.rdatatype.TXT,
    )
    assert world.ask("missing.svc.internal.", "ANY").rcode() == dns.rcode.NXDOMAIN


def test_any_full_returns_every_record_at_the_name(world: World) -> None:
    world.responder.any_full = True
    msg = world.ask("web-1.web.svc.internal.", "ANY")
    kinds = sorted(dns.rdatatype.to_text(r.rdtype) for r in msg.answer)
    assert kinds == ["A", "SRV", "TXT"]


def test_ch_class_version_bind_is_refused(world: World) -> None:
    msg = world.ask("version.bind.", "TXT", rdclass="CH")
    assert msg.rcode() == dns.rcode.REFUSED and not msg.answer


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


def test_the_reply_cache_drops_its_oldest_keys_at_its_bound(world: World) -> None:
    """Distinct questions fill the cache up to its limit in bytes; past it the oldest keys go
    first, so the bytes held never exceed the limit and always match the entries."""
    cache = world.index.cache
    world.ask("web.svc.internal.", "TXT")
    one = cache.size  # one key with one reply (the names below are as long or longer)
    world.responder.index = world.index  # binds the limit below
    cache.limit = world.responder.reply_cache_bytes = 3 * one + one // 2
    cache.forget()
    names = ["web", "blue.web", "green.web", "web-1.web", "web-2.web"]
    for n, name in enumerate(names):
        world.ask(f"{name}.svc.internal.", "TXT")  # one reply each, TXT or NODATA
        assert cache.size == sum(e.size for e in cache.table.values()) <= cache.limit
        assert len(cache.table) == min(n + 1, 3)
    assert [k[:6] for k in cache.table] == [b"\x05green", b"\x05web-1", b"\x05web-2"]
    assert cache.evicted == 2
    assert texts(world.ask("blue.web.svc.internal.")) == ["10.0.0.1"]  # answers are unchanged


# -- found in review: each of these failed before its fix --------------------------------------


def test_ptr_rrset_has_one_ttl() -> None:
    w = World()
    w.add("a", "a-1", address="10.0.0.5", port=80)
    w.add("b", "b-1", address="10.0.0.5", port=81)
    w.settings("a", ttl=3600)
    w.settings("b", ttl=5)
    msg = w.ask("5.0.0.10.in-addr.arpa.", "PTR")
    assert len(msg.answer) == 1 and msg.answer[0].ttl == 5
    assert texts(msg) == ["a-1.a.svc.internal.", "b-1.b.svc.internal."]


def test_cname_to_a_missing_name_of_ours_is_nxdomain(tmp_path: Path) -> None:
    (tmp_path / "z.yaml").write_text("records:\n  - {name: old, type: CNAME, value: gone}\n")
    w = World(tmp_path)
    msg = w.ask("old.svc.internal.")
    assert msg.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last name
    assert texts(msg) == ["gone.svc.internal."]
    assert msg.authority and msg.authority[0].rdtype == dns.rdatatype.SOA
