"""The names a service answers for, built from its settings and members as the index needs them.

A service has its own name (balanced A/AAAA, SRV, TXT from its metadata), the RFC 2782 names
``_service._proto`` (SRV), a name per tag (A/AAAA and SRV, plus ``_service._tag`` for SRV) and a
host name per instance. Every record body is encoded here, once per change of the service; the
responder only splices them. PTR names are shared between services, so the index merges their
entries (``PtrEntry``) and builds each reverse name's RRset with ``ptr_rrset``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import PROTOCOLS, Naming
from dnsdisc.dnsserver.rrset import SRV_TARGET, Item, RRSet
from dnsdisc.dnsserver.view import MemberView, ServiceView
from dnsdisc.dnsserver.zone import Node, Zone
from dnsdisc.policies.balance import POLICIES, srv_order
from dnsdisc.policies.roles import FALLBACK, IN

# (service, instance id, TTL, the instance's host name): one PTR target of a reverse name.
PtrEntry = tuple[str, str, int, bytes]


def service_nodes(
    naming: Naming,
    zone: Zone,
    settings: ServiceView,
    live: Sequence[MemberView],
    hosts: dict[str, bytes],
) -> dict[bytes, Node]:
    """Every name of one service, in ``zone``; ``hosts`` maps an instance id to its host name."""
    ttl = settings.ttl
    policy = POLICIES[settings.policy]
    svc = settings.name

    addr_items: dict[str, Item] = {}
    srv_items: dict[str, Item] = {}
    for member in live:
        inst = member.instance
        weight, prio = member.weight, member.priority
        rtype, rdata = wire.address_rdata(inst.address)
        addr = Item(wire.rr_body(rtype, ttl, rdata), weight, prio, live=member)
        host = hosts[inst.id]
        addr_items[inst.id] = addr
        srv_items[inst.id] = Item(
            wire.rr_body(wire.SRV, ttl, wire.srv_rdata(prio, weight, inst.port, host)),
            weight,
            prio,
            target_off=SRV_TARGET,
            target=host,
            glue=(addr.body,),
            live=member,
        )

    def balanced(
        group: Sequence[MemberView], with_srv: bool = True, with_addr: bool = True
    ) -> dict[int, RRSet]:
        # Drained instances (weight 0) are handed out only when no active one is left, so
        # each RRset keeps the active members, or the drained ones if that is all there is.
        # Fail-open members go behind the healthy ones (and, in SRV, at a worse priority).
        handed = [m for m in group if m.role == IN]
        fallback = [m for m in group if m.role == FALLBACK]
        rrsets: dict[int, RRSet] = {}
        if with_addr:
            for rtype, v6 in ((wire.A, False), (wire.AAAA, True)):
                main = _eligible([m for m in handed if m.instance.is_ipv6 is v6])
                tail = _eligible([m for m in fallback if m.instance.is_ipv6 is v6])
                if main or tail:
                    rrsets[rtype] = RRSet(
                        rtype,
                        [addr_items[m.instance.id] for m in main],
                        policy,
                        settings.max_answers,
                        [addr_items[m.instance.id] for m in tail],
                    )
        if with_srv:
            eligible = _eligible(handed) + _eligible(fallback)
            if eligible:
                # SRV clients choose by the records' priority and weight themselves; the
                # record order follows RFC 2782 whatever the service's policy.
                rrsets[wire.SRV] = RRSet(
                    wire.SRV, [srv_items[m.instance.id] for m in eligible], srv_order
                )
        return rrsets

    nodes: dict[bytes, Node] = {}

    def add(name: bytes, rrsets: dict[int, RRSet]) -> None:
        nodes[name] = Node(zone, rrsets, name)

    instances = [m.instance for m in live]
    top = balanced(live)
    if settings.meta:
        top[wire.TXT] = RRSet(wire.TXT, [Item(_txt_body(settings.meta, ttl))])
    add(naming.service(svc), top)
    for proto in PROTOCOLS:
        add(
            naming.srv(svc, proto),
            balanced([m for m in live if m.instance.protocol == proto], with_addr=False),
        )
    tags = sorted({t for inst in instances for t in inst.tags})
    for tag in tags:
        members = [m for m in live if tag in m.instance.tags]
        add(naming.tag(tag, svc), balanced(members))
        if tag not in PROTOCOLS:
            add(naming.srv(svc, tag), balanced(members, with_addr=False))
    for inst in instances:
        addr_type = wire.AAAA if inst.is_ipv6 else wire.A
        rrsets = {
            addr_type: RRSet(addr_type, [addr_items[inst.id]]),
            wire.SRV: RRSet(wire.SRV, [srv_items[inst.id]]),
        }
        if inst.meta:
            rrsets[wire.TXT] = RRSet(wire.TXT, [Item(_txt_body(inst.meta, ttl))])
        # Added after the tags: an instance id wins over a tag with the same label.
        add(hosts[inst.id], rrsets)
    return nodes


def ptr_rrset(entries: Sequence[PtrEntry]) -> RRSet:
    """The PTR RRset of one reverse name: one record per entry, in the entries' order."""
    # One RRset has one TTL (RFC 2181 5.2): the shortest of the services sharing it.
    ttl = min(e[2] for e in entries)
    return RRSet(wire.PTR, [Item(wire.rr_body(wire.PTR, ttl, e[3])) for e in entries])


def _eligible(members: Sequence[MemberView]) -> list[MemberView]:
    active = [m for m in members if m.weight > 0]
    return active or list(members)


def _txt_body(meta: tuple[tuple[str, str], ...], ttl: int) -> bytes:
    # RFC 1464 style, one character-string per pair.
    return wire.rr_body(wire.TXT, ttl, wire.txt_rdata([f"{k}={v}".encode() for k, v in meta]))
