"""The names a service answers for, built from its settings and members as the index needs them.

A service has its own name (balanced A/AAAA, SRV, TXT from its metadata), the RFC 2782 names
``_service._proto`` (SRV), a name per tag (A/AAAA and SRV, plus ``_service._tag`` for SRV) and a
host name per instance. Every record body is encoded when its member changes (``servicenames``);
the responder only splices them. PTR names are shared between services, so the index merges their
entries (``PtrEntry``) and builds each reverse name's RRset with ``ptr_rrset``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import Naming
from dnsdisc.dnsserver.rrset import Item, RRSet
from dnsdisc.dnsserver.servicenames import build_service
from dnsdisc.dnsserver.view import MemberView, ServiceView
from dnsdisc.dnsserver.zone import LazyNode, Node, Zone

# (service, instance id, TTL, the instance's host name): one PTR target of a reverse name.
PtrEntry = tuple[str, str, int, bytes]


def service_nodes(
    naming: Naming, zone: Zone, settings: ServiceView, live: Sequence[MemberView]
) -> dict[bytes, Node]:
    """Every name of one service, in ``zone``, built from scratch."""
    return build_service(naming, zone, settings, live).nodes


def ptr_rrset(entries: Sequence[PtrEntry]) -> RRSet:
    """The PTR RRset of one reverse name: one record per entry, in the entries' order."""
    # One RRset has one TTL (RFC 2181 5.2): the shortest of the services sharing it.
    ttl = min(e[2] for e in entries)
    return RRSet(wire.PTR, [Item(wire.rr_body(wire.PTR, ttl, e[3])) for e in entries])


class PtrNode(LazyNode):
    """A reverse name, its PTR RRset made from its entries when first asked for (see
    zone.LazyNode): the index keeps the entries anyway, to merge services sharing the name."""

    __slots__ = ("entries",)

    def __init__(self, zone: Zone, name: bytes, entries: Sequence[PtrEntry]) -> None:
        super().__init__(zone, name)
        self.entries = entries

    def make(self) -> dict[int, RRSet]:
        return {wire.PTR: ptr_rrset(self.entries)}
