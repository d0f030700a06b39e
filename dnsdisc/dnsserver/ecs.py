"""EDNS Client Subnet (RFC 7871): where the client is, as a resolver tells it.

``parse`` reads the option of a query and refuses what RFC 7871 section 7.1.1 calls malformed
(FORMERR): a family other than 1 (IPv4) or 2 (IPv6), a source prefix longer than the family's
addresses, an address longer than the source prefix needs, or bits set beyond it. ``option``
makes the option an answer echoes: the query's family, source prefix and address, with the
SCOPE PREFIX-LENGTH that says for which addresses the answer holds (0: for every client).

A step towards #18 (answers by the client's zone): nothing here is wired into the answer path
yet. The client's address, ECS or not, is what ``client_of`` returns.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from dnsdisc.dnsserver import ednsopt

OPTION = 8  # the EDNS option code of client subnet
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


def client_of(query: bytes, source: bytes) -> tuple[bytes, Subnet | None]:
    """Where the client is: the ECS address (zero-padded) when the query carries the option,
    else ``source``, the packet's source address packed; and the parsed option, if any.
    Raises Malformed for an option that must get FORMERR, or records that cannot be walked."""
    try:
        found = ednsopt.find(query, OPTION)
    except ednsopt.Malformed as exc:
        raise Malformed(str(exc)) from None
    if found is None:
        return source, None
    subnet = parse(found[0])
    return subnet.address, subnet
