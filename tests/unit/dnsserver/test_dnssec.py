"""Signed answers (dnssec.py, signing.py) through the responder, checked with dnspython's own
validation: positive answers of every kind, balanced subsets, compact denial for NODATA, empty
non-terminals and names that do not exist, DNSKEY/CDS at the apex, and nothing signed without
DO."""

from __future__ import annotations

import time

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from dnsdisc.dnsserver import dnssec
from tests.support.signedreply import APEX, keys_of, validate_all
from tests.support.world import World


def signed_world() -> tuple[World, dnssec.Signer]:
    w = World()
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    w.responder.sign_with(signer, 300)
    return w, signer


def test_answers_validate_and_balanced_subsets_are_signed_once_each() -> None:
    w, signer = signed_world()
    w.settings("web", max_answers=1, policy="round_robin")
    for n in range(3):
        w.add("web", f"w{n}", address=f"10.0.0.{n + 1}", port=80 + n)
    keys = keys_of(w)
    seen = set()
    for _ in range(9):
        reply = w.ask("web.svc.internal.", "A", want_dnssec=True)
        assert not reply.flags & dns.flags.AD  # never ours to set
        assert validate_all(reply, keys) == 1
        seen.add(reply.answer[0][0].to_text())
    assert len(seen) == 3  # three subsets, each signed
    made = signer.signed
    for _ in range(9):
        validate_all(w.ask("web.svc.internal.", "A", want_dnssec=True), keys)
    assert signer.signed == made  # kept: no new signature for a subset seen before
    for rdtype in ("SRV", "TXT", "SOA", "NS"):
        name = "_web._tcp.svc.internal." if rdtype == "SRV" else "svc.internal."
        if rdtype == "TXT":
            w.add("web", "w0", address="10.0.0.1", port=80, meta={"v": "1"})
            name = "w0.web.svc.internal."
        reply = w.ask(name, rdtype, want_dnssec=True, tcp=True)
        assert validate_all(reply, keys) >= 1, rdtype


def test_denial_is_compact_and_validates() -> None:
    w, _ = signed_world()
    w.add("web", "w0", address="10.0.0.1", port=80)
    keys = keys_of(w)
    # NODATA: NOERROR, SOA and an NSEC at the name listing what it has.
    reply = w.ask("web.svc.internal.", "MX", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    validate_all(reply, keys)
    [nsec] = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    types = {dns.rdatatype.to_text(t) for t in nsec[0].windows_types()} if hasattr(
        nsec[0], "windows_types") else set(nsec[0].to_text().split()[1:])  # fmt: skip
    assert {"A", "SRV", "RRSIG", "NSEC"} <= types and "MX" not in types
    assert nsec[0].next == dns.name.from_text("\\000.web.svc.internal.")
    # A name that does not exist: NOERROR too (RFC 9824), the NSEC saying NXNAME.
    reply = w.ask("nothing.svc.internal.", "A", want_dnssec=True)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    validate_all(reply, keys)
    [nsec] = [r for r in reply.authority if r.rdtype == dns.rdatatype.NSEC]
    assert "NXNAME" in nsec[0].to_text() or "TYPE128" in nsec[0].to_text()
    # An empty non-terminal (svc.internal has _tcp.svc.internal under _web? no: tcp under it).
    reply = w.ask("_tcp.svc.internal.", "A", want_dnssec=True)
    validate_all(reply, keys)
    # Without DO: as before, nothing signed, NXDOMAIN stays NXDOMAIN.
    plain = w.ask("nothing.svc.internal.", "A", use_edns=0)
    assert plain.rcode() == dns.rcode.NXDOMAIN
    assert not any(r.rdtype == dns.rdatatype.RRSIG for r in plain.authority)


def test_cds_says_what_the_parent_ds_should_be() -> None:
    w, signer = signed_world()
    reply = w.ask("svc.internal.", "CDS", want_dnssec=True)
    [cds] = [r for r in reply.answer if r.rdtype == dns.rdatatype.CDS]
    [ds] = signer.ds_texts("svc.internal.")
    assert cds[0].to_text() == ds.split(" DS ")[1]


def test_signed_replies_are_forgotten_hourly_while_signing() -> None:
    """A quiet zone's cached signed replies are emptied on a timer (no change would), so none
    is served with signatures near their expiry."""
    import asyncio

    from dnsdisc.dnsserver.face import RESIGN_EVERY, DnsFace
    from dnsdisc.dnsserver.settings import DnsSettings

    w, _ = signed_world()
    w.add("web", "w0", address="10.0.0.1", port=80)
    face = DnsFace.create(DnsSettings(), w.index)
    face.responder.sign_with(w.responder.signer, 300)
    query = dns.message.make_query("web.svc.internal.", "A", want_dnssec=True).to_wire()
    assert face.responder.respond(query) is not None
    assert w.index.cache.table, "the signed reply was cached"

    async def run() -> float:
        face.forget_signed()
        assert face._resign is not None
        when = face._resign.when() - asyncio.get_running_loop().time()
        face._resign.cancel()
        return when

    assert abs(asyncio.run(run()) - RESIGN_EVERY) < 5
    assert not w.index.cache.table


def test_a_cname_into_another_of_our_zones_is_signed_by_each_zone(tmp_path: object) -> None:
    from pathlib import Path

    zones = Path(str(tmp_path))
    (zones / "p.yaml").write_text(
        "origin: partners.internal.\nrecords:\n  - {name: api, type: A, value: 198.51.100.10}\n"
    )
    (zones / "s.yaml").write_text(
        "records:\n  - {name: alias, type: CNAME, value: api.partners.internal.}\n"
    )
    w = World(zone_dir=zones)
    now = time.time()
    signer = dnssec.Signer([dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)])
    w.responder.sign_with(signer, 300)
    keys = keys_of(w)
    partners = dns.name.from_text("partners.internal.")
    keys[partners] = dns.rrset.from_rdata_list(partners, 300, list(keys[APEX]))
    reply = w.ask("alias.svc.internal.", "A", want_dnssec=True)
    assert validate_all(reply, keys) == 2  # the CNAME (svc.internal) and the A (partners)
    signers = {r.name.to_text(): r[0].signer.to_text() for r in reply.answer
               if r.rdtype == dns.rdatatype.RRSIG}  # fmt: skip
    assert signers == {"alias.svc.internal.": "svc.internal.",
                       "api.partners.internal.": "partners.internal."}  # fmt: skip


def test_signed_records_are_given_at_most_zone_max_ttl_and_still_validate() -> None:
    """A rollover keeps the old ZSK published zone_max_ttl after its last signature: a signed
    record cached longer would outlive its key. Unsigned answers keep their TTL."""
    w = World()
    now = time.time()
    keys = [dnssec.new_key(13, True, now), dnssec.new_key(13, False, now)]
    w.responder.sign_with(dnssec.Signer(keys, max_ttl=300), 300)
    w.settings("slow", ttl=3600)
    w.add("slow", "a", address="10.0.0.1", port=80)
    signed = w.ask("slow.svc.internal.", "A", want_dnssec=True)
    [rrset] = [r for r in signed.answer if r.rdtype == dns.rdatatype.A]
    [sig] = [r for r in signed.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert rrset.ttl == 300 and sig.ttl == 300 and sig[0].original_ttl == 300
    dns.dnssec.validate(rrset, sig, keys_of(w))
    plain = w.ask("slow.svc.internal.", "A")
    assert plain.answer[0].ttl == 3600
    # Denial too: the SOA and NSEC of a NODATA (negative TTL 5 here: under the cap, as is).
    nodata = w.ask("slow.svc.internal.", "MX", want_dnssec=True)
    assert all(r.ttl <= 300 for r in nodata.authority)
    assert validate_all(nodata, keys_of(w)) == 2


def test_signature_validity_is_the_configured_one_and_a_kept_signature_is_remade_at_half() -> None:
    now = [1_800_000_000.0]
    keys = [dnssec.new_key(13, True, now[0]), dnssec.new_key(13, False, now[0])]
    signer = dnssec.Signer(keys, clock=lambda: now[0], validity=4 * 86400)
    body = dns.rrset.from_text("a.svc.internal.", 5, "IN", "A", "10.0.0.1")[0].to_digestable()
    record = (1).to_bytes(2) + (1).to_bytes(2) + (5).to_bytes(4) + len(body).to_bytes(2) + body
    owner = dns.name.from_text("a.svc.internal.").to_wire()
    apex = APEX.to_wire()
    [first] = signer.rrsigs(owner, apex, 1, [record])
    sig = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, first, 10, len(first) - 10)
    assert sig.expiration - sig.inception == 4 * 86400
    assert sig.inception <= now[0] - 3600  # an hour in the past at least (clock skew)
    now[0] += 2 * 86400 - 7200  # before half: kept
    assert signer.rrsigs(owner, apex, 1, [record]) == [first] and signer.signed == 1
    now[0] += 7200  # past half: made again
    assert signer.rrsigs(owner, apex, 1, [record]) != [first] and signer.signed == 2
