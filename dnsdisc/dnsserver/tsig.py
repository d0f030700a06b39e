"""TSIG (RFC 8945): checking the signature of a message signed with one of our keys, and
signing what we send back, through dnspython's ``dns.tsig``. Zone transfers (transfer.py) and
the signed queries secondaries send before them (their SOA checks: ``Tsig.signed``) both use
it; what the keys may do is theirs to decide, not this module's."""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Sequence
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
from dnsdisc.dnsserver.settings import TsigKey

log = logging.getLogger(__name__)

FUDGE = 300  # s of clock difference a TSIG signature is valid for (RFC 8945 10)
_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_TSIG = 250
# dnspython's TSIG rdata and signing, untyped there.
_TSIG_RDATA: Any = dns.rdtypes.ANY.TSIG.TSIG
_SIGN: Any = dns.tsig.sign

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


class Tsig:
    """Our TSIG keys: checks signed messages and signs the replies."""

    def __init__(self, keys: Sequence[TsigKey]) -> None:
        self.keyring = {
            dns.name.from_text(k.name): dns.tsig.Key(k.name, k.secret, k.algorithm) for k in keys
        }
        self.refused = 0  # messages refused for their signature

    def signed(self, message: bytes, answer: Callable[[bytes], object], tcp: bool = True) -> object:
        """The reply to a query signed with TSIG that is not a transfer, as ``answer`` gives it
        for the query without its TSIG record, signed with the query's key. A secondary asks
        for the SOA this way before it transfers (BIND on every refresh, Knot after a NOTIFY),
        and drops a reply that is not signed: RFC 8945 5.3 wants the reply to a signed
        request signed. A bad signature gets the TSIG error reply, as a transfer would. Over
        UDP, a reply the TSIG pushes past the client's size is the question alone, TC set,
        signed (RFC 8945 5.3): the client asks again over TCP."""
        try:
            query, key = self.verify(message)
        except Answered as done:
            return done.reply
        if key is None:  # looked signed to ends_with_tsig, but dnspython found no TSIG
            return answer(message)
        arcount = struct.unpack_from("!H", message, 10)[0] - 1
        plain = message[:10] + struct.pack("!H", arcount) + message[12 : _last_record(message)]
        reply = answer(plain)
        if not isinstance(reply, bytes) or len(reply) < 12:
            return reply  # no reply, or forwarded: not ours to sign
        out = MessageSigner(key, query).sign(reply)
        if not tcp and len(out) > (max(512, query.payload) if query.edns >= 0 else 512):
            truncated = bytearray(bare_reply(query, dns.rcode.NOERROR, None))
            truncated[2:4] = struct.pack("!H", (reply[2] << 8 | reply[3]) & 0xFFF0 | wire.FLAG_TC)
            out = MessageSigner(key, query).sign(bytes(truncated))
        return out

    def verify(self, message: bytes) -> tuple[dns.message.Message, dns.tsig.Key | None]:
        """The query and the key it was signed with (None: unsigned); raises ``Answered``
        with the reply for a query that gets an error."""
        try:
            # First without checking a signature: to know the key it names, and to answer a
            # bad one with that key's name, algorithm and the query's ID (RFC 8945 5.2).
            plain = dns.message.from_wire(message, keyring=lambda *_: False)
        except dns.exception.DNSException:
            raise Answered(_formerr(message)) from None
        if len(plain.question) != 1 or plain.question[0].rdclass != dns.rdataclass.IN:
            raise Answered(bare_reply(plain, dns.rcode.FORMERR, None))
        if plain.tsig is None:
            return plain, None
        name = plain.tsig.name
        key = self.keyring.get(name)
        trd = plain.tsig[0]
        if key is None or key.algorithm != trd.algorithm:
            self.refused += 1
            log.info("TSIG: refused a message signed with an unknown key %s", name)
            raise Answered(_tsig_error(plain, dns.rcode.BADKEY, trd, name))
        try:
            query = dns.message.from_wire(message, keyring={name: key})
        except dns.tsig.BadTime:
            self.refused += 1
            log.info("TSIG: refused a time out of %d s of ours (key %s)", FUDGE, name)
            signer = MessageSigner(key, plain)
            reply = signer.sign(_bare(plain), dns.rcode.BADTIME, trd.time_signed)
            raise Answered(reply) from None
        except (dns.tsig.BadSignature, dns.exception.DNSException):
            self.refused += 1
            log.info("TSIG: refused a bad signature (key %s)", name)
            raise Answered(_tsig_error(plain, dns.rcode.BADSIG, trd, name)) from None
        return query, key


class Answered(Exception):
    """The message gets this reply (an error) and nothing else."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


class MessageSigner:
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
    return bare_reply(query, dns.rcode.NOTAUTH, None)


def bare_reply(query: dns.message.Message, rcode: int, tsig: MessageSigner | None) -> bytes:
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
