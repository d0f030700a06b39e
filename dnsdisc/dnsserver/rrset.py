"""The records of one (name, type) and how each answer orders them.

An ``Item`` is one pre-encoded record body (no owner) with what balancing and glue need to know
about it; an ``RRSet`` holds the items of one name and type and draws the order of each answer:
from a table of every order with its exact chance, from a standing pool of orders, or afresh
(round robin, and the policies that read reported load and latency). The drawn order also keys
the responder's cached replies (``cached_orders``).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.view import MemberView
from dnsdisc.policies.balance import (
    LIVE_POLICIES,
    MAX_TABLE_ORDERS,
    Policy,
    order_table,
    priority,
    shuffle,
    srv_order,
    tiers,
    weighted,
)

# Offset of the target name inside a record body: 10 bytes of type/class/ttl/rdlength, then
# 6 bytes of SRV priority/weight/port before the target, none before an NS or CNAME target.
SRV_TARGET = 16
NAME_TARGET = 10
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
    orders (None: nothing is ordered). For an RRset whose orders come from a table, all of them
    (a weighted RRset of 5 with max_answers 5 has 120), so that its entry never empties itself
    while its answers cycle through the table. For one that draws its orders (pool, round robin,
    load), twice the pool: the pool's orders, and room for what it replaces."""
    if rrset is None or rrset.table is not None:
        return MAX_TABLE_ORDERS
    return 2 * POOL
