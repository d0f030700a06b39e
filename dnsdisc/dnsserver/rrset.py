"""The records of one (name, type) and how each answer orders them.

An ``Item`` is one pre-encoded record body (no owner) with what balancing and glue need to know
about it; an ``RRSet`` holds the items of one name and type and draws the order of each answer:
from a table of every order with its exact chance, from a standing pool of orders, or afresh
(round robin). The drawn order also keys the responder's cached replies (``cached_orders``).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from time import monotonic
from typing import TYPE_CHECKING

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.svcb import HTTPS
from dnsdisc.dnsserver.view import MemberView
from dnsdisc.policies.balance import (
    LIVE_POLICIES,
    MAX_TABLE_ORDERS,
    Policy,
    Tier,
    least_loaded,
    live_tiers,
    order_table,
    priority,
    round_robin,
    shuffle,
    srv_order,
    tiers,
    weighted,
)
from dnsdisc.policies.sample import TierSampler

if TYPE_CHECKING:
    from dnsdisc.dnsserver.locality import Local

# Offset of the target name inside a record body: 10 bytes of type/class/ttl/rdlength, then
# 6 bytes of SRV priority/weight/port before the target, none before an NS or CNAME target.
SRV_TARGET = 16
NAME_TARGET = 10
# An HTTPS/SVCB record's TargetName follows its 2-byte SvcPriority (RFC 9460 2.2).
HTTPS_TARGET = 12
# Balanced answers the responder's UDP cap (``dns.udp_answer_limit``) applies to when the
# service sets no max_answers: addresses, and the HTTPS records handed out like them.
_CAPPED = frozenset({wire.A, wire.AAAA, HTTPS})
# Orders kept per RRset and how often each is handed out before it is drawn again, on
# average, for policies with too many orders for a table (see RRSet.next_order).
POOL = 32
REUSE = 8


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
# least_loaded and latency read figures reported between rebuilds (heartbeats). Their tiers,
# table and pool stand while the figures stand: up to LIVE_SMALL members the figures are
# compared on every answer (a heartbeat shows in the next answer); above, reading them is O(n),
# so at most every LIVE_REFRESH seconds.
LIVE_REFRESH = 0.2
LIVE_SMALL = 64


class _Orders:
    """How the orders of one length are drawn: their table (see ``RRSet._table``), or the
    standing pool of drawn orders and where it is read."""

    __slots__ = ("limit", "pool", "pos", "table")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.table: tuple[list[float], list[tuple[int, ...]]] | None = None
        self.pool: list[tuple[int, ...]] = []
        self.pos = 0


class RRSet:
    """The records of one (name, type), and how to order them for each answer.

    An order is a small tuple of indices, only as long as the answer may be (``limit``, or the
    responder's cap for UDP), which the responder also uses as the key to a reply it has already
    encoded. Where a policy's orders are few enough, they are drawn from a table of every order
    with its exact chance (one random number per answer); else from a standing pool (see
    ``next_order``); for the policies that read reported load and latency, from the figures
    standing (``_watch``). Round robin draws for every answer. Only the places an answer shows
    are drawn (``TierSampler``, a rotating offset): the cost of a draw grows with the answer,
    not with the RRset."""

    __slots__ = (
        "capped",
        "counted",
        "counter",
        "draws",
        "dropped",
        "figures",
        "fit_tcp",
        "fit_udp",
        "fixed",
        "forced",
        "hint",
        "items",
        "last",
        "least",
        "limit",
        "local",
        "members",
        "policy",
        "rtype",
        "sampled_at",
        "sampler",
        "tail",
        "tcp_cap",
        "tcp_orders",
        "udp_cap",
        "udp_orders",
    )

    def __init__(
        self,
        rtype: int,
        items: Sequence[Item],
        policy: Policy | None = None,
        limit: int | None = None,
        tail: Sequence[Item] = (),
        least: int | None = None,
        hint: Callable[[], list[Tier]] | None = None,
    ) -> None:
        """``least`` (the shortest body) and ``hint`` (makes the tiers of ``_groups``) may be
        given by a caller that keeps them, so that a large RRset takes no pass in Python."""
        self.rtype = rtype
        self.items = tuple(items)
        self.policy = policy
        self.limit = limit
        # Handed out after all of ``items`` (fail-open: the unhealthy, behind the healthy).
        self.tail = tuple(tail)
        self.members = self.items + self.tail
        self.counter = 0
        self.draws: dict[int | None, _Orders] = {}  # by order length; see next_order
        # The draws each transport used last, and the cap they were for.
        self.udp_cap: int | None = None
        self.udp_orders: _Orders | None = None
        self.tcp_cap: int | None = None
        self.tcp_orders: _Orders | None = None
        self.sampler: TierSampler | None = None  # made at the first draw; see _sample
        self.sampled_at = 0.0
        self.figures: tuple[float | None, ...] = ()  # the live figures it was made from
        self.last: tuple[int, ...] = ()  # the order drawn last
        # An order the standing pool has just replaced: its cached replies can go.
        self.dropped: tuple[int, ...] | None = None
        self.forced: tuple[int, ...] | None = None  # set by the responder to re-encode an order
        # Answers by the client (locality, stickiness): see locality.Local. Its orders index
        # ``members`` too; the responder asks it, not ``next_order``, with the client's address.
        self.local: Local | None = None
        # Every answer lists the items as they are: nothing to draw.
        self.fixed = policy is None and not self.tail and limit is None
        # Who a balanced address answer hands out first is counted (the dashboard's shares).
        self.counted = policy is not None and rtype in (wire.A, wire.AAAA)
        self.capped = policy is not None and rtype in _CAPPED
        # More places than the largest reply can hold (each record takes its body and at least
        # a 2-byte owner pointer): drawing this many shows the same records, and the same TC,
        # as drawing them all.
        self.hint = hint if policy not in LIVE_POLICIES else None
        if least is None:
            members = self.members
            # One record is the common case (an instance's own name, most PTR names): a
            # generator and ``min`` cost nearly as much as the rest of making the RRset, and a bulk
            # registration makes three such RRsets per instance in every worker.
            if len(members) == 1:
                least = len(members[0].body)
            else:
                least = min((len(m.body) for m in members), default=0)
        self.least = least
        self.fit_udp = wire.EDNS_SIZE // (least + 2) + 1
        self.fit_tcp = 65535 // (least + 2) + 1

    def like(self) -> RRSet:
        """An RRset of the same records and settings, sharing their tuples (no copy), with
        draw state of its own: names whose groups hold the same members get one each, so each
        name's answers rotate, and its cached replies are dropped, on their own."""
        twin = RRSet(
            self.rtype, self.items, self.policy, self.limit, self.tail, self.least, self.hint
        )
        if self.local is not None:
            twin.local = self.local.like(twin)
        return twin

    def length(self, cap: int | None = None, tcp: bool = True) -> int | None:
        """How many places of the order to draw (None: all): ``limit`` (max_answers), else for
        a balanced address RRset ``cap`` (the responder's UDP cap), and never more than the
        reply could hold (``fit_udp``, ``fit_tcp``)."""
        limit = self.limit
        if limit is None and self.capped:
            limit = cap
        fit = self.fit_tcp if tcp else self.fit_udp
        if limit is None or fit < limit:
            limit = fit
        return None if limit >= len(self.members) else limit

    def next_order(
        self, rng: random.Random, cap: int | None = None, tcp: bool = True
    ) -> tuple[int, ...]:
        """The order of the next answer: indices into ``members``, cut to ``length``."""
        figures = self.policy in LIVE_POLICIES
        if figures:
            self._watch()
        draws = self.tcp_orders if tcp else self.udp_orders
        if draws is None or cap != (self.tcp_cap if tcp else self.udp_cap):
            draws = self._orders(cap, tcp)
        limit = draws.limit
        table = draws.table
        if table is not None:
            cum, orders = table
            order = self.last = orders[bisect_right(cum, rng.random())]
        elif figures or self.policy in RESAMPLED:
            # Too many orders for a table (more than 720): a standing pool of orders drawn from
            # the policy, read in turn, each slot redrawn with chance 1/REUSE when read. Every
            # slot always holds an independent draw and which slot is read does not depend on
            # what it holds, so each answer's order has exactly the policy's distribution;
            # only neighbouring answers are no longer independent. (Live policies: for the
            # figures standing; ``_watch`` empties the pool when they change.)
            pool = draws.pool
            if len(pool) < POOL:
                order = self._draw(rng, limit)
                pool.append(order)
            else:
                pos = draws.pos
                draws.pos = (pos + 1) % POOL
                if rng.random() < 1 / REUSE:
                    self.dropped = pool[pos]
                    pool[pos] = self._draw(rng, limit)
                order = pool[pos]
            self.last = order
        else:  # round robin counts queries
            order = self.last = self._draw(rng, limit)
        if self.counted and order:
            live = self.members[order[0]].live
            if live is not None:
                live.handed_out()
        return order

    def tiers(self) -> list[Tier]:
        """The tiers the policy orders the members by now (for load and latency, by the
        figures now): indices into ``members`` with their weights, tier after tier."""
        policy = self.policy
        if policy is None or policy is round_robin or len(self.members) <= 1:
            return [(list(range(len(self.members))), [1.0] * len(self.members))]
        if policy in LIVE_POLICIES:
            self._watch()
        return self._sample(policy).groups

    def _orders(self, cap: int | None, tcp: bool) -> _Orders:
        limit = self.length(cap, tcp)
        draws = self.draws.get(limit)
        if draws is None:
            draws = self.draws[limit] = _Orders(limit)
            draws.table = self._table(limit)
        if tcp:
            self.tcp_cap, self.tcp_orders = cap, draws
        else:
            self.udp_cap, self.udp_orders = cap, draws
        return draws

    def _groups(self, policy: Policy) -> list[Tier] | None:
        """The tiers of ``items`` then of ``tail``, as indices into ``members``."""
        if self.hint is not None:
            return self.hint()
        pick = live_tiers if policy in LIVE_POLICIES else tiers
        items = self.items
        # No tier for no items: an empty first tier would end an order table before the tail.
        groups = pick(policy, items) if len(items) > 1 else [([0], [1.0])] if items else []
        if groups is None:
            return None
        if self.tail:
            rest = pick(policy, self.tail)
            if rest is None:
                return None
            first = len(items)
            groups += [([first + i for i in ix], ws) for ix, ws in rest]
        return groups

    def _table(self, limit: int | None) -> tuple[list[float], list[tuple[int, ...]]] | None:
        """For policies whose orders are independent weighted tiers (weighted, priority,
        random, SRV) and not too many: every possible order with its exact chance, so that a
        draw costs one random number. The same distribution as ``_draw``, by construction
        (tests compare the two)."""
        policy = self.policy
        if policy is None:
            return None
        if policy in LIVE_POLICIES:
            return order_table(self._sample(policy).groups, limit)
        groups = self._groups(policy)
        return None if groups is None else order_table(groups, limit)

    def _draw(self, rng: random.Random, limit: int | None) -> tuple[int, ...]:
        policy = self.policy
        items = self.items
        n = len(items)
        if policy is round_robin or policy is None or n + len(self.tail) <= 1:
            out = self._rotate(limit)
        else:
            out = self._sample(policy).draw(limit, rng)
        return tuple(out[:limit] if limit is not None else out)

    def _rotate(self, limit: int | None) -> list[int]:
        """Round robin's first ``limit`` places (or the items as they are, without a policy):
        the order rotated by one place per answer, the tail after the items."""
        n, first = len(self.items), len(self.items)
        rotating = self.policy is round_robin
        if rotating and n > 1:
            self.counter += 1
        want = len(self.members) if limit is None else limit
        start = self.counter % n if rotating and n else 0
        end = start + min(want, n)
        out = list(range(start, end)) if end <= n else [*range(start, n), *range(end - n)]
        if want > n and self.tail:
            m = len(self.tail)
            tail_start = self.counter % m if rotating else 0
            out += [first + (tail_start + j) % m for j in range(min(want - n, m))]
        return out

    def _sample(self, policy: Policy) -> TierSampler:
        """The sampler of this RRset's tiers: kept until the RRset is rebuilt, or for the live
        policies until their figures change (``_watch``)."""
        sampler = self.sampler
        if sampler is None:
            if policy in LIVE_POLICIES:
                self._watch()
                assert self.sampler is not None
                return self.sampler
            sampler = self.sampler = TierSampler(self._groups(policy) or [])
        return sampler

    def _watch(self) -> None:
        """For least_loaded and latency: when the reported figures changed, the tiers, and the
        tables and pools drawn from them, are made again from the figures now. Everything an
        answer draws is thus computed once per change of the figures, not per answer."""
        sampler = self.sampler
        members = self.members
        if len(members) > LIVE_SMALL:
            now = monotonic()
            if sampler is not None and now - self.sampled_at < LIVE_REFRESH:
                return
            self.sampled_at = now
        if self.policy is least_loaded:
            figures = tuple([m.load for m in members])
        else:
            figures = tuple([m.latency_ms for m in members])
        if sampler is not None and figures == self.figures:
            return
        self.figures = figures
        assert self.policy is not None
        groups = self._groups(self.policy) or []
        self.sampler = TierSampler(groups)
        for draws in self.draws.values():
            draws.table = order_table(groups, draws.limit)
            draws.pool.clear()
            draws.pos = 0

    def ordered(
        self, rng: random.Random, cap: int | None = None, tcp: bool = True
    ) -> Sequence[Item]:
        """The items for one answer: in the policy's order, cut to ``length``."""
        if self.fixed:
            return self.items
        order = self.forced if self.forced is not None else self.next_order(rng, cap, tcp)
        members = self.members
        return [members[i] for i in order]


# Round robin shows one window per rotation offset, the same one every time the rotation comes
# round: all of them are kept while they hold this many places in all (5,000 windows of 16
# records, about 3 MB of replies), so that from the second round on each answer is a cached
# reply. Longer windows (TCP, every record) would push the rest of the cache out for nothing.
ROTATION_PLACES = 1 << 17
# Replies kept per query of a located RRset (see cached_orders); the cache's bytes bound them too.
LOCAL_ORDERS = 4 * MAX_TABLE_ORDERS


def cached_orders(rrset: RRSet | None, places: int = 0) -> int:
    """How many replies (one per order) the responder keeps for a query whose answer ``rrset``
    orders (None: nothing is ordered), its orders being of ``places`` places. For an RRset whose
    orders come from a table, all of them (a weighted RRset of 5 with max_answers 5 has 120), so
    that its entry never empties itself while its answers cycle through the table. For round
    robin, every window while they hold ROTATION_PLACES places in all. For one that draws its
    orders from a pool (load and latency above a table's size too), twice the pool: the pool's
    orders, and room for what it replaces."""
    if rrset is not None and rrset.local is not None:
        # One set of orders per zone, and for stickiness one order per client bucket.
        return LOCAL_ORDERS
    if rrset is None or any(d.table is not None for d in rrset.draws.values()):
        return MAX_TABLE_ORDERS
    if rrset.policy is round_robin:
        windows = len(rrset.members)
        if windows * max(places, 1) <= ROTATION_PLACES:
            return max(windows, 2 * POOL)
    return 2 * POOL
