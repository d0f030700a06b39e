"""Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995) over TCP, from the answer index, to
secondaries allowed by network or holding a TSIG key (tsig.py). The catalog zone (RFC 9432,
zone.catalog_records) is transferred as any other.

A transfer streams: the names of the zone are listed once (references, not records), and each
message is encoded from the index as it is sent, waiting while the client's socket is full,
so a zone of 100,000 instances never sits encoded in memory. The SOA that opens a transfer also
closes it. A name that changes while it streams goes out as it is when its turn comes: the next
NOTIFY brings the secondary to the serial that names it.

A service name carries every instance that would be handed out (``RRSet.members``, in the
index's fixed order): a secondary answers unbalanced but with the same records.

While the process signs (DNSSEC, the index publishes a signer's keys), a transfer is the zone
signed (zonesign.py): every RRset with its RRSIGs, and an NSEC chain in canonical order. An
IXFR then gets the whole zone in AXFR form (RFC 1995 4): the journal holds record differences,
and a signed difference would have to remove the exact RRSIGs and NSEC records the secondary
holds, which our cache may have made again since (validity, a key rollover), and the NSEC
records of the names beside each one added or removed. A whole zone is always right, and
repeated it costs little: its signatures are kept (``Signer.zone_rrsigs``).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Iterable, Iterator
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
from dnsdisc.dnsserver.dnssec import Signer
from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.dnsserver.tsig import Answered, MessageSigner, Tsig, bare_reply
from dnsdisc.dnsserver.zonesign import cuts, delegation, signed_records

log = logging.getLogger(__name__)

AXFR, IXFR = 252, 251
_XFR = (AXFR, IXFR)
# Bytes of records per message (the TSIG record comes on top); BIND and NSD send about as much.
MESSAGE_BYTES = 16000
# Names of the index looked at in one turn of the event loop while a transfer lists a zone's.
NAMES_SLICE = 50_000
# Transfers running at once: from one client, and in all (per DNS process). Beyond them a
# transfer is REFUSED: a flood of AXFRs must not take the process from answering queries. 4 from
# one address: a secondary asks for its zones at once (NSD: the forward and reverse zones), and
# two secondaries may share an address; a transfer gives the loop a turn after every message, so
# they overlap, and one REFUSED waits for the SOA retry (60 s). With 2, NSD and Knot on one
# loopback address were refused a zone in CI.
PER_CLIENT = 4
IN_ALL = 16
_HDR = struct.Struct("!HHHHHH")


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


class Transfers:
    """The transfers of one DNS process: who may, and how many run."""

    def __init__(self, settings: TransferSettings, tsig: Tsig | None = None) -> None:
        self.settings = settings
        self.tsig = tsig or Tsig(settings.tsig_keys)
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
            query, key = self.tsig.verify(message)
        except Answered as done:
            write(done.reply)
            return
        question = query.question[0]
        qname = question.name.to_wire()
        assert qname is not None
        apex = qname.lower()
        zone = index.zones.get(apex)
        tsig = MessageSigner(key, query) if key is not None else None
        if zone is None:
            self.refused += 1
            write(bare_reply(query, dns.rcode.NOTAUTH if tsig else dns.rcode.REFUSED, tsig))
            return
        if key is None and not self.settings.allow.allows(client):
            self.refused += 1
            log.info("transfer of %s to %s refused: not in transfer.allow, no TSIG key",
                     wire.wire_to_text(apex), client)  # fmt: skip
            write(bare_reply(query, dns.rcode.REFUSED, None))
            return
        if self.running.get(client, 0) >= PER_CLIENT or self.total >= IN_ALL:
            self.refused += 1
            log.info("transfer of %s to %s refused: too many at once", wire.wire_to_text(apex),
                     client)  # fmt: skip
            write(bare_reply(query, dns.rcode.REFUSED, tsig))
            return
        self.running[client] = self.running.get(client, 0) + 1
        self.total += 1
        try:
            soa = zone.soa
            serial = index.serial
            theirs = _their_serial(query) if question.rdtype == IXFR else None
            kind = "AXFR"
            # The keys this index publishes sign: the transfer carries that DNSKEY RRset. Taken
            # once, so that a rollover step during the transfer does not mix two key sets.
            signer: Signer | None = index.signer
            if signer is not None and not signer.active:
                signer = None  # no key signs (none yet): nothing to sign with
            if theirs is not None and (theirs == serial or _newer(theirs, serial)):
                # The client has this serial or a newer one: the SOA alone says so (RFC 1995 4).
                messages: Iterator[bytes] = iter([_soa_only(message, query, apex, soa)])
                kind = "IXFR (up to date)"
            elif (
                theirs is not None
                and signer is None
                and index.journal is not None
                and (found := index.journal.since(apex, theirs)) is not None
            ):
                messages = _ixfr_messages(apex, soa, theirs, found, message, query)
                kind = "IXFR"
            else:
                # Not in the journal (or AXFR): the whole zone, in AXFR form (RFC 1995 4
                # allows it for IXFR).
                names = await zone_names(index, zone) if signer is None else None
                messages = _zone_messages(index, zone, apex, message, query, signer, names)
                kind = "AXFR" if theirs is None else "IXFR (whole zone)"
                if signer is not None:
                    kind = "signed " + kind
            count = 0
            for wire_message in messages:
                write(tsig.sign(wire_message) if tsig is not None else wire_message)
                count += 1
                await drained()
                # A client that keeps up never fills the socket (``drained`` then does not
                # wait): queries, and the supervisor's pings, get their turn between messages
                # all the same. Signing a message of names never signed takes tens of ms
                # (bench/transfer.py --signed measures the slowest query during a transfer);
                # unsigned, a million instances' zone streamed ~10 s without a turn, and the
                # worker was killed for not answering its pings (bench/million.py).
                await asyncio.sleep(0)
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


async def zone_names(index: Any, zone: Any) -> list[bytes]:
    """The names of ``zone`` as a transfer sends them: the apex, then shorter names first (by
    length, then bytes), listed ``NAMES_SLICE`` at a time with the event loop's other work in
    between. A million instances' zone has 1.3 million names: listed and sorted in one go, it
    kept a DNS worker from its queries and its pings for ~3.5 s, and the supervisor killed it
    (the transfer with it). Names that come meanwhile are in the next transfer; those that go
    are skipped (``_zone_messages``)."""
    every = list(index.nodes)  # a C-level copy of the keys: ~10 ms a million
    find = index.find_zone
    names: list[bytes] = []
    for start in range(0, len(every), NAMES_SLICE):
        names += [name for name in every[start : start + NAMES_SLICE] if find(name) is zone]
        await asyncio.sleep(0)
    # Two C-level sorts (stable) instead of one with a Python key: by bytes, then by length.
    # The apex is the zone's shortest name: first.
    names.sort()
    await asyncio.sleep(0)
    names.sort(key=len)
    return names


def _zone_messages(
    index: Any,
    zone: Any,
    apex: bytes,
    message: bytes,
    query: dns.message.Message,
    signer: Signer | None = None,
    names: list[bytes] | None = None,
) -> Iterator[bytes]:
    """The zone's records in messages: its SOA, every name of the zone with its records (the
    apex's NS and the rest; no SOA), its SOA again; with ``signer``, signed (zonesign.py).
    ``names``: the zone's names in their order (``zone_names``), else listed here."""
    if signer is not None:
        return _packed(signed_records(index, zone, apex, signer), message, query)
    soa = zone.soa
    if names is None:
        names = [name for name in index.nodes if index.find_zone(name) is zone]
        names.sort(key=lambda n: (n != apex, len(n), n))  # the apex first, then shorter names
    delegated = cuts(index, zone)

    def records() -> Iterator[tuple[bytes, bytes]]:
        yield apex, soa
        for name in names:
            node = index.nodes.get(name)
            if node is None:
                continue  # gone since the transfer began
            for rtype, rrset in node.peek().items():
                if rtype != wire.SOA:
                    for item in rrset.members:
                        yield name, item.body
        for child in delegated:  # zones served inside this one: delegated (zonesign.cuts)
            for body in delegation(index, child).get(wire.NS, ()):
                yield child, body
        yield apex, soa

    return _packed(records(), message, query)
