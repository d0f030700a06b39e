"""The signed zone a transfer carries (zonesign.py): canonical order (RFC 4034 6.1) against
dnspython's, the NSEC chain builder (closed, look-ahead past names with nothing, bitmaps over
type windows), and a whole signed zone from the index validated by dnspython, through
``Transfers.serve`` for AXFR and for IXFR (which gets the whole zone while signing); TTLs at
most zone_max_ttl, a zone file's denial records left out, the signed data built in one pass
(dnspython's signatures byte for byte, time linear in the RRset), CDS/CDNSKEY signed by the
KSK, and a zone larger than the answers' signature cache kept whole apart from it."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from dnsdisc.dnsserver import dnssec, wire
from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.dnsserver.transfer import Transfers
from dnsdisc.dnsserver.zonesign import (
    canonical_key,
    nsec_chain,
    nsec_ttl,
    signed_records,
    zone_names,
)
from dnsdisc.netaddr import NetRules
from tests.support.signedzone import bitmap_types, check_signed_zone
from tests.support.world import World

APEX = "svc.internal."
APEX_WIRE = wire.text_to_wire(APEX)
NSEC = dns.rdatatype.NSEC


def _wire(text: str) -> bytes:
    out = dns.name.from_text(text).to_wire()
    assert out is not None
    return out


def test_canonical_order_is_rfc_4034s_example_and_dnspythons() -> None:
    # RFC 4034 6.1's own example, in its order: case folded, \001 before *, \200 after z.
    rfc = ["example.", "a.example.", "yljkjljk.a.example.", "Z.a.example.",
           "zABC.a.EXAMPLE.", "z.example.", "\\001.z.example.", "*.z.example.",
           "\\200.z.example."]  # fmt: skip
    shuffled = rfc[:]
    random.Random(3).shuffle(shuffled)
    assert sorted(shuffled, key=lambda t: canonical_key(_wire(t))) == rfc
    # Edge cases: a label that begins a longer one, zero octets inside labels and at their
    # ends, 63-octet labels, upper case beside the octets just above and below the letters
    # ('@' 0x40, '[' 0x5b, '`' 0x60, '{' 0x7b), 0xff; then random names, all against dnspython.
    edge = ["a.", "a\\000.", "a\\000\\000.", "a\\001.", "a\\000b.", "ab.", "A.", "\\000.",
            "\\255.", "@.", "[.", "`.", "{.", "Z.", "z.", "x" * 63 + ".", "x" * 62 + ".",
            "X" * 63 + ".", "x" * 62 + "\\000.", "b.a.", "a.b.", "\\000.a.", "a.a\\000.", "."]  # fmt: skip
    rng = random.Random(7)
    alphabet = [b"\x00", b"\x01", b"-", b"A", b"a", b"Z", b"z", b"[", b"\xff", b"0"]
    for _ in range(400):
        labels = []
        for _ in range(rng.randint(1, 4)):
            label = b"".join(rng.choice(alphabet) for _ in range(rng.choice((1, 2, 3, 63))))
            labels.append(label)
        edge.append(dns.name.Name([*labels, b""]).to_text())
    names = [dns.name.from_text(t) for t in edge]
    ours = sorted(names, key=lambda n: canonical_key(n.to_wire() or b""))
    assert ours == sorted(names)  # dnspython's Name order is the canonical one
    # Equal keys for names that differ in case only, different keys otherwise.
    assert canonical_key(_wire("WeB.Svc.")) == canonical_key(_wire("web.svc."))
    assert canonical_key(_wire("a\\000.")) != canonical_key(_wire("a."))


def _bodies(rtype: int, *rdatas: bytes) -> list[bytes]:
    return [wire.rr_body(rtype, 30, rdata) for rdata in rdatas]


def test_the_chain_is_closed_skips_names_without_records_and_lists_every_type() -> None:
    apex = _wire("z.test.")
    names = ["z.test.", "a.z.test.", "b.a.z.test.", "gone.z.test.", "empty.z.test.",
             "B.z.test.", "\\000.c.z.test.", "c.z.test."]  # fmt: skip
    held = {
        "z.test.": {wire.SOA: _bodies(wire.SOA, b"x"), wire.NS: _bodies(wire.NS, b"\x00")},
        "a.z.test.": {wire.A: _bodies(wire.A, b"\x01\x02\x03\x04")},
        "b.a.z.test.": {257: _bodies(257, b"\x00\x05issuex"), 32768: _bodies(32768, b"t")},
        "empty.z.test.": {},  # a name whose members are all out: nothing to carry
        "b.z.test.": {wire.TXT: _bodies(wire.TXT, b"\x01t"), wire.AAAA: _bodies(wire.AAAA, bytes(16))},
        "\\000.c.z.test.": {wire.SRV: _bodies(wire.SRV, bytes(6) + b"\x00")},
        "c.z.test.": {wire.PTR: _bodies(wire.PTR, b"\x00")},
    }  # fmt: skip
    by_wire = {_wire(t).lower(): v for t, v in held.items()}
    ordered = sorted((_wire(t).lower() for t in names), key=canonical_key)
    asked: list[bytes] = []

    def rrsets_of(name: bytes) -> dict[int, list[bytes]] | None:
        asked.append(name)
        return by_wire.get(name)  # "gone" is None: removed since the list was made

    chain = list(nsec_chain(apex, ordered, rrsets_of, 5))
    assert asked == ordered  # each name asked once, in order
    owners = [dns.name.from_wire(name, 0)[0].to_text() for name, _ in chain]
    assert owners == ["z.test.", "a.z.test.", "b.a.z.test.", "b.z.test.", "c.z.test.",
                      "\\000.c.z.test."]  # fmt: skip
    for i, (_, rrsets) in enumerate(chain):
        [body] = rrsets[NSEC]
        assert int.from_bytes(body[4:8]) == 5  # the TTL given
        rdata = dns.rdata.from_wire(dns.rdataclass.IN, NSEC, body, 10, len(body) - 10)
        following = chain[(i + 1) % len(chain)][0]  # the last names the apex: closed
        assert rdata.next.to_wire() == following  # type: ignore[attr-defined]
        assert bitmap_types(rdata) == {*rrsets, dns.rdatatype.RRSIG}  # NSEC is in rrsets
    # Types past the first window (CAA 257, TA 32768) get windows of their own.
    caa = dict(chain)[_wire("b.a.z.test.")][NSEC][0]
    windows = dns.rdata.from_wire(dns.rdataclass.IN, NSEC, caa, 10, len(caa) - 10).windows  # type: ignore[attr-defined]
    assert [w for w, _ in windows] == [0, 1, 128]
    # Only the apex: its NSEC names itself.
    [(_, only)] = nsec_chain(apex, [apex], lambda _: {wire.SOA: _bodies(wire.SOA, b"x")}, 5)
    assert only[NSEC][0][10:].startswith(apex)
    assert list(nsec_chain(apex, [], rrsets_of, 5)) == []


def _signed_world() -> tuple[World, dnssec.Signer]:
    w = World(transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    w.responder.sign_with(signer, 300)
    for n in range(5):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=8080, tags=["blue"],
              meta={"v": str(n)})  # fmt: skip
    w.add("web", "same", address="10.0.0.1", port=8081)  # an address two instances share
    w.add("v6", "a", address="2001:db8::1", port=443, protocol="udp")
    w.settings("one", max_answers=1)
    for n in range(3):
        w.add("one", f"o{n}", address=f"10.0.1.{n + 1}", port=80)
    return w, signer


def _transfer(w: World, rdtype: str, serial: int | None = None) -> list[dns.message.Message]:
    return _transfer_of(w, APEX, rdtype, serial)


def _transfer_of(
    w: World, apex: str, rdtype: str, serial: int | None = None
) -> list[dns.message.Message]:
    transfers = Transfers(TransferSettings(allow=NetRules.parse(["127.0.0.0/8"], "", "a")))
    query = dns.message.make_query(apex, rdtype)
    if serial is not None:
        soa = w.ask(apex, "SOA").answer[0]
        query.authority.append(
            dns.rrset.from_rdata(soa.name, soa.ttl, soa[0].replace(serial=serial))
        )
    sent: list[bytes] = []

    async def drained() -> None:
        pass

    asyncio.run(transfers.serve(w.index, query.to_wire(), "127.0.0.1", sent.append, drained))
    return [dns.message.from_wire(m, xfr=True) for m in sent]


def _zone(messages: list[dns.message.Message]) -> dns.zone.Zone:
    return dns.zone.from_xfr(iter(messages), relativize=False)


def test_a_signed_axfr_validates_whole_and_a_second_one_signs_nothing() -> None:
    w, signer = _signed_world()
    messages = _transfer(w, "AXFR")
    zone = _zone(messages)
    checked = check_signed_zone(zone)
    # Every name with records is in the chain; names with none (``_v6._tcp``: no TCP instance)
    # are left out, as an unsigned AXFR leaves them out of the zone.
    names = zone_names(w.index, w.index.zones[APEX_WIRE])
    held = [n for n in names if any(r.members for r in w.index.nodes[n].rrsets.values())]
    assert checked.names == len(held) < len(names)
    assert zone.get_node("_v6._tcp.svc.internal.") is None
    assert checked.nsec_ttls == {nsec_ttl(w.index.zones[APEX_WIRE].soa)} == {5}
    ksk, zsk = (k.tag for k in signer.keys)
    assert checked.ksk_tags == {ksk} and checked.zsk_tags == {zsk}
    # Balanced RRsets go out whole (max_answers does not travel), each address once.
    a = zone.get_rdataset("web.svc.internal.", "A")
    assert a is not None and len(a) == 5
    one = zone.get_rdataset("one.svc.internal.", "A")
    assert one is not None and len(one) == 3
    for rdtype in ("DNSKEY", "CDS", "CDNSKEY", "NS", "SOA"):
        assert zone.get_rdataset(APEX, rdtype) is not None, rdtype
    # The SOA opens and closes the transfer once each; its RRSIG is in between.
    soa = (dns.rdatatype.SOA, dns.rdatatype.NONE)
    records = [(rrset.rdtype, rrset.covers) for m in messages for rrset in m.answer]
    assert records[0] == soa and records[-1] == soa
    assert records.count(soa) == 2
    # From the cache the second time: no new signature.
    made = signer.signed
    again = _zone(_transfer(w, "AXFR"))
    assert signer.signed == made
    check_signed_zone(again)
    # A new instance: the RRsets it joins, its own name and its neighbours' NSEC are signed
    # anew, nothing else.
    w.add("web", "w9", address="10.0.0.9", port=8080)
    check_signed_zone(_zone(_transfer(w, "AXFR")))
    assert 0 < signer.signed - made < 20


def test_ixfr_while_signing_is_the_whole_zone_signed() -> None:
    w, _ = _signed_world()
    index = w.index
    index.set_changes(1)
    before = index.serial
    w.add("web", "w7", address="10.0.0.7", port=8080)
    index.set_changes(2)
    assert index.journal is not None and index.journal.since(APEX_WIRE, before) is not None
    messages = _transfer(w, "IXFR", serial=before)
    # Not a difference (that would open SOA, old SOA): the zone, in AXFR form.
    first = messages[0].answer
    assert first[0].rdtype == dns.rdatatype.SOA and first[0][0].serial == index.serial
    assert first[1].rdtype != dns.rdatatype.SOA
    zone = _zone(messages)
    check_signed_zone(zone)
    a = zone.get_rdataset("web.svc.internal.", "A")
    assert a is not None and "10.0.0.7" in {rd.to_text() for rd in a}
    # Up to date: the SOA alone, as without signing.
    [only] = _transfer(w, "IXFR", serial=index.serial)
    assert [r.rdtype for r in only.answer] == [dns.rdatatype.SOA]
    # Unsigned again: IXFR differences come back.
    w.responder.sign_with(None, 300)
    w.add("web", "w8", address="10.0.0.8", port=8080)
    index.set_changes(3)
    answer = [r for m in _transfer(w, "IXFR", serial=index.serial - 1) for r in m.answer]
    assert all(r.rdtype != dns.rdatatype.RRSIG for r in answer)
    assert answer[1].rdtype == dns.rdatatype.SOA  # their SOA: a difference


def test_a_signed_transfer_gives_records_at_most_zone_max_ttl_as_the_answers_do() -> None:
    """The signer caps a signed record's TTL at dnssec.zone_max_ttl (the rollover waits that
    long for the old ZSK's signatures to leave caches): a secondary serves what it was sent, so
    the transfer must carry the capped TTLs too, and the RRSIGs' original TTL with them."""
    w = World(transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))
    now = time.time()
    keys = [dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)]
    signer = dnssec.Signer(keys, max_ttl=300)
    w.responder.sign_with(signer, 600)  # a DNSKEY TTL above the cap, too
    w.settings("slow", ttl=3600)
    w.add("slow", "a", address="10.0.0.1", port=80)
    messages = _transfer(w, "AXFR")
    zone = _zone(messages)
    checked = check_signed_zone(zone)
    assert checked.names > 3
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            assert rds.ttl <= 300, (name, rds)
            if rds.rdtype == dns.rdatatype.RRSIG:
                assert all(sig.original_ttl <= 300 for sig in rds), (name, rds)  # type: ignore[attr-defined]
    # What the transfer signed is what a DO answer hands out whole: the same signature.
    made = signer.signed
    reply = w.ask("slow.svc.internal.", "A", want_dnssec=True)
    [sig] = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert signer.signed == made
    sent = zone.get_rdataset("slow.svc.internal.", "RRSIG", "A")
    assert sent is not None and set(sent) == set(sig)


def test_denial_records_of_a_zone_file_stay_out_of_a_signed_transfer(tmp_path: Path) -> None:
    """Zone files take any type, RRSIG, NSEC, NSEC3 and NSEC3PARAM too (say, copied from a zone
    signed elsewhere). Signed, the transfer makes those itself: a zone file's RRSIG would be an
    RRset of its own, signed (an RRSIG over RRSIGs) and beside no data it covers, and an
    NSEC3PARAM at the apex tells a secondary to deny with an NSEC3 chain (RFC 5155 4) that is
    not there."""
    (tmp_path / "z.yaml").write_text(
        "records:\n"
        "  - {name: sig, type: RRSIG, value: 'A 13 3 300 20300101000000 20200101000000 1 "
        "svc.internal. AAAA'}\n"
        "  - {name: sig, type: TXT, value: kept}\n"
        "  - {name: n, type: NSEC, value: 'zz.svc.internal. A'}\n"
        "  - {name: n3, type: NSEC3, value: '1 0 0 - 2VPTU5TIMAMQTTGL4LUU9KG21E0AOR3S A'}\n"
        "  - {name: '@', type: NSEC3PARAM, value: '1 0 0 -'}\n"
    )
    w = World(tmp_path, transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))
    now = time.time()
    keys = [dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)]
    w.responder.sign_with(dnssec.Signer(keys), 300)
    w.add("web", "w0", address="10.0.0.1", port=80)
    zone = _zone(_transfer(w, "AXFR"))
    check_signed_zone(zone)  # every RRSIG beside what it covers, the chain whole
    apex = zone.get_node(APEX)
    assert (
        apex is not None and apex.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC3PARAM) is None
    )
    sigs = zone.get_rdataset("sig.svc.internal.", "RRSIG", "TXT")
    assert sigs is not None and {rd.key_tag for rd in sigs} == {dnssec.key_tag(keys[1])}  # type: ignore[attr-defined]
    assert zone.get_rdataset("sig.svc.internal.", "RRSIG", "A") is None
    for name in ("n.svc.internal.", "n3.svc.internal."):
        assert zone.get_node(name) is None  # nothing else there: no name in the chain


def _srv_bodies(count: int) -> list[bytes]:
    return [
        wire.rr_body(wire.SRV, 5, b"\x00\x00\x00\x64\x1f\x90" + _wire(f"i{n}.big.svc.internal."))
        for n in range(count)
    ]


def test_signing_a_whole_service_rrset_costs_time_linear_in_its_size() -> None:
    """A transfer signs each service's RRsets whole: at limits.instances_per_service (20,000)
    an SRV RRset of 20,000 records. dnspython's sign() builds what it signs by appending to a
    bytes object record by record, quadratic: 15 s for that RRset, in one call, the worker's
    queries waiting (and a Knot secondary's transfer timing out meanwhile). Built in one pass,
    the time grows with the records."""
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    owner = _wire("big.svc.internal.")
    took = []
    for count in (2_000, 16_000):
        bodies = _srv_bodies(count)
        started = time.perf_counter()
        signer.rrsigs(owner, APEX_WIRE, wire.SRV, bodies)
        took.append(time.perf_counter() - started)
    # 8x the records: about 8x the time (it was ~50x: 0.3 s, then 10 s).
    assert took[1] < 20 * took[0] and took[1] < 4.0, took


def test_signatures_are_those_dnspythons_sign_makes() -> None:
    """The signed data is built here in one pass (above); byte for byte it is what dnspython's
    dns.dnssec.sign signs (deterministic ECDSA, and Ed25519, make equal signatures of equal
    data): wildcard owners (Labels one less), names in rdata lower-cased as RFC 4034 6.2 has
    it (SRV, MX, NS, CNAME), duplicates once, TXT and DNSKEY (the KSK's)."""
    now = time.time()
    for algorithm in (dnssec.ECDSAP256SHA256, dnssec.ED25519):
        keys = [dnssec.new_key(algorithm, True, now), dnssec.new_key(algorithm, False, now)]
        signer = dnssec.Signer(keys, clock=lambda: now)
        loaded = {k.key.ksk: k for k in signer.keys}
        cases = [
            ("*.wild.svc.internal.", "TXT", ['"a"', '"b c"', '"a"']),
            ("x.\\000.svc.internal.", "SRV", ["0 1 80 Target.SVC.internal.", "1 0 8 b."]),
            ("svc.internal.", "MX", ["10 Mail.Example.", "20 mail2.example."]),
            ("svc.internal.", "NS", ["NS.svc.internal."]),
            ("alias.svc.internal.", "CNAME", ["Web.svc.internal."]),
            ("web.svc.internal.", "A", [f"10.0.{n // 256}.{n % 256}" for n in range(300)]),
            ("svc.internal.", "DNSKEY", [k.dnskey.to_text() for k in signer.keys]),
        ]
        for owner, rdtype, texts in cases:
            rrset = dns.rrset.from_text_list(owner, 60, "IN", rdtype, texts)
            bodies = [wire.rr_body(rrset.rdtype, 60, rd.to_wire() or b"") for rd in rrset]
            bodies += bodies[:1]  # an item twice: one record to a signature
            ours = signer.rrsigs(_wire(owner).lower(), APEX_WIRE, rrset.rdtype, bodies)
            key = loaded[rrset.rdtype == dns.rdatatype.DNSKEY]
            inception = int(now - dnssec.SKEW) // 3600 * 3600
            theirs = dns.dnssec.sign(
                rrset, key.private, dns.name.from_text(APEX), key.dnskey,
                inception=inception, expiration=inception + dnssec.VALIDITY,
            )  # fmt: skip
            assert ours == [wire.rr_body(dns.rdatatype.RRSIG, 60, theirs.to_digestable())], (
                algorithm,
                owner,
                rdtype,
            )
            rrsig = dns.rdata.from_wire(
                dns.rdataclass.IN, dns.rdatatype.RRSIG, ours[0], 10, len(ours[0]) - 10
            )
            sigset = dns.rrset.from_rdata(rrset.name, 60, rrsig)
            keyset = dns.rrset.from_rdata_list(APEX, 60, [k.dnskey for k in signer.keys])
            dns.dnssec.validate(rrset, sigset, {dns.name.from_text(APEX): keyset}, now=now)


def test_cds_and_cdnskey_are_signed_by_the_ksk_the_parents_ds_names() -> None:
    """RFC 7344 4.1: a parent takes CDS/CDNSKEY only signed with a key the DS RRset it holds
    represents, and our DS names the KSK alone: signed by the ZSK, the parent's automation
    (Knot's and BIND's checks, a registry scanning CDS) refuses them."""
    w, signer = _signed_world()
    zone = _zone(_transfer(w, "AXFR"))
    ksk, zsk = (k.tag for k in signer.keys)
    for rdtype in ("DNSKEY", "CDS", "CDNSKEY"):
        sigs = zone.get_rdataset(APEX, "RRSIG", rdtype)
        assert sigs is not None and {rd.key_tag for rd in sigs} == {ksk}, rdtype  # type: ignore[attr-defined]
    sigs = zone.get_rdataset(APEX, "RRSIG", "SOA")
    assert sigs is not None and {rd.key_tag for rd in sigs} == {zsk}
    # The online answer's too (the same signature, from the signer's cache).
    reply = w.ask(APEX, "CDS", want_dnssec=True)
    [sig] = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert {rd.key_tag for rd in sig} == {ksk}  # type: ignore[attr-defined]


def test_a_zone_larger_than_the_answers_cache_is_signed_once_and_leaves_that_cache_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The answers' signature cache has a bound (200,000) and starts again past it. A zone that
    needs more signatures than that (100,000 instances: 305,008) was signed whole again by every
    transfer (60 s of the worker's time, measured), and each transfer emptied the cache the
    answers use, their balanced subsets and NSECs then signed again within the signing budget.
    A signed zone's signatures are kept by (owner, type) apart, one zone's worth."""
    monkeypatch.setattr(dnssec, "CACHE_ENTRIES", 30)  # the zone needs ~60
    w, signer = _signed_world()
    # An answer's own signature: a subset of max_answers 1, which no transfer signs.
    reply = w.ask("one.svc.internal.", "A", want_dnssec=True)
    [a] = [r for r in reply.answer if r.rdtype == dns.rdatatype.A]
    owner = _wire("one.svc.internal.")
    subset = [wire.rr_body(wire.A, a.ttl, rd.to_wire() or b"") for rd in a]
    assert signer.held(owner, wire.A, subset) is not None
    check_signed_zone(_zone(_transfer(w, "AXFR")))
    made = signer.signed
    check_signed_zone(_zone(_transfer(w, "AXFR")))
    assert signer.signed == made  # the whole zone from what was kept
    assert signer.held(owner, wire.A, subset) is not None  # the answers' cache untouched
    # What the zone no longer has is not kept for it: one zone's worth, not every RRset it had.
    kept = len(signer.zones[APEX_WIRE])
    asyncio.run(w.registry.delete_service("one"))
    zone = _zone(_transfer(w, "AXFR"))
    check_signed_zone(zone)
    assert zone.get_node("one.svc.internal.") is None
    assert len(signer.zones[APEX_WIRE]) < kept
    assert not any(name.startswith(b"\x03one") for name, _ in signer.zones[APEX_WIRE])


def test_an_rrset_a_zone_file_gives_two_ttls_goes_out_with_one(tmp_path: Path) -> None:
    """One RRset has one TTL (RFC 2181 5.2), and its RRSIG's TTL and original TTL are that TTL
    (RFC 4034 3). Zone-file records of one name and type with different TTLs went out each with
    its own, the RRSIG saying the first one's: the smallest for all, as for PTR shared by
    services (build.ptr_rrset)."""
    (tmp_path / "z.yaml").write_text(
        "records:\n"
        "  - {name: m, type: TXT, value: x, ttl: 300}\n"
        "  - {name: m, type: TXT, value: y, ttl: 60}\n"
    )
    w = World(tmp_path, transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))
    now = time.time()
    keys = [dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)]
    w.responder.sign_with(dnssec.Signer(keys), 300)
    messages = _transfer(w, "AXFR")
    ttls = {
        rrset.ttl
        for m in messages
        for rrset in m.answer
        if rrset.name == dns.name.from_text("m.svc.internal.")
        and dns.rdatatype.TXT in (rrset.rdtype, rrset.covers)
    }
    assert ttls == {60}
    check_signed_zone(_zone(messages))
    # Unsigned answers too: one TTL.
    assert {r.ttl for r in w.ask("m.svc.internal.", "TXT").answer} == {60}


def test_a_zone_served_inside_another_is_delegated_from_it_with_its_ds(tmp_path: Path) -> None:
    """A zone file's origin may lie inside the service domain (corp.svc.internal.). The
    domain's signed transfer listed no name there, so its NSEC chain proved that the whole
    child zone does not exist: a secondary of the domain answered a secure NXDOMAIN for names
    dnsdisc serves. The parent's zone now delegates it (RFC 4035 2.2, 2.4): NS at the cut,
    unsigned, the child's DS (its KSK, as its CDS says), signed, and an NSEC listing NS and DS;
    an unsigned transfer carries the NS."""
    (tmp_path / "corp.yaml").write_text(
        "origin: corp.svc.internal.\nrecords:\n  - {name: x, type: TXT, value: child}\n"
    )
    w = World(tmp_path, transfer_allow=NetRules.parse(["127.0.0.0/8"], "", "transfer.allow"))
    now = time.time()
    keys = [dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)]
    signer = dnssec.Signer(keys)
    w.responder.sign_with(signer, 300)
    w.add("web", "w0", address="10.0.0.1", port=80)
    zone = _zone(_transfer(w, "AXFR"))
    checked = check_signed_zone(zone)
    cut = dns.name.from_text("corp.svc.internal.")
    assert checked.cuts == [cut]
    ns = zone.get_rdataset(cut, "NS")
    assert ns is not None and [rd.to_text() for rd in ns] == ["ns.svc.internal."]
    ds = zone.get_rdataset(cut, "DS")
    [expected] = signer.ds_texts("corp.svc.internal.")
    assert ds is not None and [rd.to_text() for rd in ds] == [expected.split(" DS ")[1]]
    [nsec] = zone.get_rdataset(cut, "NSEC") or []
    assert bitmap_types(nsec) == {dns.rdatatype.NS, dns.rdatatype.DS, dns.rdatatype.RRSIG,
                                  dns.rdatatype.NSEC}  # fmt: skip
    assert zone.get_node("x.corp.svc.internal.") is None  # the child's data stays the child's
    # The child's own transfer is as before: its apex, its records.
    child = _zone(_transfer_of(w, "corp.svc.internal.", "AXFR"))
    check_signed_zone(child)
    assert child.get_rdataset("x.corp.svc.internal.", "TXT") is not None
    # Unsigned, the parent still delegates.
    w.responder.sign_with(None, 300)
    plain = _zone(_transfer(w, "AXFR"))
    ns = plain.get_rdataset(cut, "NS")
    assert ns is not None and plain.get_rdataset(cut, "DS") is None


def test_a_transfer_ending_after_a_later_one_keeps_what_the_later_one_carried() -> None:
    """Transfers of one zone may overlap (two secondaries). One that started before a name was
    added ends after one that carried it: it drops only what neither carried, and does not put
    its own older RRsets (the NSEC before the new name) over the later one's."""
    w, signer = _signed_world()
    index = w.index
    zone = index.zones[APEX_WIRE]
    first = signed_records(index, zone, APEX_WIRE, signer)
    for _ in range(5):
        next(first)  # under way: its names are listed
    w.add("web", "late", address="10.0.0.77", port=8080)
    later = list(signed_records(index, zone, APEX_WIRE, signer))  # carries late.web, whole
    late = _wire("late.web.svc.internal.")
    assert any(owner == late for owner, _ in later)
    rest = list(first)
    assert not any(owner == late for owner, _ in rest)  # listed before it was added
    assert (late, wire.A) in signer.zones[APEX_WIRE]  # still kept: a later transfer carried it
    made = signer.signed
    check_signed_zone(_zone(_transfer(w, "AXFR")))
    assert signer.signed == made
