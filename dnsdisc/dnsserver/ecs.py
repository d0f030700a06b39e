"""EDNS Client Subnet (RFC 7871): where the client is, as a resolver tells it.

``parse`` reads the option of a query and refuses what RFC 7871 section 7.1.1 calls malformed
(FORMERR): a family other than 1 (IPv4) or 2 (IPv6), a source prefix longer than the family's
addresses, an address longer than the source prefix needs, or bits set beyond it. ``option``
makes the option an answer echoes: the query's family, source prefix and address, with the
SCOPE PREFIX-LENGTH that says for which addresses the answer holds (0: for every client).

The responder asks ``find`` for every query that may carry an option and, when there is one,
answers for the client it names and ``echo``es it. Replies are made and cached without the
option; it is added to the encoded reply, whose OPT record is last (ending with the options the
responder put there, NSID or an extended error, if any).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from dnsdisc.dnsserver import ednsopt

OPTION = 8  # the EDNS option code of client subnet
# Queries whose options a responder remembers (see Responder._optioned); forgotten when full.
MEMORY = 8192
_FAMILIES = {1: 32, 2: 128}  # family -> address bits
_HEAD = struct.Struct("!HBB")


class Malformed(Exception):
    """An ECS option RFC 7871 says to answer with FORMERR."""


@dataclass(frozen=True, slots=True)
class Subnet:
    family: int  # 1 IPv4, 2 IPv6
    source: int  # SOURCE PREFIX-LENGTH
    address: bytes  # the address, padded with zero bytes to its family's length

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network((self.address, self.source))


def parse(data: bytes) -> Subnet:
    """The option's data as a Subnet; Malformed for what must get FORMERR."""
    if len(data) < 4:
        raise Malformed("ECS option shorter than its fixed part")
    family, source, scope = _HEAD.unpack_from(data)
    bits = _FAMILIES.get(family)
    if bits is None:
        raise Malformed(f"ECS family {family} is neither 1 (IPv4) nor 2 (IPv6)")
    if source > bits:
        raise Malformed(f"ECS source prefix /{source} is longer than the family's /{bits}")
    address = data[4:]
    if len(address) != (source + 7) // 8:
        raise Malformed(f"ECS address of {len(address)} bytes for a /{source} source prefix")
    if address and source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise Malformed("ECS address has bits set beyond its source prefix")
    # SCOPE PREFIX-LENGTH must be 0 in a query (7.1.1); one that is not is ignored, not refused.
    del scope
    return Subnet(family, source, address + bytes(bits // 8 - len(address)))


def option(subnet: Subnet, scope: int) -> bytes:
    """The option's data for an answer: the query's family, source prefix and address, and
    ``scope``, the prefix length the answer holds for."""
    return (
        _HEAD.pack(subnet.family, subnet.source, scope) + subnet.address[: (subnet.source + 7) // 8]
    )


_OPT_START = b"\x00\x00\x29"  # an OPT record: the root, type 41
_U16 = struct.Struct("!H")
_RR_HEAD = struct.Struct("!HHHHHH")


class Found:
    """What a query says of its client: the ``subnet``, the query's UDP payload size, the
    query after its ID without the option (``plain``: answered, and cached, as one without
    ECS; None where the option is not in the usual place), and the echoes made so far (by
    scope: the whole option)."""

    __slots__ = ("echoes", "plain", "subnet", "udp_size")

    def __init__(self, subnet: Subnet, udp_size: int, plain: bytes | None) -> None:
        self.subnet = subnet
        self.udp_size = udp_size
        self.plain = plain
        self.echoes: dict[int, bytes] = {}

    def echo(self, scope: int) -> bytes:
        made = self.echoes.get(scope)
        if made is None:
            data = option(self.subnet, scope)
            made = self.echoes[scope] = _U16.pack(OPTION) + _U16.pack(len(data)) + data
        return made


def find(data: bytes) -> Found | None:
    """The query's client subnet (None without one); Malformed for one that must get FORMERR,
    or for records that cannot be walked."""
    try:
        found = ednsopt.scan(data, OPTION)
    except ednsopt.Malformed as exc:
        raise Malformed(str(exc)) from None
    if found is None:
        return None
    opt, at, size = found
    subnet = parse(data[at + 4 : at + 4 + size])
    udp_size = data[opt + 3] << 8 | data[opt + 4]
    plain = None
    if opt + 11 + (data[opt + 9] << 8 | data[opt + 10]) == len(data):  # the OPT record is last
        rdlen = data[opt + 9] << 8 | data[opt + 10]
        plain = b"".join((
            data[2 : opt + 9],
            _U16.pack(rdlen - 4 - size),
            data[opt + 11 : at],
            data[at + 4 + size :],
        ))  # fmt: skip
    return Found(subnet, udp_size, plain)


def echo(reply: bytes, found: Found, scope: int, limit: int, present: int = 0) -> tuple[bytes, int]:
    """``reply`` with the option echoed for ``found`` at ``scope``, in its OPT record (our
    replies end with one, whose last ``present`` bytes are options; others go as they are). A
    reply the option would push past ``limit`` (over UDP, the client's size) goes as an empty
    one with TC: the client asks again over TCP, where it fits. Also returns the bytes of
    options the OPT record ends with then (``present`` when the option was not added)."""
    opt = len(reply) - 11 - present
    if (
        opt < 12
        or reply[opt : opt + 3] != _OPT_START
        or (reply[opt + 9] << 8 | reply[opt + 10]) != present
    ):
        return reply, present
    tail = found.echo(scope)
    total = present + len(tail)
    out = b"".join((reply[: opt + 9], _U16.pack(total), reply[opt + 11 :], tail))
    if len(out) <= limit:
        return out, total
    # Truncated: the header (TC, no records but the OPT) and the question, then the OPT.
    head = _RR_HEAD.unpack_from(reply)
    qend = ednsopt.skip_name(reply, 12) + 4
    short = b"".join((
        _RR_HEAD.pack(head[0], head[1] | 0x0200, head[2], 0, 0, 1),
        reply[12:qend],
        reply[opt : opt + 9],
        _U16.pack(total),
        reply[opt + 11 :],
        tail,
    ))  # fmt: skip
    return short, total
