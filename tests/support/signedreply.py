"""Checks of a signed reply from the in-process responder (#24): the DNSKEY RRset the server
publishes, validated by its own RRSIG, and every RRset of a reply validated by dnspython."""

from __future__ import annotations

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from tests.support.world import World

APEX = dns.name.from_text("svc.internal.")
Keys = dict[dns.name.Name, dns.rrset.RRset]


def keys_of(w: World) -> Keys:
    """The DNSKEY RRset the server publishes, checked against its own RRSIG (the KSK's)."""
    reply = w.ask(APEX.to_text(), "DNSKEY", want_dnssec=True)
    [dnskeys] = [r for r in reply.answer if r.rdtype == dns.rdatatype.DNSKEY]
    [sig] = [r for r in reply.answer if r.rdtype == dns.rdatatype.RRSIG]
    dns.dnssec.validate(dnskeys, sig, {APEX: dnskeys})
    return {APEX: dnskeys}


def validate_all(reply: dns.message.Message, keys: Keys) -> int:
    """Every RRset of every section validated by dnspython against its RRSIG; how many."""
    checked = 0
    for section in (reply.answer, reply.authority, reply.additional):
        sigs = {(r.name, r.covers): r for r in section if r.rdtype == dns.rdatatype.RRSIG}
        for rrset in section:
            if rrset.rdtype in (dns.rdatatype.RRSIG, dns.rdatatype.OPT):
                continue
            dns.dnssec.validate(rrset, sigs[(rrset.name, rrset.rdtype)], keys)
            checked += 1
    return checked
