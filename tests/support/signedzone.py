"""Checks of a signed zone as a secondary receives it (#24, signed transfers): every RRset has an
RRSIG that dnspython validates against the zone's own DNSKEY RRset (the KSK's signature over
that RRset too), and the NSEC chain is complete and closed in canonical order, each bitmap the
types its name has. dnspython's own name order (``dns.name.Name.__lt__``) is RFC 4034 6.1's, so
the order is checked against an implementation other than ours."""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.dnssec
import dns.name
import dns.node
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

RRSIG, NSEC, DNSKEY = dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.DNSKEY
CDS, CDNSKEY = dns.rdatatype.CDS, dns.rdatatype.CDNSKEY


@dataclass
class Checked:
    rrsets: int = 0  # RRsets validated (NSEC and DNSKEY included)
    names: int = 0  # names in the chain
    ksk_tags: set[int] = field(default_factory=set)  # keys that signed DNSKEY, CDS, CDNSKEY
    zsk_tags: set[int] = field(default_factory=set)  # keys that signed the rest
    nsec_ttls: set[int] = field(default_factory=set)
    cuts: list[dns.name.Name] = field(default_factory=list)  # delegation points


def bitmap_types(nsec: dns.rdata.Rdata) -> set[int]:
    """The types an NSEC rdata's bitmap lists."""
    out = set()
    for window, bitmap in nsec.windows:  # type: ignore[attr-defined]
        for i, octet in enumerate(bitmap):
            for bit in range(8):
                if octet & (0x80 >> bit):
                    out.add(window * 256 + i * 8 + bit)
    return out


def check_signed_zone(zone: dns.zone.Zone, now: float | None = None) -> Checked:
    """Validate ``zone`` (taken in with relativize=False) as above; raises on the first fault."""
    origin = zone.origin
    assert origin is not None
    apex = zone.get_node(origin)
    assert apex is not None, "no apex"
    dnskeys = apex.get_rdataset(dns.rdataclass.IN, DNSKEY)
    assert dnskeys is not None, "no DNSKEY at the apex"
    keys: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {
        origin: dns.rrset.from_rdata_list(origin, dnskeys.ttl, list(dnskeys))
    }
    out = Checked()
    for name, node in zone.nodes.items():
        owner = name.derelativize(origin)
        sigs: dict[int, dns.rdataset.Rdataset] = {
            rds.covers: rds for rds in node.rdatasets if rds.rdtype == RRSIG
        }
        # A delegation point (NS below the apex): its NS RRset is the child's and is not signed
        # (RFC 4035 2.2); its DS and NSEC are.
        cut = owner != origin and node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NS)
        if cut:
            assert dns.rdatatype.NS not in sigs, f"{owner}: a delegation's NS signed"
            assert not any(
                owner.is_subdomain(cut_name) and owner != cut_name for cut_name in out.cuts
            )
            out.cuts.append(owner)
        for rds in node.rdatasets:
            if rds.rdtype == RRSIG or (cut and rds.rdtype == dns.rdatatype.NS):
                continue
            assert rds.covers == dns.rdatatype.NONE
            sig = sigs.get(rds.rdtype)
            assert sig is not None, f"{owner} {dns.rdatatype.to_text(rds.rdtype)}: no RRSIG"
            rrset = dns.rrset.from_rdata_list(owner, rds.ttl, list(rds))
            sigset = dns.rrset.from_rdata_list(owner, sig.ttl, list(sig))
            # Raises ValidationFailure unless one of the signatures checks with a key given.
            dns.dnssec.validate(rrset, sigset, keys, now=now)
            assert sig.ttl == rds.ttl, f"{owner}: RRSIG TTL {sig.ttl} != {rds.ttl}"
            tags = out.ksk_tags if rds.rdtype in (DNSKEY, CDS, CDNSKEY) else out.zsk_tags
            tags.update(rd.key_tag for rd in sig)
            out.rrsets += 1
        assert set(sigs) <= {rds.rdtype for rds in node.rdatasets}, f"{owner}: stray RRSIG"
    # The chain: every name with records has one NSEC, naming the next name in canonical
    # order, the last naming the apex; its bitmap is the name's types with RRSIG and NSEC.
    names = sorted(name.derelativize(origin) for name in zone.nodes)
    assert names[0] == origin, names[:3]
    for i, owner in enumerate(names):
        held = zone.get_node(owner)
        assert held is not None
        nsec = held.get_rdataset(dns.rdataclass.IN, NSEC)
        assert nsec is not None and len(nsec) == 1, f"{owner}: no NSEC"
        following = names[(i + 1) % len(names)]
        assert nsec[0].next == following, f"{owner}: next {nsec[0].next}, not {following}"
        types = {rds.rdtype for rds in held.rdatasets if rds.rdtype != RRSIG} | {RRSIG}
        assert bitmap_types(nsec[0]) == types, f"{owner}: bitmap {nsec[0].to_text()}"
        out.nsec_ttls.add(nsec.ttl)
        out.names += 1
    return out
