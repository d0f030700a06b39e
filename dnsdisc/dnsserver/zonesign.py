"""A zone signed for a secondary (#24: "zone transfers carry signed data"): every RRset with its
RRSIGs, and an NSEC chain over the zone's names (RFC 4034 4, 6.1).

Our own answers deny by compact denial (signing.py, RFC 9824), made per query. A secondary
(NSD, Knot, BIND) serves what it was sent as a pre-signed zone and makes nothing up: to prove
that a name or a type does not exist it needs the NSEC records of a real chain, one at every
name that has records, each naming the next name in canonical order, the last one the apex.
So a signed transfer builds that chain as it streams: the zone's names are sorted once in
canonical order (references, as an unsigned AXFR lists them), and each name's NSEC is written
when the next name with records is known, one name of look-ahead.

Signatures come from the responder's ``Signer``, kept for the zone by (owner, type) with the
records they cover (``Signer.zone_rrsigs``), apart from the answers' cache and its bound: a
second transfer of an unchanged zone signs nothing, whatever its size, and a transfer leaves
the answers' signatures where they are; the RRsets our answers hand out whole share the
signatures with the transfer, either way. A service's RRset goes out with every member
that would be handed out (``RRSet.members``), signed whole, as an unsigned AXFR sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.dnssec import CDS, NSEC, RRSIG, Signer
from dnsdisc.dnsserver.dnssec import _bitmap as type_bitmap

RRsets = dict[int, list[bytes]]  # type -> record bodies (type, class, TTL, length, rdata)
DS, NSEC3, NSEC3PARAM = 43, 50, 51
# Types the signed zone makes itself: a zone file's (taken as any other type) stay out of it.
# Its RRSIGs would be an RRset of their own, signed, beside no data they cover; its NSEC would
# stand beside the chain's; an NSEC3PARAM tells a secondary to deny by an NSEC3 chain (RFC
# 5155 4) that is not sent.
MADE_HERE = frozenset({RRSIG, NSEC, NSEC3, NSEC3PARAM})


def canonical_key(name: bytes) -> bytes:
    """A sort key for the wire name ``name`` (uncompressed) whose byte order is RFC 4034 6.1's
    canonical order: labels compared from the root end, each as a string of octets with
    US-ASCII letters lower-cased, a label that is the start of a longer one first, a name
    before the names below it. One bytes object per name, not a tuple of labels: a zone of
    100,000 names is sorted with a key about the size of each name.

    Each label is followed by ``\\x00\\x00`` and a zero octet inside a label is written
    ``\\x00\\x01``, so the end of a label sorts below any octet that could follow in a longer
    label (0x00 included), and whole keys compare as the labels do in turn."""
    labels = []
    pos = 0
    while name[pos]:
        end = pos + 1 + name[pos]
        labels.append(name[pos + 1 : end])
        pos = end
    out = bytearray()
    for label in reversed(labels):
        # Label lengths are never in A-Z (at most 63), but only the octets go in the key.
        label = label.lower()
        if 0 in label:
            label = label.replace(b"\x00", b"\x00\x01")
        out += label
        out += b"\x00\x00"
    return bytes(out)


def nsec_ttl(soa: bytes) -> int:
    """The TTL of an NSEC record, as of the SOA record body ``soa``: the smaller of the SOA's
    own TTL and its MINIMUM field (RFC 9077 3: the negative-caching time, which an NSEC proving
    a negative answer must not outlive)."""
    return min(int.from_bytes(soa[4:8]), int.from_bytes(soa[-4:]))


def nsec_chain(
    apex: bytes,
    names: Iterable[bytes],
    rrsets_of: Callable[[bytes], RRsets | None],
    ttl: int,
) -> Iterator[tuple[bytes, RRsets]]:
    """Each of ``names`` (in canonical order, the apex first) with its RRsets from
    ``rrsets_of`` and an NSEC RRset added: the next name is that of the name yielded after it,
    the last one's the apex (RFC 4034 4.1.1: the chain closes); the bitmap lists its types,
    RRSIG and NSEC among them. A name ``rrsets_of`` gives no records for (None or empty: gone
    since the list was made, or with nothing to hand out) is left out of the chain, as an
    unsigned transfer leaves it out of the zone.

    Each name's RRsets are asked once, so the NSEC always describes what goes out with it, even
    when the name changes during the transfer; one name is held at a time."""
    held: tuple[bytes, RRsets] | None = None
    for name in names:
        rrsets = rrsets_of(name)
        if not rrsets:
            continue
        if held is not None:
            yield _linked(held, name, ttl)
        held = (name, rrsets)
    if held is not None:
        yield _linked(held, apex, ttl)


def _linked(held: tuple[bytes, RRsets], following: bytes, ttl: int) -> tuple[bytes, RRsets]:
    name, rrsets = held
    types = sorted({*rrsets, RRSIG, NSEC})
    rrsets[NSEC] = [wire.rr_body(NSEC, ttl, following + type_bitmap(types))]
    return name, rrsets


def cuts(index: Any, zone: Any) -> list[bytes]:
    """The apexes of the zones we serve inside ``zone`` (a zone file's origin under the service
    domain): ``zone`` delegates each (RFC 4035 2.2, 2.4), its own names stop there. Without the
    cut its NSEC chain proves that the child zone and every name in it do not exist."""
    out = []
    for child in index.zones:
        if child != zone.apex and child[0] and index.find_zone(child[child[0] + 1 :]) is zone:
            out.append(child)
    return out


def delegation(index: Any, child: bytes) -> RRsets:
    """What the parent holds at the apex ``child`` of a zone inside it: the child's NS RRset,
    and while signing the child's DS, as its CDS says (RFC 7344: the same digest of the KSK)."""
    node = index.nodes.get(child)
    out: RRsets = {}
    if node is None:
        return out
    ns = node.rrsets.get(wire.NS)
    if ns is not None and ns.members:
        out[wire.NS] = [item.body for item in ns.members]
    cds = node.rrsets.get(CDS)
    if cds is not None and cds.members:
        out[DS] = [DS.to_bytes(2) + item.body[2:] for item in cds.members]
    return out


def zone_names(index: Any, zone: Any) -> list[bytes]:
    """The names of ``zone`` in ``index`` (an AnswerIndex), the apexes of the zones it delegates
    (``cuts``) among them, in canonical order: the apex first, as the chain starts there."""
    names = [name for name in index.nodes if index.find_zone(name) is zone]
    names += cuts(index, zone)
    names.sort(key=canonical_key)
    apex = zone.apex
    if not names or names[0] != apex:
        names.insert(0, apex)  # its SOA at least: the chain starts and ends there
    return names


def signed_records(
    index: Any, zone: Any, apex: bytes, signer: Signer
) -> Iterator[tuple[bytes, bytes]]:
    """The records of an AXFR of ``zone`` (owner, body), signed: the SOA, then every name in
    canonical order with each of its RRsets followed by their RRSIGs and its NSEC, signed,
    then the SOA again. The SOA is the one this transfer started with, at both ends and where
    the apex's records are signed, so its signature matches the serial sent. Every record
    goes out with the TTL a signed answer gives it (``Signer.capped``: at most
    ``dnssec.zone_max_ttl``, which a rollover waits for), its RRSIGs' original TTL with it."""
    capped = signer.capped
    soa = capped(zone.soa)
    nodes = index.nodes
    delegated = set(cuts(index, zone))

    def rrsets_of(name: bytes) -> RRsets | None:
        if name in delegated:
            # The parent's side of a cut (the node at that name is the child's apex).
            rrsets = delegation(index, name)
            return {rtype: [capped(b) for b in bodies] for rtype, bodies in rrsets.items()}
        node = nodes.get(name)
        out: RRsets = {}
        if node is not None:
            for rtype, rrset in node.peek().items():
                if rtype in MADE_HERE:
                    continue
                # Two instances at one address are one record to a secondary (and to the
                # signature, which covers a set): sent once.
                bodies = list(dict.fromkeys(capped(item.body) for item in rrset.members))
                if bodies:
                    out[rtype] = bodies
        if name == apex:
            out[wire.SOA] = [soa]
        return out

    mark = signer.zone_transfer()
    carried = 0
    yield apex, soa
    for name, rrsets in nsec_chain(apex, zone_names(index, zone), rrsets_of, nsec_ttl(soa)):
        for rtype, bodies in rrsets.items():
            if rtype != wire.SOA:  # the SOA opens the transfer (and closes it), sent there
                for body in bodies:
                    yield name, body
            if rtype == wire.NS and name in delegated:
                continue  # a delegation's NS is the child's: not signed (RFC 4035 2.2)
            for sig in signer.zone_rrsigs(name, apex, rtype, bodies, mark):
                yield name, sig
            carried += 1
    signer.zone_signed(apex, mark, carried)
    yield apex, soa
