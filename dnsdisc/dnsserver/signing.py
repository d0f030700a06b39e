"""A reply made for a query with DO set, signed: RRSIGs beside every RRset, and negative answers
as compact denial of existence (RFC 9824), written again with its names compressed; and the
budget that bounds the signing work.

The responder builds a reply as it always does; for a DO query (and only then) the reply is
read back, each RRset gets its signatures (``dnssec.Signer``: made once per exact RRset,
then kept), and it is written again. This is paid on the reply cache's misses only: the signed
reply is cached like any other, by the query's bytes (DO among them) and the order drawn.

Denial: there is no zone to walk and nothing is computed ahead, as RFC 9824 ("black lies")
intends for zones that change all the time. NODATA stays NOERROR with an NSEC at the query name
whose next name is ``\\000.<name>`` and whose bitmap lists the types the name has; a name that
does not exist is answered NOERROR too, its NSEC listing only NXNAME (RFC 9824 3.1), so a
validator can tell them apart. Nothing about other names is revealed.

Compression: owner names point at the question or at an earlier owner (RFC 1035 4.1.4), as do
the names inside the rdata of the RFC 1035 types that may have them compressed (NS, CNAME, SOA,
PTR, MX: RFC 3597 4). Never compressed: an RRSIG's signer name (RFC 4034 3.1.7), an NSEC's next
name (RFC 4034 4.1.1) and an SRV target (RFC 2782): they are written whole.

The budget (``Budget``): a signature costs 300-460 µs (dnspython's; an NSEC's the most), and a
name that does not exist needs one of its own, so a flood of random names would keep a process
signing and nothing else. Each process may make ``rate`` new signatures a second
(``dnssec.max_signatures``; a token bucket holding a second's worth); a reply makes at most
``MAX_NEW_PER_REPLY`` new ones. A signature the signer keeps costs nothing and is never
refused. When an answer or authority RRset cannot be signed the reply is SERVFAIL with an
extended error (``OverBudget``, answer.py), as Knot's onlinesign answers when it cannot sign:
an unsigned answer would be bogus to a validator (and cached so), a dropped query retried
until it times out, while a SERVFAIL is final for this server and the resolver may ask another.
An additional-section RRset (glue) that cannot be signed is left out (optional, RFC 2181 9; no
TC), and that reply is not cached. Names that do not exist spend only what is above half the
bucket: a flood of them gets the rate, but the names that exist keep the rest first (their
signatures are bounded by the zone: a new subset, a new instance); and such a reply is refused
before it is read back (``_refuse_early``), so a refused flood costs little more than DO=0.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.dnssec import NSEC, NXNAME, RRSIG, Signer, nsec_rdata

_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_PTR = struct.Struct("!H")
_OPT, _TSIG = 41, 250
_MAX_POINTER = 0x3FFF

# New RRsets one reply may have signed (~4 ms): past it the reply is refused or its glue left
# out. A CNAME chain of 8 and its denial fit.
MAX_NEW_PER_REPLY = 16


class OverBudget(Exception):
    """An answer or authority RRset of the reply needs a signature the budget cannot pay now."""


class Budget:
    """New signatures per second for one DNS process: a token bucket of ``rate`` tokens a
    second holding at most ``burst`` (default: a second's worth); ``rate`` 0: no bound. Each
    signature made takes a token; signing is allowed while one is left, for names that do not
    exist only while more than ``reserve`` (half the bucket) are. ``clock``: seconds, never
    going back (``time.monotonic``)."""

    def __init__(
        self,
        rate: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(1, rate if burst is None else burst)
        self.reserve = self.burst // 2
        self.clock = clock
        self.tokens = float(self.burst)
        self.stamp = clock()
        # Counted for the metrics: signatures made, replies refused (SERVFAIL), glue RRsets
        # left out.
        self.made = 0
        self.refused = 0
        self.left_out = 0

    def allows(self, above_reserve: bool = False) -> bool:
        """Whether a signature may be made now (``above_reserve``: for a name that does not
        exist)."""
        if self.rate <= 0:
            return True
        now = self.clock()
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens >= 1 + (self.reserve if above_reserve else 0)

    def spend(self, signatures: int) -> None:
        self.made += signatures
        if self.rate > 0:
            self.tokens -= signatures


def signed_reply(
    reply: bytes,
    signer: Signer,
    apex_of: Callable[[bytes], bytes | None],
    qname: bytes,
    types_at: Sequence[int] | None,
    limit: int,
    budget: Budget | None = None,
) -> tuple[bytes, bool]:
    """``reply`` (ours, for a DO query whose lower-cased name is ``qname``) with its RRsets
    signed, each by the zone ``apex_of`` its owner (a CNAME may lead into another of our
    zones); an NXDOMAIN or NODATA answered by compact denial; its names compressed.
    ``types_at``: the types ``qname`` has (None: the name does not exist). Longer than
    ``limit``: glue left out, then if still too long the reply without its records, TC set (the
    client asks again over TCP). ``budget``: what new signatures may be made (None: no bound).

    Returns the reply and whether it is whole (False: glue the budget could not sign was left
    out: not to be cached). Raises OverBudget when an answer or authority RRset cannot be
    signed."""
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(reply)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(reply, pos) + 4
    if types_at is None and budget is not None and not an and ns == 1:
        _refuse_early(reply, pos, signer, apex_of, qname, budget)
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
                sections[index].append((owner.lower(), signer.capped(body)))
            pos = end
    if flags & wire.FLAG_TC:
        # The answer did not fit unsigned: it will not fit signed. Nothing is signed for it.
        return _truncated(qid, flags, qd, question, tail), True
    rcode = flags & 0x0F
    missing = False  # the denial is of a name that does not exist
    if rcode == wire.NXDOMAIN or (rcode == wire.NOERROR and not sections[0]):
        soa = [rec for rec in sections[1] if _type(rec[1]) == wire.SOA]
        if soa:
            ttl = int.from_bytes(soa[0][1][4:8])
            # After a CNAME chain the name denied is its last target (RFC 9824 3.1, RFC 6604).
            denied = _last_target(sections[0]) or qname
            missing = types_at is None or rcode == wire.NXDOMAIN
            types = (NXNAME,) if missing else types_at
            assert types is not None
            nsec = wire.rr_body(NSEC, ttl, nsec_rdata(denied, types))
            sections[1] = [*soa, (denied, nsec)]
            flags &= ~0x0F  # NXDOMAIN becomes NOERROR (RFC 9824 3.1)
    signing = _Signing(signer, apex_of, budget, missing)
    required = [_rrsets(sections[0]), _rrsets(sections[1])]
    signed = [[(rrset, signing.sigs(*rrset)) for rrset in rrsets] for rrsets in required]
    if signing.refused:
        if budget is not None:
            budget.refused += 1
        raise OverBudget
    out = _Writer(question, qname)
    room = limit - len(tail)
    counts = [0, 0, 0]
    for index, rrsets in enumerate(signed):
        for (owner, _, bodies), sigs in rrsets:
            assert sigs is not None  # else refused above
            counts[index] += out.rrset(owner, bodies, sigs)
    if len(out.data) > room:
        # Too long for the client's UDP size: an empty reply with TC (RFC 2181 9).
        return _truncated(qid, flags, qd, question, tail), True
    whole = True
    for owner, rtype, bodies in _rrsets(sections[2]):
        if len(out.data) + sum(len(owner) + len(b) for b in bodies) > room:
            continue  # cannot fit even unsigned: glue is optional (RFC 2181 9), no TC
        sigs = signing.sigs(owner, rtype, bodies, optional=True)
        if sigs is None:
            whole = False
            if budget is not None:
                budget.left_out += 1
            continue
        mark = out.mark()
        n = out.rrset(owner, bodies, sigs)
        if len(out.data) > room:
            out.undo(mark)  # its signatures made it too long: left out as well
            continue
        counts[2] += n
    data = out.data
    if tail:
        data += tail
        counts[2] += 1
    _HDR.pack_into(data, 0, qid, flags, qd, *counts)
    return bytes(data), whole


def _refuse_early(
    reply: bytes,
    pos: int,
    signer: Signer,
    apex_of: Callable[[bytes], bytes | None],
    qname: bytes,
    budget: Budget,
) -> None:
    """Raise OverBudget for the denial of a name that does not exist (the reply: its
    question, then the SOA at ``pos``) whose NSEC is not kept while the budget allows no new
    one for such names: what ``signed_reply`` would find, before it reads the reply back (a
    flood's queries are refused at a third of the cost)."""
    at = _skip_name(reply, pos)  # after the SOA's owner; its TTL is the NSEC's
    if _type(reply[at : at + 2]) != wire.SOA:
        return
    ttl = int.from_bytes(reply[at + 4 : at + 8])
    nsec = _RR.pack(NSEC, wire.CLASS_IN, ttl, len(qname) + _NXNAME_SIZE)
    nsec += b"\x01\x00" + qname + _NXNAME_BITMAP
    if (
        signer.held(qname, NSEC, [nsec]) is None
        and apex_of(qname) is not None
        and not budget.allows(above_reserve=True)
    ):
        budget.refused += 1
        raise OverBudget


# The type bitmap of a name that does not exist (NXNAME, RRSIG, NSEC) and the size of the rest
# of its NSEC rdata besides the owner: made once.
_NXNAME_BITMAP = nsec_rdata(b"\x00", (NXNAME,))[3:]
_NXNAME_SIZE = 2 + len(_NXNAME_BITMAP)


class _Signing:
    """The signatures of one reply's RRsets: kept ones, or new ones while the budget and the
    per-reply bound allow."""

    def __init__(
        self,
        signer: Signer,
        apex_of: Callable[[bytes], bytes | None],
        budget: Budget | None,
        missing: bool,
    ) -> None:
        self.signer, self.apex_of, self.budget, self.missing = signer, apex_of, budget, missing
        self.new = 0  # RRsets signed for this reply
        self.refused = False  # an answer or authority RRset could not be signed

    def sigs(
        self, owner: bytes, rtype: int, bodies: list[bytes], optional: bool = False
    ) -> list[bytes] | None:
        """The RRSIG bodies for this RRset; [] when it is not ours to sign; None when it needs
        new ones that may not be made now."""
        if rtype in (RRSIG, _TSIG):
            return []
        apex = self.apex_of(owner)
        if apex is None:
            return []  # not ours to sign
        signer = self.signer
        held = signer.held(owner, rtype, bodies)
        if held is not None:
            return held
        budget = self.budget
        if (
            self.refused
            or self.new >= MAX_NEW_PER_REPLY
            or (budget is not None and not budget.allows(self.missing))
        ):
            if not optional:
                self.refused = True
            return None
        self.new += 1
        before = signer.signed
        sigs = signer.rrsigs(owner, apex, rtype, bodies)
        if budget is not None:
            budget.spend(signer.signed - before)
        return sigs


# Types whose rdata names may be compressed (RFC 1035 types, RFC 3597 4): the offset of the
# (first) name in the rdata. Not SRV (RFC 2782), RRSIG or NSEC (RFC 4034 3.1.7, 4.1.1).
_COMPRESSIBLE = {wire.NS: 0, wire.CNAME: 0, wire.PTR: 0, wire.MX: 2, wire.SOA: 0}


class _Writer:
    """A reply written with its names compressed: each name's longest suffix already written
    becomes a pointer to it."""

    def __init__(self, question: bytes, qname: bytes) -> None:
        self.data = bytearray(12)
        self.data += question
        self.at: dict[bytes, int] = {}  # lower-cased suffix -> its offset
        self.added: list[bytes] = []  # suffixes in the order they went into ``at``
        if question:
            self._remember(qname, 12, len(qname))

    def mark(self) -> tuple[int, int]:
        return len(self.data), len(self.added)

    def undo(self, mark: tuple[int, int]) -> None:
        """Take back what was written since ``mark``, and the suffixes it added."""
        size, added = mark
        del self.data[size:]
        for suffix in self.added[added:]:
            del self.at[suffix]
        del self.added[added:]

    def rrset(self, owner: bytes, bodies: list[bytes], sigs: list[bytes]) -> int:
        """Write the records of an RRset, then its signatures; how many records."""
        for body in bodies:
            self._record(owner, body)
        for sig in sigs:
            self._record(owner, sig)
        return len(bodies) + len(sigs)

    def _record(self, owner: bytes, body: bytes) -> None:
        self.name(owner)
        at = _COMPRESSIBLE.get(_type(body))
        if at is None:
            self.data += body
            return
        data = self.data
        data += body[:8]
        length_at = len(data)
        data += b"\x00\x00"
        rdata = body[10:]
        data += rdata[:at]
        end = _name_end(rdata, at)
        self.name(rdata[at:end])
        if _type(body) == wire.SOA:
            start, end = end, _name_end(rdata, end)
            self.name(rdata[start:end])
        data += rdata[end:]
        _PTR.pack_into(data, length_at, len(data) - length_at - 2)

    def name(self, name: bytes) -> None:
        """Write ``name`` (uncompressed wire), ending in a pointer where it can."""
        key = name.lower()
        data = self.data
        i = 0
        while key[i]:
            found = self.at.get(key[i:])
            if found is not None:
                start = len(data)
                data += name[:i]
                data += _PTR.pack(0xC000 | found)
                self._remember(key, start, i)
                return
            i += key[i] + 1
        start = len(data)
        data += name
        self._remember(key, start, i)

    def _remember(self, key: bytes, start: int, upto: int) -> None:
        """Note the suffixes of ``key`` written at ``start`` that begin before ``upto``."""
        i = 0
        while i < upto and start + i <= _MAX_POINTER:
            suffix = key[i:]
            if suffix not in self.at:
                self.at[suffix] = start + i
                self.added.append(suffix)
            i += key[i] + 1


def _truncated(qid: int, flags: int, qd: int, question: bytes, tail: bytes) -> bytes:
    short = bytearray(_HDR.pack(qid, flags | wire.FLAG_TC, qd, 0, 0, 1 if tail else 0))
    short += question
    short += tail
    return bytes(short)


def _rrsets(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, int, list[bytes]]]:
    """The records of a section as RRsets (owner, type, bodies), in the order they first
    appear."""
    groups: dict[tuple[bytes, int], list[bytes]] = {}
    for owner, body in records:
        groups.setdefault((owner, _type(body)), []).append(body)
    return [(owner, rtype, bodies) for (owner, rtype), bodies in groups.items()]


def _last_target(answer: list[tuple[bytes, bytes]]) -> bytes | None:
    """The target of the last CNAME of an answer (lower-cased), if it has one."""
    for _, body in reversed(answer):
        if _type(body) == wire.CNAME:
            return body[10:].lower()
    return None


def _type(body: bytes) -> int:
    return (body[0] << 8) | body[1]


def _name_end(data: bytes, pos: int) -> int:
    """Where the uncompressed name at ``pos`` ends."""
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1


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
