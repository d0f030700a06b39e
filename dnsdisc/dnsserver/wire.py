"""Bytes in and out: query parsing, record encoding, header building.

This module knows DNS, not services. Parsing is hand-written because it runs on every query and a
general DNS library costs tens of microseconds per packet; encoding helpers run when the registry
changes, and produce the pre-encoded material the responder splices together.

Names are handled in wire form (length-prefixed labels, lower-cased for lookups). Record bodies
(``type, class, ttl, rdlength, rdata``) are kept without their owner name, so the responder can
put a two-byte compression pointer to the question in front of them.
"""

from __future__ import annotations

import functools
import socket
import struct
from dataclasses import dataclass

import dns.name

from dnsdisc.errors import MalformedQueryError

# Record types and classes used here (RFC 1035, 2782, 3596, 6891).
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 255
CLASS_IN = 1
NSID = 3  # the NSID EDNS option code (RFC 5001)

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended rcode: upper 8 bits go into the OPT record

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800
DO_BIT = 0x8000

HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_TYPE_CLASS = struct.Struct("!HH")
_U16 = struct.Struct("!H")

MAX_NAME = 255
UDP_LEGACY_SIZE = 512
# Our advertised EDNS payload size: the 2020 DNS flag day value, safe from IP fragmentation.
EDNS_SIZE = 1232


class ShortPacketError(Exception):
    """Not even a DNS header: the packet is dropped without a reply."""


class FormatError(MalformedQueryError):
    """The header is readable but the rest is not a well-formed query: answer FORMERR."""


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    qdcount: int
    # The question's name as the client sent it (case kept) and the whole question section.
    qname: bytes = b""
    qtype: int = 0
    qclass: int = 0
    question: bytes = b""
    edns: bool = False
    udp_size: int = UDP_LEGACY_SIZE
    edns_version: int = 0
    edns_flags: int = 0
    # The OPT record holds an NSID option (RFC 5001): the reply says who answered.
    nsid: bool = False


def read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """Read an uncompressed name at ``pos``; return its wire bytes and the offset after it.

    A question needs no compression, so a pointer there is a format error, as are label types
    other than the plain one and names over 255 octets."""
    start = pos
    end = len(data)
    while True:
        if pos >= end:
            raise FormatError("name runs past the end of the packet")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:
            raise FormatError("compressed or extended label in the question")
        pos += length + 1
    if pos - start > MAX_NAME:
        raise FormatError("name longer than 255 octets")
    if pos > end:
        raise FormatError("name runs past the end of the packet")
    return data[start:pos], pos


def skip_name(data: bytes, pos: int) -> int:
    """Skip a possibly compressed name in a section other than the question."""
    end = len(data)
    while True:
        if pos >= end:
            raise FormatError("name runs past the end of the packet")
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length > 63:
            raise FormatError("extended label type")
        pos += length + 1


def parse_query(data: bytes) -> Query:
    """Decode the header, the first question and any EDNS OPT record."""
    if len(data) < HEADER.size:
        raise ShortPacketError
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    query = Query(qid, flags, qdcount)
    if qdcount == 0 or flags & (FLAG_QR | OPCODE_MASK):
        # A response (dropped) or another opcode (NOTIMP): the rest is not ours to read.
        return query
    qname, pos = read_name(data, 12)
    if pos + 4 > len(data):
        raise FormatError("question truncated")
    query.qname = qname
    query.qtype, query.qclass = _TYPE_CLASS.unpack_from(data, pos)
    pos += 4
    query.question = data[12:pos]
    if qdcount != 1:
        return query
    # Records in the answer/authority sections of a query are unusual but legal; an OPT there is
    # not (RFC 6891 section 6.1.1).
    for section, count in ((1, ancount), (2, nscount), (3, arcount)):
        for _ in range(count):
            owner = pos
            pos = skip_name(data, pos)
            if pos + 10 > len(data):
                raise FormatError("record truncated")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(data, pos)
            pos += 10 + rdlen
            if pos > len(data):
                raise FormatError("rdata truncated")
            if rtype == OPT:
                if section != 3 or query.edns or data[owner] != 0:
                    raise FormatError("misplaced, repeated or non-root OPT record")
                query.edns = True
                query.udp_size = max(rclass, UDP_LEGACY_SIZE)
                query.edns_version = (ttl >> 16) & 0xFF
                query.edns_flags = ttl & 0xFFFF
                if rdlen:
                    query.nsid = _has_option(data, pos - rdlen, pos, NSID)
    return query


def _has_option(data: bytes, pos: int, end: int, code: int) -> bool:
    """Whether the options from ``pos`` to ``end`` (an OPT's RDATA) hold ``code``. Framing
    is not judged here: the options the responder acts on are read where they are used, and
    an option past the end of its record counts as absent."""
    while pos + 4 <= end:
        found, size = _TYPE_CLASS.unpack_from(data, pos)
        if pos + 4 + size > end:
            return False
        if found == code:
            return True
        pos += 4 + size
    return False


# -- encoding ------------------------------------------------------------------------------

# Entries in each cache of encodings below: enough for the services being changed now (a
# service is re-encoded whole on every change), not for the whole registry, whose names the
# answer index holds already; at 100k instances a cache of everything cost ~35 MiB per process.
ENCODING_CACHE = 1 << 12


@functools.lru_cache(maxsize=ENCODING_CACHE)
def labels_to_wire(labels: tuple[str, ...], suffix: bytes = b"\x00") -> bytes:
    """Wire form of already-validated ASCII labels followed by ``suffix`` (a wire name)."""
    out = bytearray()
    for lab in labels:
        raw = lab.encode("ascii")
        out.append(len(raw))
        out += raw
    out += suffix
    if len(out) > MAX_NAME:
        raise ValueError("name longer than 255 octets")
    return bytes(out)


def text_to_wire(name: str, origin: bytes | None = None) -> bytes:
    """Lower-cased wire form of a name in presentation format; relative names take ``origin``."""
    parsed = dns.name.from_text(name, origin=_wire_to_name(origin) if origin else dns.name.root)
    wire = parsed.to_wire()
    assert wire is not None
    return wire.lower()


def _wire_to_name(wire: bytes) -> dns.name.Name:
    return dns.name.from_wire(wire, 0)[0]


def wire_to_text(wire: bytes) -> str:
    """Presentation form with the trailing dot, for logs, JSON and tests."""
    return _wire_to_name(wire).to_text()


def is_subdomain(name: bytes, apex: bytes) -> bool:
    """True when ``name`` is ``apex`` or below it (both lower-cased wire names)."""
    if not name.endswith(apex):
        return False
    if len(name) == len(apex):
        return True
    # Label boundary check: walk the labels of name until we land exactly on the suffix.
    cut = len(name) - len(apex)
    pos = 0
    while pos < cut:
        pos += name[pos] + 1
    return pos == cut


def parent_names(name: bytes) -> list[bytes]:
    """The proper ancestors of a wire name, nearest first, root excluded."""
    out = []
    pos = name[0] + 1
    while name[pos] != 0:
        out.append(name[pos:])
        pos += name[pos] + 1
    return out


def owner_pointer(name: bytes, qname: bytes) -> bytes:
    """Encode ``name`` for a reply whose question name ``qname`` starts at offset 12.

    The longest common label suffix becomes a pointer into the question; the question is copied
    from the client byte for byte, so its labels lie where they lie in our lower-cased copy."""
    if name == qname:
        return b"\xc0\x0c"
    # Offsets of every label start in qname, keyed by the suffix starting there.
    suffixes = {}
    pos = 0
    while qname[pos] != 0:
        suffixes[qname[pos:]] = pos
        pos += qname[pos] + 1
    pos = 0
    while name[pos] != 0:
        at = suffixes.get(name[pos:])
        if at is not None:
            return name[:pos] + _U16.pack(0xC000 | (12 + at))
        pos += name[pos] + 1
    return name


def rr_body(rtype: int, ttl: int, rdata: bytes) -> bytes:
    """A record without its owner name."""
    return _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


# Cached: the answer index encodes the same names and addresses again on every rebuild of a
# service, and these are pure functions of their (hashable) arguments.
@functools.lru_cache(maxsize=ENCODING_CACHE)
def address_rdata(address: str) -> tuple[int, bytes]:
    """(A or AAAA, rdata) for a valid address string. inet_pton, not ipaddress: a registry of
    100k instances is encoded at start, and this is 30 times faster."""
    if ":" in address:
        return AAAA, socket.inet_pton(socket.AF_INET6, address)
    return A, socket.inet_pton(socket.AF_INET, address)


def srv_rdata(priority: int, weight: int, port: int, target: bytes) -> bytes:
    # RFC 2782 / RFC 3597: the target is never compressed.
    return struct.pack("!HHH", priority, weight, port) + target


def txt_rdata(strings: list[bytes]) -> bytes:
    out = bytearray()
    for s in strings:
        if len(s) > 255:
            raise ValueError("TXT character-string longer than 255 octets")
        out.append(len(s))
        out += s
    return bytes(out)


def soa_rdata(
    mname: bytes, rname: bytes, serial: int, refresh: int, retry: int, expire: int, minimum: int
) -> bytes:
    return mname + rname + struct.pack("!IIIII", serial, refresh, retry, expire, minimum)


def header(qid: int, flags: int, qd: int, an: int, ns: int, ar: int) -> bytes:
    return HEADER.pack(qid, flags, qd, an, ns, ar)


def opt_record(payload: int, ext_rcode: int = 0, do: bool = False, options: bytes = b"") -> bytes:
    """Our OPT record: root owner, our payload size, version 0, ``options`` (whole options,
    each with its code and length)."""
    ttl = (ext_rcode << 24) | (DO_BIT if do else 0)
    return b"\x00" + _RR_FIXED.pack(OPT, payload, ttl, len(options)) + options


@functools.lru_cache(maxsize=ENCODING_CACHE)
def reverse_pointer(address: str) -> bytes:
    """The in-addr.arpa / ip6.arpa wire name of a valid address, built from its bytes."""
    rtype, packed = address_rdata(address)
    if rtype == A:
        return b"".join([_OCTET[octet] for octet in reversed(packed)]) + _IN_ADDR_ARPA
    return b"".join([_NIBBLE[c] for c in reversed(packed.hex())]) + _IP6_ARPA


_IN_ADDR_ARPA = b"\x07in-addr\x04arpa\x00"
_IP6_ARPA = b"\x03ip6\x04arpa\x00"
# Wire labels of the decimal octets and of the hex digits.
_OCTET = [bytes([len(str(i))]) + str(i).encode() for i in range(256)]
_NIBBLE = {c: b"\x01" + c.encode() for c in "0123456789abcdef"}
