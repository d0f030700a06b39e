"""Signed replies (signing.py): the budget of new signatures (a token bucket on an injected
clock, the bound per reply, SERVFAIL with an extended error, glue left out, what is not
cached), compressed names (smaller, the names RFC 4034 and RFC 2782 keep whole kept whole,
still validating), and denial after a CNAME."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import dns.dnssec
import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from dnsdisc.dnsserver import dnssec, signing
from dnsdisc.dnsserver.signing import Budget
from tests.support.signedreply import keys_of, validate_all
from tests.support.world import World

D = "svc.internal."


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def signed_world(rate: int = 0, zone_dir: Path | None = None) -> tuple[World, Clock]:
    w = World(zone_dir=zone_dir)
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    w.responder.sign_with(signer, 300)
    clock = Clock()
    w.responder.budget = Budget(rate, clock=clock)
    return w, clock


def ede_texts(msg: dns.message.Message) -> list[str]:
    return [o.text or "" for o in msg.options if isinstance(o, dns.edns.EDEOption)]


# -- the token bucket ----------------------------------------------------------------------


def test_the_bucket_holds_a_second_and_refills_at_its_rate() -> None:
    clock = Clock()
    budget = Budget(10, clock=clock)
    taken = 0
    for _ in range(100):  # bounded: 10 are in the bucket
        if not budget.allows():
            break
        budget.spend(1)
        taken += 1
    assert taken == 10
    clock.now += 0.25  # 2.5 tokens: two signatures
    assert budget.allows()
    budget.spend(2)
    assert not budget.allows()
    clock.now += 60  # never more than the burst
    assert budget.tokens == 0.5 and budget.allows() and budget.tokens == 10
    assert budget.made == 12


def test_names_that_do_not_exist_spend_only_above_the_reserve() -> None:
    clock = Clock()
    budget = Budget(10, clock=clock)
    missing = 0
    for _ in range(100):
        if not budget.allows(above_reserve=True):
            break
        budget.spend(1)
        missing += 1
    assert missing == 5  # half the bucket stays for the names that exist
    existing = 0
    for _ in range(100):
        if not budget.allows():
            break
        budget.spend(1)
        existing += 1
    assert existing == 5
    clock.now += 0.3  # 3 tokens back: the reserve fills first
    assert budget.allows() and not budget.allows(above_reserve=True)


def test_rate_zero_is_no_bound() -> None:
    budget = Budget(0, clock=Clock())
    for _ in range(1000):
        assert budget.allows(above_reserve=True)
        budget.spend(1)
    assert budget.made == 1000


# -- through the responder -----------------------------------------------------------------


def test_a_flood_of_missing_names_is_refused_past_the_budget_but_not_kept_answers() -> None:
    w, clock = signed_world(rate=20)
    w.settings("web", max_answers=1, policy="round_robin")
    for n in range(3):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
    keys = keys_of(w)  # the DNSKEY RRset signed: 1 signature
    for _ in range(3):  # the 3 subsets: 3 more
        assert w.ask("web." + D, "A", want_dnssec=True).rcode() == dns.rcode.NOERROR
    # A name that does not exist: the SOA and its NSEC, 2 more.
    assert w.ask("nothing." + D, "A", want_dnssec=True).rcode() == dns.rcode.NOERROR
    answered = refused = 0
    for n in range(40):  # a flood: each name a new NSEC signature
        reply = w.ask(f"r{n}." + D, "A", want_dnssec=True)
        if reply.rcode() == dns.rcode.NOERROR:
            validate_all(reply, keys)
            answered += 1
        else:
            assert reply.rcode() == dns.rcode.SERVFAIL and not reply.answer
            assert ede_texts(reply) == ["signing is over its budget"]
            assert not reply.flags & dns.flags.AA
            refused += 1
    # 20 tokens, 6 spent, 10 kept back for the names that exist: 4 NSECs, then refused.
    assert (answered, refused) == (4, 36)
    assert w.responder.budget.refused == 36
    # Answers whose signatures are kept are not touched by the budget (reply cache aside),
    # a name that does not exist among them.
    w.index.cache.forget()
    for _ in range(6):
        reply = w.ask("web." + D, "A", want_dnssec=True)
        assert reply.rcode() == dns.rcode.NOERROR and validate_all(reply, keys) == 1
    for name in ("nothing.", "r0."):
        reply = w.ask(name + D, "A", want_dnssec=True)
        assert reply.rcode() == dns.rcode.NOERROR and validate_all(reply, keys) == 2
    # A new subset of a name that exists still has the reserve.
    w.add("web", "w3", address="10.0.0.4", port=80)
    seen = set()
    for _ in range(4):
        reply = w.ask("web." + D, "A", want_dnssec=True)
        assert reply.rcode() == dns.rcode.NOERROR and validate_all(reply, keys) == 1
        seen.add(reply.answer[0][0].to_text())
    assert "10.0.0.4" in seen
    # A refused reply was not cached: once the bucket refills, the same name is answered.
    assert w.ask("r39." + D, "A", want_dnssec=True).rcode() == dns.rcode.SERVFAIL
    clock.now += 1
    reply = w.ask("r39." + D, "A", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR and validate_all(reply, keys) == 2
    # Without DO nothing is signed, nothing refused.
    assert w.ask("r40." + D, "A", use_edns=0).rcode() == dns.rcode.NXDOMAIN
    assert w.responder.stats.by_type_rcode[(1, dns.rcode.SERVFAIL)] == 37


def test_a_reply_makes_at_most_its_bound_of_new_signatures_then_glue_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signing, "MAX_NEW_PER_REPLY", 4)
    w, _ = signed_world()
    for n in range(10):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
    keys = keys_of(w)
    w.index.cache.forget()
    signer = w.responder.signer
    assert signer is not None
    made = signer.signed
    glue, kept = [], []
    for _ in range(4):  # 1 SRV RRset + 10 glue A RRsets: 4 new a reply
        reply = w.ask("_web._tcp." + D, "SRV", want_dnssec=True, tcp=True)
        assert reply.rcode() == dns.rcode.NOERROR and len(reply.answer[0]) == 10
        validate_all(reply, keys)
        glue.append(sum(1 for r in reply.additional if r.rdtype == dns.rdatatype.A))
        kept.append(bool(w.index.cache.table))
    assert glue == [3, 7, 10, 10]
    assert kept == [False, False, True, True]  # a reply short of glue is not cached
    assert signer.signed - made == 11
    assert w.responder.budget.left_out == 7 + 3


def test_over_the_bound_in_the_answer_or_authority_is_refused_but_progress_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(signing, "MAX_NEW_PER_REPLY", 1)
    w, _ = signed_world()
    w.add("web", "w0", address="10.0.0.1", port=80)
    # NODATA needs the SOA's signature and the NSEC's: one a reply.
    first = w.ask("web." + D, "MX", want_dnssec=True)
    assert first.rcode() == dns.rcode.SERVFAIL
    second = w.ask("web." + D, "MX", want_dnssec=True)
    assert second.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in second.authority].count(dns.rdatatype.RRSIG) == 2


def test_a_truncated_answer_is_not_signed() -> None:
    w, _ = signed_world()
    for n in range(40):
        w.add("web", f"w{n}", address=f"10.0.{n}.1", port=80)
    signer = w.responder.signer
    assert signer is not None
    before = signer.signed
    reply = w.ask("_web._tcp." + D, "SRV", want_dnssec=True, payload=512)
    assert reply.flags & dns.flags.TC and not reply.answer
    assert signer.signed == before


# -- compression ---------------------------------------------------------------------------


def _names_in(data: bytes) -> list[tuple[int, int, bool]]:
    """(type, offset of the rdata name checked, whether it holds a pointer) for each RRSIG
    signer, NSEC next name and SRV target of a reply."""
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
    pos = 12
    for _ in range(qd):
        pos = _skip(data, pos) + 4
    out = []
    for _ in range(an + ns + ar):
        pos = _skip(data, pos)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, pos)
        start = pos + 10
        at = {46: 18, 47: 0, 33: 6}.get(rtype)
        if at is not None:
            out.append((rtype, start + at, _has_pointer(data, start + at)))
        pos = start + rdlen
    return out


def _skip(data: bytes, pos: int) -> int:
    for _ in range(128):
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0:
            return pos + 2
        pos += n + 1
    raise AssertionError("name too long")


def _has_pointer(data: bytes, pos: int) -> bool:
    for _ in range(128):
        n = data[pos]
        if n == 0:
            return False
        if n & 0xC0:
            return True
        pos += n + 1
    raise AssertionError("name too long")


def _uncompressed_size(msg: dns.message.Message) -> int:
    """What ``msg`` takes with no name compressed at all (as signed replies were written)."""
    size = 12 + len(msg.question[0].name.to_wire()) + 4
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            for rdata in rrset:
                size += len(rrset.name.to_wire()) + 10 + len(rdata.to_wire())
    if msg.edns >= 0:  # the OPT record: root, fixed fields, options
        size += 11 + sum(4 + len(option.to_wire()) for option in msg.options)
    return size


def test_signed_replies_compress_names_and_still_validate() -> None:
    w, _ = signed_world()
    w.settings("web", max_answers=2)
    for n in range(8):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80, meta={"v": str(n)})
    keys = keys_of(w)
    asked = [
        ("web." + D, "A"), ("w1.web." + D, "TXT"), ("_web._tcp." + D, "SRV"),
        ("nothing." + D, "A"), ("web." + D, "MX"), (D, "SOA"), (D, "NS"), (D, "DNSKEY"),
    ]  # fmt: skip
    for name, rdtype in asked:
        reply = w.ask(name, rdtype, want_dnssec=True, tcp=True)
        raw = w.raw(dns.message.make_query(name, rdtype, want_dnssec=True).to_wire(), tcp=True)
        assert raw is not None
        assert validate_all(reply, keys) >= 1, (name, rdtype)
        # Every owner is a pointer, or ends in one (each of ours is 14 bytes whole at least):
        # 12 bytes saved a record at least, besides what the rdata names save.
        records = sum(len(rrset) for s in (reply.answer, reply.authority, reply.additional)
                      for rrset in s)  # fmt: skip
        assert len(raw) <= _uncompressed_size(reply) - 12 * records, (name, rdtype)
        checked = _names_in(raw)
        assert all(not pointer for _, _, pointer in checked), (name, rdtype)
        if rdtype == "SRV":
            assert {t for t, _, _ in checked} == {33, 46}
        if name == "nothing." + D:
            assert 47 in {t for t, _, _ in checked}


def test_compression_lets_more_fit_a_udp_reply() -> None:
    w, _ = signed_world()
    for n in range(8):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80)
    keys = keys_of(w)
    full = w.ask("_web._tcp." + D, "SRV", want_dnssec=True, tcp=True)
    assert _uncompressed_size(full) > 1232  # written whole, over TCP only (TC over UDP)
    reply = w.ask("_web._tcp." + D, "SRV", want_dnssec=True, payload=1232)
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 8
    validate_all(reply, keys)
    assert any(r.rdtype == dns.rdatatype.A for r in reply.additional)  # glue that fits


def test_denial_after_a_cname_is_of_its_target(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "records:\n  - {name: alias, type: CNAME, value: gone.svc.internal.}\n"
    )
    w, _ = signed_world(zone_dir=tmp_path)
    keys = keys_of(w)
    reply = w.ask("alias." + D, "A", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR
    assert validate_all(reply, keys) == 3  # the CNAME, the SOA and the NSEC
    [nsec] = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    assert nsec.name == dns.name.from_text("gone." + D)
    assert nsec[0].next == dns.name.from_text("\\000.gone." + D)
    assert "NXNAME" in nsec[0].to_text() or "TYPE128" in nsec[0].to_text()


def test_the_budget_reaches_the_responder_from_the_config() -> None:
    from dnsdisc.config.load import from_mapping
    from dnsdisc.dnsserver.face import DnsFace

    cfg = from_mapping({"dnssec": {"max_signatures": 300}}, "c.yaml")
    settings = cfg.dns_settings()
    assert settings.dnssec_max_signatures == 300
    w, _ = signed_world()
    face = DnsFace.create(settings, w.index)
    assert face.responder.budget.rate == 300
    face.responder.sign_with(w.responder.signer, 300)
    face.responder.budget = Budget(4, clock=Clock())  # 2 for names that do not exist
    for name in ("a", "b"):
        query = dns.message.make_query(name + "." + D, "A", want_dnssec=True).to_wire()
        assert face.responder.respond(query) is not None
    counters = face.counters()
    # a: the SOA and the NSEC (4 -> 2 left, the reserve); b: refused.
    assert (counters.signatures, counters.signing_refused, counters.signing_left_out) == (2, 1, 0)
