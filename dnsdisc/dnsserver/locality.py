"""Answers that depend on who asks: the client's zone (``locality.networks``), the service's
``locality`` mode, and the ``consistent`` policy's sticky subnet.

``ZoneMap`` says which zone an address is in (the most specific network wins) and for how wide
a prefix around it that holds: the SCOPE PREFIX-LENGTH an ECS echo carries (RFC 7871 7.2.1), so
that a resolver caches the answer for exactly the clients that would get it. ``Local`` rides on
a balanced RRset of a service with locality or stickiness: it keeps one sub-RRset per zone (the
zone's members, with the service's policy, limit and fail-open tail) and decides, per query,
which of them answers (``prefer``, ``pin``, ``spill``) and, for ``consistent``, the order by
rendezvous hashing. Orders are returned as indices into the whole RRset's members, so the
responder's reply cache keys a located reply by what was decided (zone and sticky bucket: the
order), not by the client's address. ``Demand`` is the sliding window of a service's located
queries per zone that ``spill`` weighs capacity against.

Per-query work is a few dictionary lookups: a client address's zone and scope are remembered
(``ZoneMap.locate``), a sticky bucket's order too, and a spill plan is made again only when the
demand has moved (``Demand.plan``).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from time import monotonic

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.rrset import Item, RRSet
from dnsdisc.policies.balance import (
    LIVE_POLICIES,
    Tier,
    consistent,
    latency,
    least_loaded,
    priority,
    weighted,
)
from dnsdisc.policies.locality import (
    MODES,
    OFF,
    PREFER,
    SPILL,
    Route,
    bucket,
    rendezvous,
    spill_plan,
)
from dnsdisc.policies.smooth import sequence, window

# Addresses whose zone and scope are remembered; forgotten all at once when full.
MEMORY = 1 << 14
# Sticky orders remembered per RRset (one per client bucket seen), likewise.
STICKY_MEMORY = 4096
# Requesters whose place in a smooth sequence an RRset keeps: the least recently seen go first.
REQUESTERS = 4096
# The policies whose answers can follow a smooth sequence (``sequence: smooth``): those that
# order by weight (least_loaded falls back to weights until loads are reported).
SMOOTHED = frozenset({weighted, priority, latency, least_loaded})
# The demand window: SLOTS slots of SLOT seconds (60 s), per zone.
SLOT = 5.0
SLOTS = 12
# A spill plan stands until a second has passed or the window has grown by a tenth.
REPLAN = 1.0
NO_ZONE = ""  # members without a zone: capacity nobody is local to
WHOLE = "*"  # not a zone (no label has it): the whole RRset answers

# The modes as small numbers (0: off, which is false), compared on every query.
_MODES = {mode: n for n, mode in enumerate(MODES)}
_PREFER, _SPILL = _MODES[PREFER], _MODES[SPILL]

Networks = tuple[tuple[str, str], ...]  # (zone, network) as the config lists them
Located = tuple[str | None, int]  # the client's zone (None: unknown) and the scope


class ZoneMap:
    """``locality.networks``: zone of an address by the most specific network holding it."""

    def __init__(self, networks: Networks = ()) -> None:
        self.networks = networks
        # Per address length (4, 16): (prefix, network int, zone), longest prefix first.
        self._nets: dict[int, list[tuple[int, int, str]]] = {4: [], 16: []}
        for zone, text in networks:
            net = ipaddress.ip_network(text)
            size = 4 if net.version == 4 else 16
            self._nets[size].append((net.prefixlen, int(net.network_address), zone))
        for nets in self._nets.values():
            nets.sort(key=lambda n: -n[0])
        self.memory: dict[bytes, Located] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def locate(self, address: bytes) -> Located:
        """The zone of ``address`` (4 or 16 bytes; None when no network holds it) and the longest
        prefix length any network needs to be told apart: every address within that prefix of
        ``address`` is in the same zone (unknown ones: in none)."""
        found = self.memory.get(address)
        if found is None:
            if len(self.memory) >= MEMORY:
                self.memory.clear()
            found = self.memory[address] = self._locate(address)
        return found

    def _locate(self, address: bytes) -> Located:
        nets = self._nets.get(len(address))
        if not nets:
            return None, 0
        bits = len(address) * 8
        a = int.from_bytes(address, "big")
        match: tuple[int, int, str] | None = None
        for prefix, net, zone in nets:
            if _within(a, net, prefix, bits):
                match = (prefix, net, zone)
                break
        scope = match[0] if match is not None else 0
        for prefix, net, zone in nets:
            if match is not None:
                # Only networks inside the match, of another zone, cut its block short.
                if prefix <= match[0] or zone == match[2]:
                    continue
                if not _within(net, match[1], match[0], bits):
                    continue
            # The shortest prefix of ``address`` that leaves this network out.
            common = bits - (a ^ net).bit_length()
            if common < prefix:
                scope = max(scope, common + 1)
        return (match[2] if match is not None else None), scope


def _within(a: int, net: int, prefix: int, bits: int) -> bool:
    """Whether address ``a`` lies in ``net``/``prefix``."""
    return (a ^ net) >> (bits - prefix) == 0


class Demand:
    """A service's recent located queries per zone (SLOTS x SLOT seconds), and the spill plan
    they make with the capacity of each RRset that spills."""

    __slots__ = ("_counts", "_ends", "_slot", "total")

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._slot = 0  # the slot counted into now: a number of SLOTs since the clock's start
        self._ends = 0.0  # when it ends
        self.total = 0

    def add(self, zone: str, now: float) -> None:
        if now >= self._ends:
            self._advance(int(now / SLOT))
            self._ends = (self._slot + 1) * SLOT
        counts = self._counts.get(zone)
        if counts is None:
            counts = self._counts[zone] = [0] * SLOTS
        counts[self._slot % SLOTS] += 1
        self.total += 1

    def _advance(self, slot: int) -> None:
        # Clear the slots passed since the last query (all of them after a minute's quiet).
        gone = range(self._slot + 1, slot + 1) if slot - self._slot < SLOTS else range(SLOTS)
        for counts in self._counts.values():
            for s in gone:
                self.total -= counts[s % SLOTS]
                counts[s % SLOTS] = 0
        self._counts = {z: c for z, c in self._counts.items() if any(c)}
        self._slot = slot

    def shares(self) -> dict[str, float]:
        return {z: float(sum(c)) for z, c in self._counts.items()}


class Smooth:
    """The smooth sequence of one RRset's first tier and where each requester is in it (see
    policies/smooth.py): a requester's successive answers lead with the sequence's successive
    entries; one seen for the first time starts at a random place."""

    __slots__ = ("groups", "limits", "orders", "places", "rest", "seq", "size")

    def __init__(self, tiers: list[Tier]) -> None:
        self.groups = tiers  # what it was made from (the RRset's current tiers, by identity)
        first, weights = tiers[0] if tiers else ([], [])
        self.seq = [first[j] for j in sequence(weights)] if first else [0]
        self.size = len(first)
        self.rest = [i for ix, _ in tiers[1:] for i in ix]
        self.orders: dict[tuple[int, int | None], tuple[int, ...]] = {}
        self.places: dict[bytes, int] = {}  # requester -> its next place; oldest first
        self.limits: dict[tuple[int | None, bool], int | None] = {}  # RRSet.length, by (cap, tcp)

    def remake(self, tiers: list[Tier]) -> Smooth:
        """For new tiers (live figures changed): requesters keep their places."""
        made = Smooth(tiers)
        made.places = self.places
        return made

    def next(self, key: bytes, rng: random.Random, limit: int | None) -> tuple[int, ...]:
        places = self.places
        seq = self.seq
        place = places.pop(key, None)
        if place is None:
            place = rng.randrange(len(seq))
            if len(places) >= REQUESTERS:
                del places[next(iter(places))]
        elif place >= len(seq):
            place %= len(seq)
        places[key] = place + 1 if place + 1 < len(seq) else 0
        found = self.orders.get((place, limit))
        if found is None:
            want = self.size + len(self.rest) if limit is None else limit
            head = window(seq, place, min(want, self.size))
            found = tuple(head + self.rest[: want - len(head)])
            if len(self.orders) >= STICKY_MEMORY:
                self.orders.clear()
            self.orders[(place, limit)] = found
        return found


class Local:
    """The per-query decision of one balanced RRset (see the module's docstring)."""

    __slots__ = (
        "capacity",
        "demand",
        "healthy",
        "mapped",
        "maps",
        "min_healthy",
        "mode",
        "plan",
        "planned_at",
        "planned_total",
        "prefixes",
        "smooth",
        "smooth_on",
        "sticky",
        "sticky_on",
        "subs",
        "whole",
    )

    def __init__(
        self,
        whole: RRSet,
        mode: str,
        min_healthy: int,
        sticky_prefixes: tuple[int, int],
        demand: Demand,
        smooth: bool = False,
    ) -> None:
        self.whole = whole
        self.mode = _MODES[mode]
        self.sticky_on = whole.policy is consistent and whole.rtype != wire.SRV
        # Smooth sequences per requester, of each RRset answering (whole or a zone's).
        self.smooth_on = smooth
        self.smooth: dict[int, Smooth] = {}
        self.min_healthy = min_healthy
        self.prefixes = sticky_prefixes  # (IPv4, IPv6)
        self.demand = demand
        self.sticky: dict[int, dict[bytes, tuple[int, ...]]] = {}  # id(target) -> bucket -> order
        # Per zone: its members' RRset, their indices in ``whole``, their handed-out count and
        # weight (the fail-open tail is handed out but not counted).
        self.subs: dict[str, RRSet] = {}
        self.maps: dict[str, tuple[int, ...]] = {}
        # Per zone: its sub-RRset's orders as orders of ``whole`` (see _mapped).
        self.mapped: dict[str, dict[tuple[int, ...], tuple[int, ...]]] = {}
        self.healthy: dict[str, int] = {}
        self.capacity: dict[str, float] = {}
        self.plan: dict[str, Route] = {}
        self.planned_at = -REPLAN
        self.planned_total = 0
        if mode == OFF:
            return
        items: dict[str, list[int]] = {}
        tail: dict[str, list[int]] = {}
        n = len(whole.items)
        for i, item in enumerate(whole.members):
            zone = _zone_of(item)
            (items if i < n else tail).setdefault(zone, []).append(i)
        members = whole.members
        for zone in items.keys() | tail.keys():
            main, rest = items.get(zone, []), tail.get(zone, [])
            self.healthy[zone] = len(main)
            self.capacity[zone] = float(sum(members[i].weight for i in main))
            if zone == NO_ZONE:
                continue  # nobody is local to it: never answered on its own but as spill
            self.subs[zone] = RRSet(
                whole.rtype,
                [members[i] for i in main],
                whole.policy,
                whole.limit,
                [members[i] for i in rest],
            )
            self.maps[zone] = tuple(main + rest)
            self.mapped[zone] = {}
        if NO_ZONE in items:
            self.subs[NO_ZONE] = RRSet(
                whole.rtype, [members[i] for i in items[NO_ZONE]], whole.policy, whole.limit
            )
            self.maps[NO_ZONE] = tuple(items[NO_ZONE])
            self.mapped[NO_ZONE] = {}

    def like(self, whole: RRSet) -> Local:
        return Local(
            whole, MODES[self.mode], self.min_healthy, self.prefixes, self.demand, self.smooth_on
        )

    def order(
        self,
        rng: random.Random,
        cap: int | None,
        tcp: bool,
        address: bytes,
        source: int,
        zones: ZoneMap,
    ) -> tuple[tuple[int, ...], int]:
        """The order of the answer to a client at ``address`` (its ECS source prefix
        ``source``, else its full length) as indices into ``whole.members``, and the scope
        the answer holds for. An empty order: NODATA (``pin`` and the zone has nothing)."""
        whole = self.whole
        target, scope = whole, 0
        mapped: dict[tuple[int, ...], tuple[int, ...]] | None = None
        indices: tuple[int, ...] = ()
        mode = self.mode
        if mode:
            found = zones.memory.get(address)
            if found is None:
                found = zones.locate(address)
            zone, scope = found
            if zone is None:
                # Unknown clients get the normal answer; a resolver may give it to its whole
                # source prefix, not to located clients outside (RFC 7871 7.2.1).
                if source > scope:
                    scope = source
            else:
                picked = self._spill(zone, rng) if mode == _SPILL else self.held(zone)
                if picked is None:
                    whole.last = ()
                    return (), scope
                if picked != WHOLE:
                    target, indices = self.subs[picked], self.maps[picked]
                    mapped = self.mapped[picked]
        if self.sticky_on:
            key, prefix = self.sticky_key(address, source)
            if prefix > scope:
                scope = prefix
            order = self.sticky_order(target, key, cap, tcp)
        elif self.smooth_on:
            # The requester: the resolver's address, or the ECS subnet, whose answers follow
            # one sequence; a resolver caching per subnet must keep them apart (the scope).
            if source > scope:
                scope = source
            order = self._smooth(target, address + bytes((source,)), rng, cap, tcp)
        else:
            order = target.next_order(rng, cap, tcp)
        if mapped is not None:
            dropped = target.dropped
            if dropped is not None:
                target.dropped = None
                whole.dropped = _mapped(indices, mapped, dropped)
            order = _mapped(indices, mapped, order)
        whole.last = order
        if (self.sticky_on or self.smooth_on) and whole.counted and order:
            live = whole.members[order[0]].live  # next_order's tally, for these orders
            if live is not None:
                live.handed_out()
        return order, scope

    def _smooth(
        self, target: RRSet, key: bytes, rng: random.Random, cap: int | None, tcp: bool
    ) -> tuple[int, ...]:
        made = self.smooth.get(id(target))
        if made is None:
            made = self.smooth[id(target)] = Smooth(target.tiers())
        elif target.policy in LIVE_POLICIES:  # the tiers follow the reported figures
            tiers = target.tiers()
            if made.groups is not tiers:
                made = self.smooth[id(target)] = made.remake(tiers)
        limit = made.limits.get((cap, tcp), -1)
        if limit == -1:
            limit = made.limits[(cap, tcp)] = target.length(cap, tcp)
        return made.next(key, rng, limit)

    def _spill(self, zone: str, rng: random.Random) -> str:
        """The key in ``subs`` of the members that answer a client of ``zone`` (maybe NO_ZONE:
        the members of no zone), or WHOLE (the plan has no place with members for it)."""
        now = monotonic()
        demand = self.demand
        demand.add(zone, now)
        total = demand.total
        if now - self.planned_at >= REPLAN or total >= self.planned_total * 1.1 + 1:
            self.plan = spill_plan(self.capacity, demand.shares())
            self.planned_at, self.planned_total = now, total
        route = self.plan.get(zone)
        picked = zone if route is None else route.pick(zone, rng.random())
        return picked if picked in self.subs else WHOLE

    def held(self, zone: str) -> str | None:
        """``prefer`` and ``pin``: the key in ``subs`` of the members that answer a client of
        ``zone``; WHOLE for the whole RRset; None for none (NODATA)."""
        if self.mode == _PREFER:
            here = self.healthy.get(zone, 0) >= self.min_healthy
            return zone if here and zone in self.subs else WHOLE
        return zone if zone in self.subs else None

    def sticky_key(self, address: bytes, source: int) -> tuple[bytes, int]:
        """The client's sticky bucket (its subnet at ``sticky_prefix``, or at the ECS source
        prefix when that is shorter) and that prefix."""
        prefix = self.prefixes[len(address) == 16]
        if source < prefix:
            prefix = source
        return bucket(address, prefix), prefix

    def sticky_order(
        self, target: RRSet, key: bytes, cap: int | None, tcp: bool
    ) -> tuple[int, ...]:
        """The order of ``target`` for the sticky bucket ``key``: rendezvous hashing, items
        then the fail-open tail, remembered per bucket."""
        known = self.sticky.get(id(target))
        if known is None:
            known = self.sticky[id(target)] = {}
        order = known.get(key)
        if order is None:
            if len(known) >= STICKY_MEMORY:
                known.clear()
            limit = target.length(cap, tcp)
            n = len(target.items)
            head = _rank(key, target.items, limit)
            rest = 0 if limit is None else limit - len(head)
            if target.tail and (limit is None or rest > 0):
                head += [n + i for i in _rank(key, target.tail, None if limit is None else rest)]
            order = known[key] = tuple(head)
        return order


def _mapped(
    indices: tuple[int, ...],
    known: dict[tuple[int, ...], tuple[int, ...]],
    order: tuple[int, ...],
) -> tuple[int, ...]:
    """``order`` of a zone's sub-RRset as an order of the whole RRset, remembered: a sub-RRset
    draws from a few orders (its table or pool), so this is a lookup."""
    found = known.get(order)
    if found is None:
        if len(known) >= STICKY_MEMORY:
            known.clear()
        found = known[order] = tuple([indices[i] for i in order])
    return found


def _rank(key: bytes, items: Sequence[Item], limit: int | None) -> list[int]:
    ids = [_member_key(item) for item in items]
    return rendezvous(key, ids, [item.weight for item in items], limit)


def _member_key(item: Item) -> bytes:
    live = item.live
    return live.instance.id.encode() if live is not None else item.body


def _zone_of(item: Item) -> str:
    live = item.live
    zone = live.instance.zone if live is not None else None
    return zone or NO_ZONE


def attach(
    rrset: RRSet,
    mode: str,
    min_healthy: int,
    prefixes: tuple[int, int],
    demand: Demand,
    smooth: bool = False,
) -> RRSet:
    """``rrset`` made to answer by the client (its ``local``), if its settings ask for it:
    locality, stickiness, or a smooth sequence per requester (address records only)."""
    smooth = smooth and rrset.policy in SMOOTHED and rrset.rtype != wire.SRV
    if mode != OFF or smooth or (rrset.policy is consistent and rrset.rtype != wire.SRV):
        rrset.local = Local(rrset, mode, min_healthy, prefixes, demand, smooth)
    return rrset
