"""The naming scheme: which owner names a service and its instances appear under.

Pure functions of the domain and registry values; the answer index uses them when it builds the
names of a service, so the query path never parses a name's meaning, it only looks it up.

Under the domain D:
  <service>.D                 A, AAAA, SRV of all instances; TXT = service metadata
  _<service>._tcp.D / _udp.D  SRV of the instances with that protocol (RFC 2782)
  _<service>._<tag>.D         SRV of the instances carrying the tag
  <tag>.<service>.D           A, AAAA, SRV of the instances carrying the tag
  <id>.<service>.D            the instance: A or AAAA, SRV, TXT = its metadata (wins over a tag
                              of the same label)
  reverse name of an address  PTR -> <id>.<service>.D, for local addresses (``serves_ptr``)
  <query>.query.D             a named query: A, AAAA, SRV (targets <id>.<service>.D), TXT
  _<query>._tcp.query.D       SRV of the query's instances with that protocol (and _udp)
With DNS-SD (RFC 6763; service setting ``dnssd``):
  _services._dns-sd._udp.D    PTR -> _<service>._<proto>.D of each browsable service
  _<service>._<proto>.D       PTR -> <id>._<service>._<proto>.D of each instance handed out
  <id>._<service>._<proto>.D  the instance as DNS-SD names it: SRV, TXT (its metadata)
  b._dns-sd._udp.<reverse zone>, lb._dns-sd._udp.<reverse zone>   PTR -> D (browse domains)
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Container

from dnsdisc.dnsserver.wire import labels_to_wire, parent_names, reverse_pointer

PROTOCOLS = ("tcp", "udp")
# The label named queries answer under (no service may take it).
QUERY_LABEL = "query"


def query_key(name: str) -> str:
    """The key a named query's names are rebuilt under in an answer sink: never a service's
    (a service name is one label, so it has no ".")."""
    return f"{name}.{QUERY_LABEL}"


def is_query_key(key: str) -> bool:
    return "." in key


# IPv4 ranges whose reverse names no public delegation can hold for us to shadow: what Python's
# ipaddress calls private (RFC 1918, loopback, link-local, documentation, benchmarking, ...) and
# the shared range 100.64/10 (RFC 6598).
_LOCAL_V4 = tuple(
    map(
        ipaddress.IPv4Network,
        (
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.0.0.0/29", "192.0.0.170/31", "192.0.2.0/24", "192.168.0.0/16",
            "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
            "255.255.255.255/32",
        ),
    )
)  # fmt: skip


def _by_first_octet() -> list[bool | tuple[tuple[int, int], ...]]:
    """For each first octet: True when every address under it is local, else the (network, mask)
    integers to test (none: never local), so most addresses are decided by one lookup (a start-up
    of 100k instances tests every one in every DNS worker)."""
    table: list[bool | tuple[tuple[int, int], ...]] = []
    for octet in range(256):
        whole = any(n.prefixlen <= 8 and ipaddress.IPv4Address(octet << 24) in n for n in _LOCAL_V4)
        parts = tuple(
            (int(n.network_address), int(n.netmask))
            for n in _LOCAL_V4
            if n.prefixlen > 8 and int(n.network_address) >> 24 == octet
        )
        table.append(True if whole else parts)
    return table


_V4_TABLE = _by_first_octet()


def is_local(address: str) -> bool:
    """True for a private, shared or documentation address (``ipaddress``'s ``is_private``, plus
    100.64/10): one whose reverse name nobody else answers for on the Internet."""
    if ":" not in address:
        packed = socket.inet_pton(socket.AF_INET, address)
        entry = _V4_TABLE[packed[0]]
        if entry is True or not entry:
            return bool(entry)
        value = int.from_bytes(packed)
        return any(value & mask == net for net, mask in entry)
    return ipaddress.IPv6Address(address).is_private


def serves_ptr(address: str, reverse_name: bytes, zones: Container[bytes]) -> bool:
    """Whether the PTR of a registered ``address`` (at ``reverse_name``) is answered: for local
    addresses anywhere, and for public ones only inside a zone we are authoritative for (a
    ``reverse_zones`` entry or a zone file's origin): registering 8.8.8.8 must not make us answer
    8.8.8.8's reverse name with AA as if we owned it."""
    if is_local(address):
        return True
    return any(parent in zones for parent in parent_names(reverse_name))


class Naming:
    def __init__(self, domain: bytes, ns_label: str = "ns") -> None:
        self.domain = domain
        self.ns_label = ns_label

    def service(self, service: str) -> bytes:
        return labels_to_wire((service,), self.domain)

    def instance(self, service: str, instance_id: str) -> bytes:
        return labels_to_wire((instance_id, service), self.domain)

    def tag(self, tag: str, service: str) -> bytes:
        return labels_to_wire((tag, service), self.domain)

    def srv(self, service: str, proto_or_tag: str) -> bytes:
        return labels_to_wire((f"_{service}", f"_{proto_or_tag}"), self.domain)

    def query(self, name: str) -> bytes:
        return labels_to_wire((name, QUERY_LABEL), self.domain)

    def query_srv(self, name: str, protocol: str) -> bytes:
        return labels_to_wire((f"_{name}", f"_{protocol}", QUERY_LABEL), self.domain)

    def dnssd_instance(self, instance_id: str, service: str, protocol: str) -> bytes:
        """The DNS-SD service instance name (RFC 6763 4.1): ``<id>._<service>._<proto>.D``."""
        return labels_to_wire((instance_id, f"_{service}", f"_{protocol}"), self.domain)

    def dnssd_services(self) -> bytes:
        """The service type enumeration name (RFC 6763 9): ``_services._dns-sd._udp.D``."""
        return labels_to_wire(("_services", "_dns-sd", "_udp"), self.domain)

    def nameserver(self) -> bytes:
        return labels_to_wire((self.ns_label,), self.domain)

    @staticmethod
    def reverse(address: str) -> bytes:
        return reverse_pointer(address)
