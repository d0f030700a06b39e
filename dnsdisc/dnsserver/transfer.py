"""Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) over TCP, from the answer index, to
secondaries allowed by network or holding a TSIG key (RFC 8945); and the catalog zone (RFC
9432) that lists our zones.

A transfer streams: the names of the zone are listed once (references, not records), and each
message is encoded from the index as it is sent, waiting while the client's socket is full,
so a zone of 100,000 instances never sits encoded in memory. The SOA that opens a transfer also
closes it. A name that changes while it streams goes out as it is when its turn comes: the next
NOTIFY brings the secondary to the serial that names it.

A service name carries every instance that would be handed out (``RRSet.members``, in the
index's fixed order): a secondary answers unbalanced but with the same records.
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.dnsserver.zone import StaticRecord

log = logging.getLogger(__name__)

AXFR, IXFR = 252, 251
_XFR = (AXFR, IXFR)
# Bytes of records per message (the TSIG record comes on top); BIND and NSD send about as much.
MESSAGE_BYTES = 16000
# Transfers running at once: from one client, and in all (per DNS process). Beyond them a
# transfer is REFUSED: a flood of AXFRs must not take the process from answering queries.
PER_CLIENT = 2
IN_ALL = 16
FUDGE = 300  # s of clock difference a TSIG signature is valid for (RFC 8945 10)
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_TSIG = 250
# dnspython's TSIG rdata and signing, untyped there.
_TSIG_RDATA: Any = dns.rdtypes.ANY.TSIG.TSIG
_SIGN: Any = dns.tsig.sign


def transfer_type(message: bytes) -> int:
    """AXFR or IXFR when ``message`` is a query for one (QR clear, opcode QUERY, one
    question), else 0. Cheap: every query over TCP is looked at."""
    if len(message) < 17 or message[2] & 0xF8 or message[4:6] != b"\x00\x01":
        return 0
    pos = 12
    end = len(message)
    while pos < end:
        n = message[pos]
        if n == 0:
            break
        if n & 0xC0:
            return 0
        pos += n + 1
    if pos + 3 > end:
        return 0
    qtype = (message[pos + 1] << 8) | message[pos + 2]
    return qtype if qtype in _XFR else 0


def catalog_records(apex: bytes, members: Sequence[bytes], ttl: int) -> list[StaticRecord]:
    """The catalog zone's records (RFC 9432) but its SOA and NS (the index adds those):
    ``version`` TXT "2", and a PTR per member zone under ``zones``, its label a hash of the
    member's name so that it stays the same across restarts and nodes."""
    out = [StaticRecord(b"\x07version" + apex, wire.TXT, ttl, wire.txt_rdata([b"2"]))]
    for member in members:
        label = hashlib.sha256(member.lower()).hexdigest()[:16].encode()
        owner = bytes([len(label)]) + label + b"\x05zones" + apex
        out.append(StaticRecord(owner, wire.PTR, ttl, member))
    return out


# A TSIG record's type, class ANY and TTL 0 (RFC 8945 4.2): what ends a signed message.
_TSIG_FIXED = b"\x00\xfa\x00\xff\x00\x00\x00\x00"


def ends_with_tsig(message: bytes) -> bool:
    """Cheap: whether ``message`` may end with a TSIG record (a signed query). Looked at only
    for queries whose additional section is not a plain OPT record; a false positive costs a
    closer look (``Transfers.signed``), never a wrong answer."""
    at = message.rfind(_TSIG_FIXED, 12)
    return at > 0 and at + 10 + int.from_bytes(message[at + 8 : at + 10]) == len(message)


def _last_record(message: bytes) -> int:
    """The offset of the last record of ``message`` (its additional section's last)."""
    qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", message, 4)
    pos = 12
    for _ in range(qdcount):
        pos = wire.skip_name(message, pos) + 4
    start = pos
    for _ in range(ancount + nscount + arcount):
        start = pos
        pos = wire.skip_name(message, pos)
        pos += 10 + int.from_bytes(message[pos + 8 : pos + 10])
    return start


class Refused(Exception):
    """The transfer is not for this client: REFUSED (with its reason logged)."""


class Transfers:
    """The transfers of one DNS process: who may, and how many run."""

    def __init__(self, settings: TransferSettings) -> None:
        self.settings = settings
        self.keyring = {
            dns.name.from_text(k.name): dns.tsig.Key(k.name, k.secret, k.algorithm)
            for k in settings.tsig_keys
        }
        self.running: dict[str, int] = {}
        self.total = 0
        self.served = 0
        self.refused = 0

    async def serve(
        self,
        index: Any,  # AnswerIndex (not imported: the index imports nothing of transfers)
        message: bytes,
        client: str,
        write: Callable[[bytes], None],
        drained: Callable[[], Awaitable[None]],
    ) -> None:
        """Answer one AXFR/IXFR query: every message goes to ``write`` (a DNS message, no
        length), waiting on ``drained`` whenever the socket is full."""
        try:
            query, key = self._verify(message)
        except _Answered as done:
            write(done.reply)
            return
        question = query.question[0]
        qname = question.name.to_wire()
        assert qname is not None
        apex = qname.lower()
        zone = index.zones.get(apex)
        tsig = _Signer(key, query) if key is not None else None
        if zone is None:
            self.refused += 1
            write(_reply(query, dns.rcode.NOTAUTH if tsig else dns.rcode.REFUSED, tsig))
            return
        if key is None and not self.settings.allow.allows(client):
            self.refused += 1
            log.info("transfer of %s to %s refused: not in transfer.allow, no TSIG key",
                     wire.wire_to_text(apex), client)  # fmt: skip
            write(_reply(query, dns.rcode.REFUSED, None))
            return
        if self.running.get(client, 0) >= PER_CLIENT or self.total >= IN_ALL:
            self.refused += 1
            log.info("transfer of %s to %s refused: too many at once", wire.wire_to_text(apex),
                     client)  # fmt: skip
            write(_reply(query, dns.rcode.REFUSED, tsig))
            return
        self.running[client] = self.running.get(client, 0) + 1
        self.total += 1
        try:
            soa = zone.soa
            serial = index.serial
            theirs = _their_serial(query) if question.rdtype == IXFR else None
            kind = "AXFR"
            if theirs is not None and (theirs == serial or _newer(theirs, serial)):
                # The client has this serial or a newer one: the SOA alone says so (RFC 1995 4).
                messages: Iterator[bytes] = iter([_soa_only(message, query, apex, soa)])
                kind = "IXFR (up to date)"
            elif (
                theirs is not None
                and index.journal is not None
                and (found := index.journal.since(apex, theirs)) is not None
            ):
                messages = _ixfr_messages(apex, soa, theirs, found, message, query)
                kind = "IXFR"
            else:
                # Not in the journal (or AXFR): the whole zone, in AXFR form (RFC 1995 4
                # allows it for IXFR).
                messages = _zone_messages(index, zone, apex, message, query)
                kind = "AXFR" if theirs is None else "IXFR (whole zone)"
            count = 0
            for wire_message in messages:
                write(tsig.sign(wire_message) if tsig is not None else wire_message)
                count += 1
                await drained()
            self.served += 1
            log.info("%s of %s (serial %d) to %s: %d messages", kind,
                     wire.wire_to_text(apex), serial, client, count)  # fmt: skip
        finally:
            self.total -= 1
            left = self.running[client] - 1
            if left:
                self.running[client] = left
            else:
                del self.running[client]

    def signed(self, message: bytes, answer: Callable[[bytes], object], tcp: bool = True) -> object:
        """The reply to a query signed with TSIG that is not a transfer, as ``answer`` gives it
        for the query without its TSIG record, signed with the query's key. A secondary asks
        for the SOA this way before it transfers (BIND on every refresh, Knot after a NOTIFY),
        and drops a reply that is not signed: RFC 8945 5.3 wants the reply to a signed
        request signed. A bad signature gets the TSIG error reply, as a transfer would. Over
        UDP, a reply the TSIG pushes past the client's size is the question alone, TC set,
        signed (RFC 8945 5.3): the client asks again over TCP."""
        try:
            query, key = self._verify(message)
        except _Answered as done:
            return done.reply
        if key is None:  # looked signed to ends_with_tsig, but dnspython found no TSIG
            return answer(message)
        arcount = struct.unpack_from("!H", message, 10)[0] - 1
        plain = message[:10] + struct.pack("!H", arcount) + message[12 : _last_record(message)]
        reply = answer(plain)
        if not isinstance(reply, bytes) or len(reply) < 12:
            return reply  # no reply, or forwarded: not ours to sign
        out = _Signer(key, query).sign(reply)
        if not tcp and len(out) > (max(512, query.payload) if query.edns >= 0 else 512):
            truncated = bytearray(_reply(query, dns.rcode.NOERROR, None))
            truncated[2:4] = struct.pack("!H", (reply[2] << 8 | reply[3]) & 0xFFF0 | wire.FLAG_TC)
            out = _Signer(key, query).sign(bytes(truncated))
        return out

    def _verify(self, message: bytes) -> tuple[dns.message.Message, dns.tsig.Key | None]:
        """The query and the key it was signed with (None: unsigned); raises ``_Answered``
        with the reply for a query that gets an error."""
        try:
            # First without checking a signature: to know the key it names, and to answer a
            # bad one with that key's name, algorithm and the query's ID (RFC 8945 5.2).
            plain = dns.message.from_wire(message, keyring=lambda *_: False)
        except dns.exception.DNSException:
            raise _Answered(_formerr(message)) from None
        if len(plain.question) != 1 or plain.question[0].rdclass != dns.rdataclass.IN:
            raise _Answered(_reply(plain, dns.rcode.FORMERR, None))
        if plain.tsig is None:
            return plain, None
        name = plain.tsig.name
        key = self.keyring.get(name)
        trd = plain.tsig[0]
        if key is None or key.algorithm != trd.algorithm:
            self.refused += 1
            log.info("transfer refused: unknown TSIG key %s", name)
            raise _Answered(_tsig_error(plain, dns.rcode.BADKEY, trd, name))
        try:
            query = dns.message.from_wire(message, keyring={name: key})
        except dns.tsig.BadTime:
            self.refused += 1
            log.info("transfer refused: TSIG time out of %d s of ours (key %s)", FUDGE, name)
            signer = _Signer(key, plain)
            reply = signer.sign(_bare(plain), dns.rcode.BADTIME, trd.time_signed)
            raise _Answered(reply) from None
        except (dns.tsig.BadSignature, dns.exception.DNSException):
            self.refused += 1
            log.info("transfer refused: bad TSIG signature (key %s)", name)
            raise _Answered(_tsig_error(plain, dns.rcode.BADSIG, trd, name)) from None
        return query, key


class _Answered(Exception):
    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class _Signer:
    """Signs the messages of one answer (RFC 8945 5.3.1: each with the previous one's MAC)."""

    def __init__(self, key: dns.tsig.Key, query: dns.message.Message) -> None:
        self.key = key
        self.owner = key.name.to_wire()
        self.algorithm = key.algorithm
        self.original_id = query.id
        self.request_mac = query.mac or b""
        self.ctx: Any = None

    def sign(self, message: bytes, error: int = 0, asked: int | None = None) -> bytes:
        """``message`` signed; with ``error`` BADTIME, ``asked`` is the request's Time Signed,
        which the reply carries, ours going in Other Data (RFC 8945 5.2.3)."""
        now = int(time.time())
        other = struct.pack("!HI", (now >> 32) & 0xFFFF, now & 0xFFFFFFFF) if error else b""
        signed = now if asked is None else asked
        template = _TSIG_RDATA(
            dns.rdataclass.ANY, dns.rdatatype.TSIG, self.algorithm, signed, FUDGE, b"",
            self.original_id, error, other,
        )  # fmt: skip
        first = self.ctx is None
        rdata, self.ctx = _SIGN(
            message, self.key, template, signed, self.request_mac if first else None, self.ctx,
            True,
        )  # fmt: skip
        return _with_tsig(message, self.owner, rdata.to_digestable())


def _with_tsig(message: bytes, owner: bytes | None, rdata: bytes) -> bytes:
    assert owner is not None
    arcount = struct.unpack_from("!H", message, 10)[0] + 1
    rr = owner + _RR.pack(_TSIG, dns.rdataclass.ANY, 0, len(rdata)) + rdata
    return message[:10] + struct.pack("!H", arcount) + message[12:] + rr


def _tsig_error(query: dns.message.Message, error: int, trd: Any, name: dns.name.Name) -> bytes:
    """NOTAUTH with an unsigned TSIG naming the error (BADKEY, BADSIG: RFC 8945 5.2.1-2)."""
    rdata = _TSIG_RDATA(
        dns.rdataclass.ANY, dns.rdatatype.TSIG, trd.algorithm, trd.time_signed, trd.fudge, b"",
        query.id, error, b"",
    )  # fmt: skip
    return _with_tsig(_bare(query), name.to_wire(), rdata.to_digestable())


def _bare(query: dns.message.Message) -> bytes:
    """NOTAUTH to ``query``, its question copied."""
    return _reply(query, dns.rcode.NOTAUTH, None)


def _reply(query: dns.message.Message, rcode: int, tsig: _Signer | None) -> bytes:
    """A reply of ``rcode`` with the question and nothing else (signed with ``tsig``)."""
    flags = wire.FLAG_QR | (rcode & 0xF)
    out = bytearray(_HDR.pack(query.id, flags, len(query.question), 0, 0, 0))
    for q in query.question:
        out += q.name.to_wire() or b""
        out += struct.pack("!HH", q.rdtype, q.rdclass)
    return tsig.sign(bytes(out)) if tsig is not None else bytes(out)


def _formerr(message: bytes) -> bytes:
    qid = message[:2] if len(message) >= 2 else b"\x00\x00"
    return qid + struct.pack("!HHHHH", wire.FLAG_QR | wire.FORMERR, 0, 0, 0, 0)


def _their_serial(query: dns.message.Message) -> int | None:
    """The serial of the SOA an IXFR query carries in its authority section (None: none there,
    which RFC 1995 calls a FORMERR; answered with the whole zone)."""
    for rrset in query.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(rrset[0].serial)
    return None


def _newer(a: int, b: int) -> bool:
    """Whether serial ``a`` is after ``b`` (RFC 1982)."""
    return 0 < (a - b) % 2**32 < 2**31


def _with_serial(soa: bytes, serial: int) -> bytes:
    """An SOA record body with another serial (the names in it are not compressed)."""
    pos = 10
    for _ in range(2):  # MNAME, RNAME
        while soa[pos]:
            pos += soa[pos] + 1
        pos += 1
    return soa[:pos] + struct.pack("!I", serial) + soa[pos + 4 :]


def _ixfr_messages(
    apex: bytes,
    soa: bytes,
    theirs: int,
    found: tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]],
    message: bytes,
    query: dns.message.Message,
) -> Iterator[bytes]:
    """An incremental answer (RFC 1995 4): our SOA, then one condensed difference (their SOA,
    what was removed, our SOA, what was added), then our SOA."""
    removed, added = found
    records: list[tuple[bytes, bytes]] = [(apex, soa), (apex, _with_serial(soa, theirs))]
    records += removed
    records.append((apex, soa))
    records += added
    records.append((apex, soa))
    yield from _packed(records, message, query)


def _packed(
    records: Iterable[tuple[bytes, bytes]], message: bytes, query: dns.message.Message
) -> Iterator[bytes]:
    """``records`` (owner, body) in messages of about ``MESSAGE_BYTES``, the question in the
    first."""
    question = _question(message)
    flags = wire.FLAG_QR | wire.FLAG_AA
    out = bytearray(12)
    out += question
    count = 0
    first = True
    for owner, body in records:
        if len(out) + len(owner) + len(body) > MESSAGE_BYTES and count:
            _HDR.pack_into(out, 0, query.id, flags, 1 if first else 0, count, 0, 0)
            yield bytes(out)
            out, count, first = bytearray(12), 0, False
        out += owner
        out += body
        count += 1
    _HDR.pack_into(out, 0, query.id, flags, 1 if first else 0, count, 0, 0)
    yield bytes(out)


def _question(message: bytes) -> bytes:
    end = 12
    while message[end]:
        end += message[end] + 1
    return message[12 : end + 5]


def _soa_only(message: bytes, query: dns.message.Message, apex: bytes, soa: bytes) -> bytes:
    out = bytearray(_HDR.pack(query.id, wire.FLAG_QR | wire.FLAG_AA, 1, 1, 0, 0))
    out += _question(message)
    out += b"\xc0\x0c" + soa
    return bytes(out)


def _zone_messages(
    index: Any, zone: Any, apex: bytes, message: bytes, query: dns.message.Message
) -> Iterator[bytes]:
    """The zone's records in messages: its SOA, every name of the zone with its records (the
    apex's NS and the rest; no SOA), its SOA again."""
    soa = zone.soa
    names = [name for name in index.nodes if index.find_zone(name) is zone]
    names.sort(key=lambda n: (n != apex, len(n), n))  # the apex first, then shorter names

    def records() -> Iterator[tuple[bytes, bytes]]:
        yield apex, soa
        for name in names:
            node = index.nodes.get(name)
            if node is None:
                continue  # gone since the transfer began
            for rtype, rrset in node.rrsets.items():
                if rtype != wire.SOA:
                    for item in rrset.members:
                        yield name, item.body
        yield apex, soa

    return _packed(records(), message, query)
