"""A reply made for a query with DO set, signed: RRSIGs beside every RRset, and negative answers
as compact denial of existence (RFC 9824).

The responder builds a reply as it always does; for a DO query (and only then) the reply is
read back, each RRset gets its signatures (``dnssec.Signer``: made once per exact RRset,
then kept), and it is written again. This is paid on the reply cache's misses only: the signed
reply is cached like any other, by the query's bytes (DO among them) and the order drawn.

Denial: there is no zone to walk and nothing is computed ahead, as RFC 9824 ("black lies")
intends for zones that change all the time. NODATA stays NOERROR with an NSEC at the query name
whose next name is ``\\000.<name>`` and whose bitmap lists the types the name has; a name that
does not exist is answered NOERROR too, its NSEC listing only NXNAME (RFC 9824 3.1), so a
validator can tell them apart. Nothing about other names is revealed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.dnssec import NSEC, NXNAME, RRSIG, Signer, nsec_rdata

_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_OPT, _TSIG = 41, 250


class Section:
    """One section's records, read back: (owner, body) with owners uncompressed."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []


def signed_reply(
    reply: bytes,
    signer: Signer,
    apex_of: Callable[[bytes], bytes | None],
    qname: bytes,
    types_at: Sequence[int] | None,
    limit: int,
) -> bytes:
    """``reply`` (ours, for a DO query whose lower-cased name is ``qname``) with its RRsets
    signed, each by the zone ``apex_of`` its owner (a CNAME may lead into another of our
    zones); an NXDOMAIN or NODATA answered by compact denial.
    ``types_at``: the types ``qname`` has (None: the name does not exist). Longer than
    ``limit``: the reply without its records, TC set (the client asks again over TCP)."""
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(reply, pos) + 4
    question = reply[12:pos]
    sections: list[list[tuple[bytes, bytes]]] = [[], [], []]
    tail = b""  # the OPT record (ours), kept last and as it is
    for index, count in enumerate((an, ns, ar)):
        for _ in range(count):
            owner, pos = _read_name(reply, pos)
            rtype, _, _, rdlen = _RR.unpack_from(reply, pos)
            end = pos + 10 + rdlen
            body = _uncompressed_body(reply, pos, rtype, rdlen)
            if rtype == _OPT:
                tail = owner + reply[pos:end]
            else:
                sections[index].append((owner.lower(), body))
            pos = end
    rcode = flags & 0x0F
    if rcode == wire.NXDOMAIN or (rcode == wire.NOERROR and not sections[0]):
        soa = [rec for rec in sections[1] if _type(rec[1]) == wire.SOA]
        if soa:
            ttl = int.from_bytes(soa[0][1][4:8])
            types = (NXNAME,) if types_at is None or rcode == wire.NXDOMAIN else types_at
            nsec = wire.rr_body(NSEC, ttl, nsec_rdata(qname, types))
            sections[1] = [*soa, (qname, nsec)]
            flags &= ~0x0F  # NXDOMAIN becomes NOERROR (RFC 9824 3.1)
    out = bytearray(12)
    out += question
    counts = []
    for records in sections:
        n = 0
        for owner, body in _with_signatures(records, signer, apex_of):
            out += owner
            out += body
            n += 1
        counts.append(n)
    if tail:
        out += tail
        counts[2] += 1
    if len(out) > limit:
        # Too long for the client's UDP size: an empty reply with TC (RFC 2181 9).
        short = bytearray(_HDR.pack(qid, flags | wire.FLAG_TC, qd, 0, 0, 1 if tail else 0))
        short += question
        short += tail
        return bytes(short)
    _HDR.pack_into(out, 0, qid, flags, qd, *counts)
    return bytes(out)


def _with_signatures(
    records: list[tuple[bytes, bytes]], signer: Signer, apex_of: Callable[[bytes], bytes | None]
) -> Iterator[tuple[bytes, bytes]]:
    """The records of a section, each RRset followed by its RRSIGs (in the order RRsets first
    appear)."""
    groups: dict[tuple[bytes, int], list[bytes]] = {}
    for owner, body in records:
        groups.setdefault((owner, _type(body)), []).append(body)
    for (owner, rtype), bodies in groups.items():
        for body in bodies:
            yield owner, body
        apex = apex_of(owner)
        if rtype in (RRSIG, _TSIG) or apex is None:
            continue  # not ours to sign
        for sig in signer.rrsigs(owner, apex, rtype, bodies):
            yield owner, sig


def _type(body: bytes) -> int:
    return (body[0] << 8) | body[1]


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        n = data[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += n + 1


def _read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """The name at ``pos`` uncompressed, and where it ends in ``data``."""
    out = bytearray()
    end = -1
    hops = 0
    while True:
        n = data[pos]
        if n & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            hops += 1
            if hops > 64:
                raise ValueError("compression loop")
            continue
        out += data[pos : pos + n + 1]
        if n == 0:
            return bytes(out), end if end >= 0 else pos + 1
        pos += n + 1


# Types whose rdata may hold compressed names in our replies (NS, CNAME, PTR, MX, SOA, SRV):
# read back uncompressed, as signing and the reply written again need them.
# The offset of the (first) name in the rdata.
_NAME_AT = {2: 0, 5: 0, 12: 0, 15: 2, 6: 0, 33: 6}


def _uncompressed_body(data: bytes, pos: int, rtype: int, rdlen: int) -> bytes:
    start = pos + 10
    rdata = data[start : start + rdlen]
    at = _NAME_AT.get(rtype)
    if at is not None:
        fixed = data[start : start + at]
        name, after = _read_name(data, start + at)
        if rtype == wire.SOA:
            rname, after = _read_name(data, after)
            name += rname
        rest = data[after : start + rdlen]
        rdata = fixed + name + rest
    return data[pos : pos + 8] + struct.pack("!H", len(rdata)) + rdata
