"""The names of one service, kept between changes so that a change costs what changed.

``ServiceNames`` keeps each member's encoded records (``Item``) and which groups it belongs to
(its protocol, each of its tags: membership built in one pass). A change of some members
re-encodes those members only, and rebuilds only the RRsets of the groups they are or were in
(the service's own name, their protocol, their tags) from the items already encoded; the other
names of the service keep their nodes. Each group keeps its members sorted by bucket
(``groups.Group``), so that rebuilding an RRset copies lists rather than passing over the
group. A change of the service's settings (TTL, policy, limit, metadata) re-encodes everything,
as every record carries them.

Within an RRset the members keep the order in which they joined the service (as the registry
lists them), so a patched service answers exactly as one built from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial

from dnsdisc.dnsserver import locality, svcb, wire
from dnsdisc.dnsserver.groups import Group, Run, least, srv_hint, tiers_hint
from dnsdisc.dnsserver.names import PROTOCOLS, Naming
from dnsdisc.dnsserver.rrset import HTTPS_TARGET, SRV_TARGET, Item, RRSet
from dnsdisc.dnsserver.view import MemberView, ServiceView
from dnsdisc.dnsserver.zone import LazyNode, Node, Unserved, Zone
from dnsdisc.policies.balance import POLICIES, srv_order
from dnsdisc.policies.roles import FALLBACK, IN

# A group of members with names of its own: the whole service (""), a protocol, or a tag.
_ALL = ("all", "")
# The RRsets a handed-out member puts at its groups' names (see _set).
_MEMBER_RRSETS = frozenset((wire.A, wire.AAAA, wire.SRV))


def settings_key(settings: ServiceView) -> tuple[object, ...]:
    """What of a service's settings its records are built from."""
    return (
        settings.name,
        settings.policy,
        settings.max_answers,
        settings.ttl,
        settings.meta,
        settings.locality,
        settings.locality_min_healthy,
        settings.sticky_prefix,
        settings.sticky_prefix_v6,
        settings.sequence,
        settings.srv_weights,
        settings.https,
        settings.dnssd,
    )


class ServiceNames:
    """Every name of one service (``nodes``), patched in place by ``apply``."""

    def __init__(
        self, naming: Naming, zone: Zone, settings: ServiceView, query: bool = False
    ) -> None:
        self.naming = naming
        # A named query's names (``<name>.query.D``, ``_<name>._tcp.query.D``): its members
        # are another service's instances, so it has no tag or host names of its own, and its
        # SRV targets are the instances' own names.
        self.query = query
        self.zone = zone
        self.settings = settings
        self.key = settings_key(settings)
        self.members: dict[str, MemberView] = {}
        # The service's recent located queries per zone, which ``spill`` weighs (locality).
        self.demand = locality.Demand()
        self.nodes: dict[bytes, Node] = {}
        # Work done, for tests and the benchmark: members encoded, RRsets built.
        self.encoded = 0
        self.rrsets_built = 0
        self._pos: dict[str, int] = {}  # when each member joined: the order within RRsets
        self._next = 0
        self._addr: dict[str, Item] = {}
        self._srv: dict[str, Item] = {}
        # A member's bucket in ``_balanced``: 4 if fallback, 2 if IPv6, 1 if active; -1 when
        # it is handed out nowhere (out of rotation).
        self._facts: dict[str, int] = {}
        self.hosts: dict[str, bytes] = {}
        self._groups: dict[tuple[str, str], Group] = {_ALL: Group()}
        for proto in PROTOCOLS:
            self._groups[("proto", proto)] = Group()
        self._group_nodes: dict[bytes, Node] = {}
        # The RRsets built by one ``apply``, by type and bucket sizes, with the runs they were
        # made of: see ``_rrset``.
        self._made: dict[tuple[int, ...], list[tuple[tuple[Run, ...], RRSet]]] = {}
        self._host_nodes: dict[bytes, Node] = {}
        # HTTPS records (service setting ``https``): each member's, and the groups that answer
        # them (the service's own name and its tags), sorted like ``_groups`` but with both
        # address families in one bucket, as one HTTPS RRset holds either.
        self._https_on = settings.https is not None and not query
        self._https: dict[str, Item] = {}
        self._hgroups: dict[tuple[str, str], Group] = {}
        # DNS-SD (service setting ``dnssd``): each member's PTR record (to its instance name
        # ``<id>._<service>._<proto>.D``), the members browsable under each protocol (those its
        # SRV RRset hands out), and the protocols that have any (``browsable``: what
        # ``_services._dns-sd._udp.D`` lists; see dnssd.py).
        self._sd_on = settings.dnssd and not query
        self._sd_ptr: dict[str, Item] = {}
        self._sd_shown: dict[str, dict[str, bytes]] = {p: {} for p in PROTOCOLS}
        self.browsable: frozenset[str] = frozenset()
        self._rebuilt: set[str] = set()  # the members re-encoded by the ``apply`` under way
        # RFC 6763 6.1: an instance without metadata still has a TXT record, of one empty string.
        self._empty_txt = RRSet(wire.TXT, [Item(wire.rr_body(wire.TXT, settings.ttl, b"\x00"))])
        self._meta_txt = (
            RRSet(wire.TXT, [Item(txt_body(settings.meta, settings.ttl))])
            if settings.meta
            else None
        )

    def apply(self, changed: Sequence[MemberView], removed: Iterable[str] = ()) -> set[bytes]:
        """Replace or add ``changed`` members, drop the ``removed`` ids; the names whose node
        changed (in ``nodes`` now, or gone from it)."""
        dirty: set[tuple[str, str]] = set()
        if not self.nodes:
            # The service's own name and its protocols' names exist even with no members.
            dirty.update(g for g in self._groups if g[0] != "tag")
        hosts_dirty: set[str] = set()
        for iid in removed:
            if iid in self.members:
                self._leave(iid, dirty)
                del self.members[iid], self._pos[iid]
                hosts_dirty.add(iid)
        for member in changed:
            iid = member.instance.id
            if iid in self.members:
                self._leave(iid, dirty)
            else:
                self._pos[iid] = self._next
                self._next += 1
            self._join(member, dirty)
            hosts_dirty.add(iid)
        touched: set[bytes] = set()
        self._made.clear()
        self._rebuilt = hosts_dirty
        for group in dirty:
            touched.update(self._build_group(group))
        self._made.clear()
        self._rebuilt = set()
        for iid in hosts_dirty:
            if self.query:
                if iid not in self.members:
                    self.hosts.pop(iid, None)
                continue
            touched.add(self._build_host(iid))
        for name in touched:
            node = self._host_nodes.get(name) or self._group_nodes.get(name)
            if node is None:
                self.nodes.pop(name, None)
            else:
                self.nodes[name] = node
        return touched

    def refresh(self, member: MemberView) -> None:
        """Take a new object for a member whose records are unchanged (its figures and tally
        are read through it)."""
        iid = member.instance.id
        self.members[iid] = member
        self._addr[iid].live = member
        self._srv[iid].live = member
        if self._https_on:
            self._https[iid].live = member

    # -- members -----------------------------------------------------------------------------

    def _groups_of(self, member: MemberView) -> list[tuple[str, str]]:
        inst = member.instance
        if self.query:
            return [_ALL, ("proto", inst.protocol)]
        return [_ALL, ("proto", inst.protocol)] + [("tag", t) for t in inst.tags]

    def _leave(self, iid: str, dirty: set[tuple[str, str]]) -> None:
        # ``members`` keeps the entry: a member replaced keeps its place (``_join``).
        member = self.members[iid]
        key, slot = self._pos[iid], self._facts[iid]
        del self._addr[iid], self._srv[iid], self._facts[iid]
        for group in self._groups_of(member):
            dirty.add(group)
            held = self._groups.get(group)
            if held is not None:
                held.remove(key, slot)
            if self._https_on and group[0] != "proto":
                self._hgroups[group].remove(key, _https_slot(slot))
        if self._https_on:
            del self._https[iid]
        self._sd_ptr.pop(iid, None)

    def _join(self, member: MemberView, dirty: set[tuple[str, str]]) -> None:
        inst = member.instance
        iid = inst.id
        self.members[iid] = member
        ttl = self.settings.ttl
        host = self.hosts.get(iid)
        if self.query:  # the instance's own name; a failover may bring another service's
            host = self.hosts[iid] = self.naming.instance(inst.service, iid)
        elif host is None:
            host = self.hosts[iid] = self.naming.instance(self.settings.name, iid)
        weight, prio = member.weight, member.priority
        rtype, rdata = wire.address_rdata(inst.address)
        addr = Item(wire.rr_body(rtype, ttl, rdata), weight, prio, live=member)
        self._addr[iid] = addr
        self._srv[iid] = Item(
            wire.rr_body(wire.SRV, ttl, wire.srv_rdata(prio, weight, inst.port, host)),
            weight,
            prio,
            target_off=SRV_TARGET,
            target=host,
            glue=(addr.body,),
            live=member,
        )
        role = member.role
        slot = self._facts[iid] = (
            ((4 if role == FALLBACK else 0) | (2 if inst.is_ipv6 else 0) | (weight > 0))
            if role in (IN, FALLBACK)
            else -1
        )
        self.encoded += 1
        key, srv = self._pos[iid], self._srv[iid]
        https = None
        if self._https_on:
            assert self.settings.https is not None
            https = self._https[iid] = Item(
                svcb.https_body(self.settings.https, ttl, prio, host, inst.port, inst.address),
                weight,
                prio,
                target_off=HTTPS_TARGET,
                target=host,
                glue=(addr.body,),  # RFC 9460 4.2: the target's addresses, when they fit
                live=member,
            )
        if self._sd_on:
            self._sd_ptr[iid] = Item(
                wire.rr_body(
                    wire.PTR, ttl, self.naming.dnssd_instance(iid, inst.service, inst.protocol)
                )
            )
        for group in self._groups_of(member):
            dirty.add(group)
            held = self._groups.get(group)
            if held is None:
                held = self._groups[group] = Group()
            held.add(key, slot, addr, srv)
            if https is not None and group[0] != "proto":
                hheld = self._hgroups.get(group)
                if hheld is None:
                    hheld = self._hgroups[group] = Group()
                hheld.add(key, _https_slot(slot), https, srv)

    # -- names -------------------------------------------------------------------------------

    def _build_group(self, group: tuple[str, str]) -> list[bytes]:
        """Rebuild the names of one group; the names it covers."""
        kind, label = group
        naming, svc = self.naming, self.settings.name
        held = self._groups.get(group)
        if kind == "all":
            assert held is not None
            rrsets = self._balanced(held)
            if self._meta_txt is not None:
                rrsets[wire.TXT] = self._meta_txt
            self._add_https(group, rrsets)
            name = naming.query(svc) if self.query else naming.service(svc)
            self._set(name, rrsets, held)
            return [name]
        if kind == "proto":
            name = naming.query_srv(svc, label) if self.query else naming.srv(svc, label)
            assert held is not None
            rrsets = self._balanced(held, with_addr=False)
            touched = [name]
            if self._sd_on:
                touched += self._browse(label, held, rrsets)
            self._set(name, rrsets, held)
            return touched
        names = [naming.tag(label, svc)]
        if label not in PROTOCOLS:
            names.append(naming.srv(svc, label))
        if held is None or not held.size:
            self._groups.pop(group, None)
            self._hgroups.pop(group, None)
            for name in names:
                self._group_nodes.pop(name, None)
            return names
        rrsets = self._balanced(held)
        self._add_https(group, rrsets)
        self._set(names[0], rrsets, held)
        if len(names) > 1:
            self._set(names[1], self._balanced(held, with_addr=False), held)
        return names

    def _set(self, name: bytes, rrsets: dict[int, RRSet], held: Group | None = None) -> None:
        # A group with members of which none is handed out (health): Unserved, whose NODATA
        # says why (see zone.Unserved).
        if held is not None and held.size > 0 and not rrsets.keys() & _MEMBER_RRSETS:
            node: Node = Unserved(self.zone, rrsets, name, self._member_types())
        else:
            node = Node(self.zone, rrsets, name)
        self._group_nodes[name] = node

    def _member_types(self) -> frozenset[int]:
        """The types the service's members answer when handed out: SRV and ANY, and A or AAAA
        for the families they have (an IPv4-only service's AAAA NODATA says nothing of health).
        O(members), paid only for a service none of whose members is handed out."""
        families = {inst.is_ipv6 for inst in (m.instance for m in self.members.values())}
        return frozenset(
            (wire.SRV, wire.ANY)
            + ((wire.A,) if False in families else ())
            + ((wire.AAAA,) if True in families else ())
        )

    def _add_https(self, group: tuple[str, str], rrsets: dict[int, RRSet]) -> None:
        """The HTTPS RRset of a name whose A/AAAA answer ``group``: the same members, drained
        and fail-open rules, policy, ``max_answers`` and locality as its address records, so
        that HTTPS hands out exactly who A and AAAA would (both families in one RRset)."""
        held = self._hgroups.get(group)
        if held is None:
            return
        buckets = held.addr
        main = buckets[1] if buckets[1].keys else buckets[0]
        tail = buckets[5] if buckets[5].keys else buckets[4]
        if main.keys or tail.keys:
            rrsets[svcb.HTTPS] = self._rrset(
                svcb.HTTPS, (main, tail), partial(self._addresses, svcb.HTTPS, main, tail)
            )
            self.rrsets_built += 1

    def _browse(self, proto: str, held: Group, rrsets: dict[int, RRSet]) -> list[bytes]:
        """DNS-SD for the members of one protocol: a PTR at ``_<service>._<proto>.D`` to each
        instance its SRV RRset hands out, in joining order, and those instances' names (SRV,
        TXT). Instances no longer handed out lose their names; the names it changed. O(n) in
        the group for a service with ``dnssd``, on a change of one of its members."""
        runs = held.srv
        handed = runs[1] if runs[1].keys else runs[0]
        fallback = runs[3] if runs[3].keys else runs[2]
        shown: dict[str, bytes] = {}
        ptrs = []
        for item in handed.items + fallback.items:
            assert item.live is not None
            iid = item.live.instance.id
            ptr = self._sd_ptr[iid]
            ptrs.append(ptr)
            shown[iid] = ptr.body[10:]  # the instance name (a PTR's rdata)
        before = self._sd_shown[proto]
        self._sd_shown[proto] = shown
        touched = []
        for iid, name in before.items():
            if iid not in shown or shown[iid] != name:
                self._group_nodes.pop(name, None)
                touched.append(name)
        rebuilt = self._rebuilt
        for iid, name in shown.items():
            if iid in before and iid not in rebuilt and before[iid] == name:
                continue
            inst = self.members[iid].instance
            txt = (
                RRSet(wire.TXT, [Item(txt_body(inst.meta, self.settings.ttl))])
                if inst.meta
                else self._empty_txt
            )
            self._set(name, {wire.SRV: RRSet(wire.SRV, [self._srv[iid]]), wire.TXT: txt})
            touched.append(name)
        if ptrs:
            rrsets[wire.PTR] = RRSet(wire.PTR, ptrs)
        browsable = set(self.browsable)
        if ptrs:
            browsable.add(proto)
        else:
            browsable.discard(proto)
        self.browsable = frozenset(browsable)
        return touched

    def _build_host(self, iid: str) -> bytes:
        # An instance id wins over a tag with the same label: see ``apply``.
        host = self.hosts[iid]
        member = self.members.get(iid)
        if member is None:
            self._host_nodes.pop(host, None)
            del self.hosts[iid]
            return host
        inst = member.instance
        if not inst.meta and not self._https_on:
            # The common case, made when first asked for (see zone.LazyNode).
            self._host_nodes[host] = HostNode(self.zone, host, self._addr[iid], self._srv[iid])
            return host
        addr_type = wire.AAAA if inst.is_ipv6 else wire.A
        rrsets = {
            addr_type: RRSet(addr_type, [self._addr[iid]]),
            wire.SRV: RRSet(wire.SRV, [self._srv[iid]]),
        }
        if inst.meta:
            rrsets[wire.TXT] = RRSet(wire.TXT, [Item(txt_body(inst.meta, self.settings.ttl))])
        if self._https_on:
            rrsets[svcb.HTTPS] = RRSet(svcb.HTTPS, [self._https[iid]])
        self.rrsets_built += len(rrsets)
        self._host_nodes[host] = Node(self.zone, rrsets, host)
        return host

    def _balanced(self, group: Group, with_addr: bool = True) -> dict[int, RRSet]:
        # Drained instances (weight 0) are handed out only when no active one is left, so
        # each RRset keeps the active members, or the drained ones if that is all there is.
        # Fail-open members go behind the healthy ones (and, in SRV, at a worse priority).
        # The group keeps its members sorted into those buckets (``Group``): an RRset is made
        # of whole lists, whatever the size of the group.
        rrsets: dict[int, RRSet] = {}
        buckets = group.addr
        if with_addr:
            for rtype, v6 in ((wire.A, 0), (wire.AAAA, 2)):
                main = buckets[v6 | 1] if buckets[v6 | 1].keys else buckets[v6]
                tail = buckets[4 | v6 | 1] if buckets[4 | v6 | 1].keys else buckets[4 | v6]
                if main.keys or tail.keys:
                    rrsets[rtype] = self._rrset(
                        rtype, (main, tail), partial(self._addresses, rtype, main, tail)
                    )
        runs = group.srv
        handed = runs[1] if runs[1].keys else runs[0]
        fallback = runs[3] if runs[3].keys else runs[2]
        if handed.keys or fallback.keys:
            # SRV clients choose by the records' priority and weight themselves; the record
            # order follows RFC 2782 whatever the service's policy.
            rrsets[wire.SRV] = self._rrset(
                wire.SRV,
                (handed, fallback),
                lambda: self._local(
                    RRSet(
                        wire.SRV,
                        self._srv_items(handed.items + fallback.items),
                        srv_order,
                        least=least(handed, fallback),
                        hint=srv_hint(handed, fallback),
                    )
                ),
            )
        self.rrsets_built += len(rrsets)
        return rrsets

    def _addresses(self, rtype: int, main: Run, tail: Run) -> RRSet:
        policy = POLICIES[self.settings.policy]
        return self._local(
            RRSet(
                rtype,
                main.items,
                policy,
                self.settings.max_answers,
                tail.items,
                least=least(main, tail),
                hint=tiers_hint(policy, main, tail),
            )
        )

    def _srv_items(self, items: list[Item]) -> list[Item]:
        """The SRV records as the service hands them out: as registered, or with
        ``srv_weights: scaled`` each priority's weights scaled so that the largest is 65535
        (proxies such as HAProxy divide an SRV weight by 256). Scaled records are encoded
        for each RRset built: O(n), for the services that ask for it."""
        if self.settings.srv_weights != "scaled":
            return items
        return scale_srv(items)

    def _local(self, rrset: RRSet) -> RRSet:
        """``rrset`` answering by the client where the service's settings ask for it."""
        s = self.settings
        return locality.attach(
            rrset,
            s.locality,
            s.locality_min_healthy,
            (s.sticky_prefix, s.sticky_prefix_v6),
            self.demand,
            s.sequence == "smooth",
        )

    def _rrset(self, rtype: int, runs: tuple[Run, ...], make: Callable[[], RRSet]) -> RRSet:
        """An RRset of ``runs``, made by ``make`` unless this ``apply`` made one of the same
        members already. Groups often hold the same members (a tag every instance carries; a
        tag's name and its SRV name): a change then copies the group's lists once, not once
        per name (at 10,000 instances with the same 32 tags, per change and worker, ~18 ms
        of copies plus the collector's passes over the copies; see docs/benchmarks.md)."""
        sig = (rtype, *(len(r.keys) for r in runs))
        made = self._made.setdefault(sig, [])
        for other, rrset in made:
            # Keys are the members' join positions, so equal keys mean the same items in the
            # same order (each member's items are shared by all of its groups); the keys are
            # the very same int objects, which the C-level list compare checks by identity.
            if all(a is b or a.keys == b.keys for a, b in zip(runs, other, strict=True)):
                return rrset.like()
        rrset = make()
        made.append((runs, rrset))
        return rrset


def _https_slot(slot: int) -> int:
    """A member's bucket among the HTTPS records: its address bucket without the family bit."""
    return slot & ~2 if slot >= 0 else slot


def build_service(
    naming: Naming,
    zone: Zone,
    settings: ServiceView,
    members: Sequence[MemberView],
    query: bool = False,
) -> ServiceNames:
    """Every name of a service (or of a named query), built from scratch."""
    names = ServiceNames(naming, zone, settings, query)
    names.apply(members)
    return names


def scale_srv(items: list[Item]) -> list[Item]:
    """SRV ``items`` with the weights of each priority scaled by one factor, so that the largest
    is 65535 (RFC 2782's selection by weight is unchanged by a common factor)."""
    largest: dict[bytes, int] = {}
    for item in items:
        prio, weight = item.body[10:12], item.body[12] << 8 | item.body[13]
        if weight > largest.get(prio, 0):
            largest[prio] = weight
    out = []
    for item in items:
        top = largest.get(item.body[10:12], 0)
        weight = item.body[12] << 8 | item.body[13]
        scaled = (weight * 65535 + top // 2) // top if top else 0
        body = item.body[:12] + scaled.to_bytes(2, "big") + item.body[14:]
        out.append(
            Item(
                body, item.weight, item.priority, item.target_off, item.target, item.glue, item.live
            )
        )
    return out


def txt_body(meta: tuple[tuple[str, str], ...], ttl: int) -> bytes:
    # RFC 1464 style, one character-string per pair.
    return wire.rr_body(wire.TXT, ttl, wire.txt_rdata([f"{k}={v}".encode() for k, v in meta]))


class HostNode(LazyNode):
    """An instance's own name without TXT or HTTPS records: its address record and its SRV
    record, each an RRset of one, made when first asked for."""

    __slots__ = ("addr", "srv")

    def __init__(self, zone: Zone, name: bytes, addr: Item, srv: Item) -> None:
        super().__init__(zone, name)
        self.addr = addr
        self.srv = srv

    def make(self) -> dict[int, RRSet]:
        addr_type = int.from_bytes(self.addr.body[:2], "big")  # a record body starts with it
        return {addr_type: RRSet(addr_type, [self.addr]), wire.SRV: RRSet(wire.SRV, [self.srv])}
