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
  reverse name of an address  PTR -> <id>.<service>.D
"""

from __future__ import annotations

from dnsdisc.dnsserver.wire import labels_to_wire, reverse_pointer

PROTOCOLS = ("tcp", "udp")


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

    def nameserver(self) -> bytes:
        return labels_to_wire((self.ns_label,), self.domain)

    @staticmethod
    def reverse(address: str) -> bytes:
        return reverse_pointer(address)
