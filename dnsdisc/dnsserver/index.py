"""The answer index: every name we answer for, with its records already encoded.

When the registry reports that a service changed, the index rebuilds that service's names
(`rebuild`) from its current instances. The responder then only looks a lower-cased wire name up
in ``nodes`` and splices pre-encoded record bodies behind compression pointers; a per-query policy
only chooses the order of the items of a balanced RRset.

Names come from three layers: static records from zone files (they win a collision), the names of
each service, and PTR names for registered addresses. Ancestors of every name are counted so that
empty non-terminals answer NODATA instead of NXDOMAIN.
"""

from __future__ import annotations

import logging
import random
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.names import PROTOCOLS, Naming
from dnsdisc.dnsserver.view import InstanceView, MemberView, ServiceView
from dnsdisc.policies.balance import (
    LIVE_POLICIES,
    MAX_TABLE_ORDERS,
    POLICIES,
    Policy,
    order_table,
    priority,
    shuffle,
    srv_order,
    tiers,
    weighted,
)
from dnsdisc.policies.roles import FALLBACK, IN

log = logging.getLogger(__name__)

# Offset of the target name inside a record body: 10 bytes of type/class/ttl/rdlength, then
# 6 bytes of SRV priority/weight/port before the target, none before an NS or CNAME target.
_SRV_TARGET = 16
_NAME_TARGET = 10
# Orders kept per RRset and how often each is handed out before it is drawn again, on
# average, for policies with too many orders for a table (see RRSet.next_order).
POOL = 32
REUSE = 8
# Replies cached per index (all queries and orders together; 10-30 MB for answers of a few
# hundred bytes), see Responder.
MAX_CACHED_REPLIES = 50000


class Item:
    """One record body (no owner) plus what balancing and glue need to know about it."""

    __slots__ = ("body", "glue", "live", "priority", "target", "target_off", "weight")

    def __init__(
        self,
        body: bytes,
        weight: int = 1,
        priority: int = 0,
        target_off: int = -1,
        target: bytes = b"",
        glue: tuple[bytes, ...] = (),
        live: MemberView | None = None,
    ) -> None:
        self.body = body
        self.weight = weight
        self.priority = priority
        # Where the target name starts in ``body`` (SRV, NS, CNAME), so that glue records can
        # point at it instead of spelling the name again.
        self.target_off = target_off
        self.target = target
        self.glue = glue
        self.live = live

    @property
    def load(self) -> float | None:
        return self.live.load if self.live is not None else None

    @property
    def latency_ms(self) -> float | None:
        return self.live.latency_ms if self.live is not None else None


# Policies whose orders are independent random draws (see RRSet.next_order).
RESAMPLED = frozenset({weighted, priority, shuffle, srv_order})


class RRSet:
    """The records of one (name, type), and how to order them for each answer.

    An order is a small tuple of indices, which the responder also uses as the key to a reply
    it has already encoded. Where a policy's orders are few enough, they are drawn from a table
    of every order with its exact chance (one random number per answer); else from a standing
    pool (see ``next_order``). Round robin and the policies that read reported load and latency
    draw for every answer."""

    __slots__ = (
        "counted",
        "counter",
        "dropped",
        "fixed",
        "forced",
        "items",
        "last",
        "limit",
        "members",
        "policy",
        "pool",
        "pos",
        "rtype",
        "table",
        "tabled",
        "tail",
    )

    def __init__(
        self,
        rtype: int,
        items: Sequence[Item],
        policy: Policy | None = None,
        limit: int | None = None,
        tail: Sequence[Item] = (),
    ) -> None:
        self.rtype = rtype
        self.items = tuple(items)
        self.policy = policy
        self.limit = limit
        # Handed out after all of ``items`` (fail-open: the unhealthy, behind the healthy).
        self.tail = tuple(tail)
        self.members = self.items + self.tail
        self.counter = 0
        self.table: tuple[list[float], list[tuple[int, ...]]] | None = None  # see _table
        self.tabled = False  # made at the first draw
        self.pool: list[tuple[int, ...]] | None = None  # see next_order; made when first used
        self.pos = 0
        self.last: tuple[int, ...] = ()  # the order drawn last
        # An order the standing pool has just replaced: its cached replies can go.
        self.dropped: tuple[int, ...] | None = None
        self.forced: tuple[int, ...] | None = None  # set by the responder to re-encode an order
        # Every answer lists the items as they are: nothing to draw.
        self.fixed = policy is None and not self.tail and limit is None
        # Who a balanced address answer hands out first is counted (the dashboard's shares).
        self.counted = policy is not None and rtype in (wire.A, wire.AAAA)

    def next_order(self, rng: random.Random) -> tuple[int, ...]:
        """The order of the next answer: indices into ``members``, cut to ``limit``."""
        if not self.tabled:
            self.table, self.tabled = self._table(), True
        table = self.table
        if table is not None:
            cum, orders = table
            order = self.last = orders[bisect_right(cum, rng.random())]
        elif self.policy in RESAMPLED:
            # Too many orders for a table (more than 720): a standing pool of orders drawn from
            # the policy, read in turn, each slot redrawn with chance 1/REUSE when read. Every
            # slot always holds an independent draw and which slot is read does not depend on
            # what it holds, so each answer's order has exactly the policy's distribution;
            # only neighbouring answers are no longer independent.
            pool = self.pool
            if pool is None:
                pool = self.pool = []
            if len(pool) < POOL:
                order = self._draw(rng)
                pool.append(order)
            else:
                pos = self.pos
                self.pos = (pos + 1) % POOL
                if rng.random() < 1 / REUSE:
                    self.dropped = pool[pos]
                    pool[pos] = self._draw(rng)
                order = pool[pos]
            self.last = order
        else:  # round robin counts queries; load and latency change between queries
            order = self.last = self._draw(rng)
        if self.counted and order:
            live = self.members[order[0]].live
            if live is not None:
                live.handed_out()
        return order

    def _table(self) -> tuple[list[float], list[tuple[int, ...]]] | None:
        """For policies whose orders are independent weighted tiers (weighted, priority,
        random, SRV) and not too many: every possible order with its exact chance, so that a
        draw costs one random number. The same distribution as ``_draw``, by construction
        (tests compare the two)."""
        policy = self.policy
        if policy is None or policy in LIVE_POLICIES:
            return None
        items = self.items
        groups = tiers(policy, items) if len(items) > 1 else [(list(range(len(items))), [1.0])]
        if groups is None:
            return None
        if self.tail:
            rest = tiers(policy, self.tail)
            if rest is None:
                return None
            first = len(items)
            groups += [([first + i for i in ix], ws) for ix, ws in rest]
        return order_table(groups, self.limit)

    def _draw(self, rng: random.Random) -> tuple[int, ...]:
        items = self.items
        policy = self.policy
        if policy is not None and len(items) > 1:
            self.counter += 1
            out = list(policy(items, self.counter, rng))
        else:
            out = list(range(len(items)))
        if self.tail:
            tail = self.tail
            first = len(items)
            order = policy(tail, self.counter, rng) if policy else range(len(tail))
            out += [first + i for i in order]
        return tuple(out[: self.limit] if self.limit is not None else out)

    def ordered(self, rng: random.Random) -> Sequence[Item]:
        """The items for one answer: in the policy's order, cut to ``limit``."""
        if self.fixed:
            return self.items
        order = self.forced if self.forced is not None else self.next_order(rng)
        members = self.members
        return [members[i] for i in order]


def cached_orders(rrset: RRSet | None) -> int:
    """How many replies (one per order) the responder keeps for a query whose answer ``rrset``
    orders (None: nothing is ordered). For an RRset whose orders come from a table, all of them:
    a weighted RRset of 5 with max_answers 5 has 120, and with a smaller cap its entry emptied
    itself over and over (39% of queries missed). For one that draws its orders (pool, round
    robin, load), twice the pool: the pool's orders, and room for what it replaces."""
    if rrset is None or rrset.table is not None:
        return MAX_TABLE_ORDERS
    return 2 * POOL


# (service, instance id, TTL, the instance's host name): one PTR target of a reverse name.
PtrEntry = tuple[str, str, int, bytes]


@dataclass(slots=True)
class Zone:
    apex: bytes
    soa: bytes  # SOA record body; its TTL is the negative-caching TTL (RFC 2308)


class Node:
    __slots__ = ("name", "rrsets", "zone")

    def __init__(self, zone: Zone, rrsets: dict[int, RRSet], name: bytes) -> None:
        self.rrsets = rrsets
        self.zone = zone
        self.name = name

    @property
    def soa(self) -> bytes:
        """The zone's SOA with its owner encoded relative to this name, for NODATA answers.
        Made when asked (NODATA replies are cached) rather than kept for every name."""
        return wire.owner_pointer(self.zone.apex, self.name) + self.zone.soa


@dataclass(frozen=True, slots=True)
class StaticRecord:
    """A record from a zone file, with its rdata already in wire form."""

    owner: bytes
    rtype: int
    ttl: int
    rdata: bytes


@dataclass(frozen=True, slots=True)
class IndexSettings:
    domain: bytes
    ns_label: str = "ns"
    ns_addresses: tuple[str, ...] = ("127.0.0.1",)
    hostmaster: str = "hostmaster"
    serial: int = 1
    negative_ttl: int = 5
    static_ttl: int = 300
    extra_zones: tuple[bytes, ...] = ()


class AnswerIndex:
    def __init__(self, settings: IndexSettings, static: Iterable[StaticRecord] = ()) -> None:
        self.settings = settings
        self.static_records = tuple(static)  # kept to build the same index in a worker
        # Encoded replies by query (without its ID), kept by the responder and emptied on every
        # change of a name: UDP and TCP apart, as their size limits differ.
        self.replies: dict[bytes, Any] = {}
        self.replies_tcp: dict[bytes, Any] = {}
        self.reply_count = 0  # replies held in both, against MAX_CACHED_REPLIES
        self.naming = Naming(settings.domain, settings.ns_label)
        self.nodes: dict[bytes, Node] = {}
        self.zones: dict[bytes, Zone] = {}
        self.ents: dict[bytes, int] = {}  # name -> how many names lie below it
        self._static: set[bytes] = set()
        self._service_names: dict[str, list[bytes]] = {}
        # reverse name -> who points there, from every service, sorted; tuples, not dicts:
        # there is one per registered address.
        self._ptr: dict[bytes, tuple[PtrEntry, ...]] = {}
        self._service_ptrs: dict[str, tuple[bytes, ...]] = {}  # the reverse names of a service
        self._build_static(list(self.static_records))

    # -- lookup helpers used by the responder ------------------------------------------------

    def forget_replies(self) -> None:
        if not self.replies and not self.replies_tcp:
            return  # nothing cached since the last time (a build installs many names)
        self.replies.clear()
        self.replies_tcp.clear()
        self.reply_count = 0

    def find_zone(self, name: bytes) -> Zone | None:
        zones = self.zones
        zone = zones.get(name)
        if zone is not None:
            return zone
        pos = 0
        while name[pos] != 0:
            pos += name[pos] + 1
            zone = zones.get(name[pos:])
            if zone is not None:
                return zone
        return None

    # -- building ----------------------------------------------------------------------------

    def _zone_for(self, name: bytes) -> Zone:
        return self.find_zone(name) or self.zones[self.settings.domain]

    def _build_static(self, records: list[StaticRecord]) -> None:
        s = self.settings
        ns_name = self.naming.nameserver()
        hostmaster = wire.labels_to_wire((s.hostmaster,), s.domain)
        for apex in (s.domain, *s.extra_zones):
            soa = wire.rr_body(
                wire.SOA,
                s.negative_ttl,
                wire.soa_rdata(ns_name, hostmaster, s.serial, 3600, 600, 86400, s.negative_ttl),
            )
            self.zones[apex] = Zone(apex, soa)

        ns_glue = []
        grouped: dict[bytes, dict[int, list[Item]]] = defaultdict(lambda: defaultdict(list))
        for address in s.ns_addresses:
            rtype, rdata = wire.address_rdata(address)
            body = wire.rr_body(rtype, s.static_ttl, rdata)
            ns_glue.append(body)
            grouped[ns_name][rtype].append(Item(body))
        for apex in self.zones:
            grouped[apex][wire.SOA].append(Item(self.zones[apex].soa))
            grouped[apex][wire.NS].append(
                Item(
                    wire.rr_body(wire.NS, s.static_ttl, ns_name),
                    target_off=_NAME_TARGET,
                    target=ns_name,
                    glue=tuple(ns_glue),
                )
            )
        for rec in records:
            target = rec.rdata if rec.rtype == wire.CNAME else b""
            grouped[rec.owner][rec.rtype].append(
                Item(
                    wire.rr_body(rec.rtype, rec.ttl, rec.rdata),
                    target_off=_NAME_TARGET if target else -1,
                    target=target,
                )
            )
        for name, types in grouped.items():
            node = Node(
                self._zone_for(name),
                {rtype: RRSet(rtype, items) for rtype, items in types.items()},
                name,
            )
            self._install(name, node)
            self._static.add(name)

    def rebuild(
        self, service: str, settings: ServiceView | None, members: Sequence[MemberView]
    ) -> None:
        """Replace every name of ``service``; ``settings`` None means the service is gone."""
        naming = self.naming
        hosts = {m.instance.id: naming.instance(service, m.instance.id) for m in members}
        # Built before anything is removed: if building fails, the old answers stay.
        names = self._service_nodes(settings, members, hosts) if settings is not None else {}
        self.forget_replies()
        before = set(self._service_names.pop(service, ()))
        for name in before - names.keys():
            self._uninstall(name)
        if settings is not None:
            installed = []
            for name, node in names.items():
                if name in self._static:
                    continue  # the registry refuses such names; a zone file loaded later wins
                if name in before:
                    self.nodes[name] = node  # its ancestors are counted already
                else:
                    self._install(name, node)
                installed.append(name)
            self._service_names[service] = installed
        instances = [m.instance for m in members] if settings else []
        self._rebuild_ptrs(service, settings.ttl if settings else 0, instances, hosts)

    def _service_nodes(
        self, settings: ServiceView, live: Sequence[MemberView], hosts: dict[str, bytes]
    ) -> dict[bytes, Node]:
        naming = self.naming
        ttl = settings.ttl
        policy = POLICIES[settings.policy]
        zone = self.zones[self.settings.domain]
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
                target_off=_SRV_TARGET,
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

    def _rebuild_ptrs(
        self, service: str, ttl: int, instances: Sequence[InstanceView], hosts: dict[str, bytes]
    ) -> None:
        wanted: dict[bytes, list[PtrEntry]] = {}
        reverse = self.naming.reverse
        for inst in instances:
            entry = (service, inst.id, ttl, hosts[inst.id])
            wanted.setdefault(reverse(inst.address), []).append(entry)
        before = self._service_ptrs.pop(service, ())
        if wanted:
            self._service_ptrs[service] = tuple(wanted)
        for name in wanted.keys() | before if before else wanted:
            old = self._ptr.get(name, ())
            mine = wanted.get(name, [])
            entries = tuple(sorted([e for e in old if e[0] != service] + mine))
            if entries == old:
                continue  # unchanged: most names, when one instance of many changes
            if entries:
                self._ptr[name] = entries
            else:
                del self._ptr[name]
            if name in self._static:
                continue
            if name in self.nodes:
                self._uninstall(name)
            if entries:
                # One RRset has one TTL (RFC 2181 5.2): the shortest of the services sharing it.
                ptr_ttl = min(e[2] for e in entries)
                items = [Item(wire.rr_body(wire.PTR, ptr_ttl, e[3])) for e in entries]
                self._install(
                    name, Node(self._zone_for(name), {wire.PTR: RRSet(wire.PTR, items)}, name)
                )

    def _install(self, name: bytes, node: Node) -> None:
        self.forget_replies()
        if name in self.nodes:
            self._uninstall(name)
        self.nodes[name] = node
        ents = self.ents
        for parent in wire.parent_names(name):
            ents[parent] = ents.get(parent, 0) + 1

    def _uninstall(self, name: bytes) -> None:
        if self.nodes.pop(name, None) is None:
            return
        self.forget_replies()
        for parent in wire.parent_names(name):
            left = self.ents[parent] - 1
            if left:
                self.ents[parent] = left
            else:
                del self.ents[parent]


def _eligible(members: Sequence[MemberView]) -> list[MemberView]:
    active = [m for m in members if m.weight > 0]
    return active or list(members)


def _txt_body(meta: tuple[tuple[str, str], ...], ttl: int) -> bytes:
    # RFC 1464 style, one character-string per pair.
    return wire.rr_body(wire.TXT, ttl, wire.txt_rdata([f"{k}={v}".encode() for k, v in meta]))
