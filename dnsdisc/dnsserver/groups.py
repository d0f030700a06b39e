"""The members of one group of a service (its own name, a protocol, a tag), kept sorted so that
a change of one member costs the group O(log n) and a few C-level list copies, not a pass over
the group in Python.

A group keeps its members in lists by what answers do with them (``Runs``: one per bucket of
``ServiceNames._balanced``), each in joining order, with their records, weights, priorities and
body lengths. From these an RRset takes its items by concatenating lists, the size bound of its
replies from the body lengths, and the tiers its draws are made from (``tiers_hint``) from the
weights, where the policy's tiers follow from the buckets alone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from functools import partial

from dnsdisc.dnsserver.rrset import Item
from dnsdisc.policies.balance import Policy, Tier, priority, shuffle, srv_order, weighted


class Run:
    """Members of one bucket, in joining order (``keys``), with what RRsets are made of."""

    __slots__ = ("items", "keys", "lens", "positive", "prios", "weights")

    def __init__(self, positive: bool) -> None:
        self.keys: list[int] = []
        self.items: list[Item] = []
        self.weights: list[int] = []
        # Every member of a bucket is active (weight > 0) or every one is drained (weight 0).
        self.positive = positive
        self.prios: dict[int, int] = {}  # priority -> how many members have it
        self.lens: dict[int, int] = {}  # record body length -> how many

    def add(self, key: int, item: Item) -> None:
        at = bisect_left(self.keys, key)
        self.keys.insert(at, key)
        self.items.insert(at, item)
        self.weights.insert(at, item.weight)
        _count(self.prios, item.priority, 1)
        _count(self.lens, len(item.body), 1)

    def remove(self, key: int) -> None:
        at = bisect_left(self.keys, key)
        item = self.items[at]
        del self.keys[at], self.items[at], self.weights[at]
        _count(self.prios, item.priority, -1)
        _count(self.lens, len(item.body), -1)


def _count(counts: dict[int, int], key: int, step: int) -> None:
    left = counts.get(key, 0) + step
    if left:
        counts[key] = left
    else:
        del counts[key]


class Group:
    """One group's members: address records in 8 buckets (fallback 4 | IPv6 2 | active 1), SRV
    records in 4 (fallback 2 | active 1), and how many members it has, in rotation or not."""

    __slots__ = ("addr", "size", "srv")

    def __init__(self) -> None:
        self.size = 0
        # The buckets no member has joined yet are two shared empty runs, made a run of the
        # group's own at the first member that joins: most groups fill one or two of their 12
        # buckets, and 12 runs (5 containers each) are ~4 kB, 1.2 kB an instance for a service
        # of 10 in three groups (its name, its protocol, a tag): 1.2 GB for a million instances
        # in every DNS process. Readers only read a run; only ``add`` writes one.
        self.addr = _EMPTY_ADDR[:]
        self.srv = _EMPTY_SRV[:]

    def add(self, key: int, slot: int, addr: Item, srv: Item) -> None:
        self.size += 1
        if slot >= 0:
            run = self.addr[slot]
            if run is _EMPTY[run.positive]:
                run = self.addr[slot] = Run(run.positive)
            run.add(key, addr)
            s = srv_slot(slot)
            run = self.srv[s]
            if run is _EMPTY[run.positive]:
                run = self.srv[s] = Run(run.positive)
            run.add(key, srv)

    def remove(self, key: int, slot: int) -> None:
        self.size -= 1
        if slot >= 0:
            self.addr[slot].remove(key)
            self.srv[srv_slot(slot)].remove(key)


# Shared by every group for its buckets without members; never written (see ``Group``).
_EMPTY = (Run(False), Run(True))
_EMPTY_ADDR = [_EMPTY[b & 1] for b in range(8)]
_EMPTY_SRV = [_EMPTY[b & 1] for b in range(4)]


def srv_slot(slot: int) -> int:
    return ((slot >> 1) & 2) | (slot & 1)


def least(*runs: Run) -> int | None:
    """The shortest record body of ``runs`` (None: no records)."""
    sizes = [min(r.lens) for r in runs if r.lens]
    return min(sizes) if sizes else None


# Tiers to be made at the first draw: (uniform, segments), each segment (start, length,
# weights, positive) a run of the RRset's items; a block is ``balance._weight_tiers`` over its
# segments one after the other (a uniform tier if ``uniform``).
Segment = tuple[int, int, list[int], bool]
Block = tuple[bool, list[Segment]]
Hint = Callable[[], list[Tier]]


def tiers_hint(policy: Policy, main: Run, tail: Run | None = None) -> Hint | None:
    """The tiers ``RRSet._groups`` would compute for items ``main`` then ``tail`` under
    ``policy``, to be made when first drawn from copies of the runs' weights taken now (a
    C-level copy); None where they do not follow from the buckets (several priorities in a
    run, or a policy that reads live figures)."""
    n = len(main.keys)
    head: list[Tier] = []
    blocks: list[Block] = []
    if n <= 1:
        head = [([0], [1.0])] if n else []  # as ``RRSet._groups``
    else:
        block = _block(policy, [(0, main)])
        if block is None:
            return None
        blocks.append(block)
    if tail is not None and tail.keys:
        block = _block(policy, [(n, tail)])
        if block is None:
            return None
        blocks.append(block)
    return partial(_make, head, blocks)


def srv_hint(handed: Run, fallback: Run) -> Hint | None:
    """The tiers of ``srv_order`` over ``handed`` then ``fallback`` (one SRV RRset's items)."""
    n = len(handed.keys) + len(fallback.keys)
    if n <= 1:
        return partial(_make, [(list(range(n)), [1.0])], [])
    h, f = handed.prios, fallback.prios
    if len(h) > 1 or len(f) > 1:
        return None
    parts = [(0, handed), (len(handed.keys), fallback)]
    if not h or not f or next(iter(h)) == next(iter(f)):
        block = _block(weighted, parts)
        assert block is not None
        return partial(_make, [], [block])
    if next(iter(h)) > next(iter(f)):
        parts.reverse()  # RFC 2782: the lower priority first
    blocks = [_block(weighted, [part]) for part in parts]
    return partial(_make, [], [b for b in blocks if b is not None])


def _block(policy: Policy, runs: list[tuple[int, Run]]) -> Block | None:
    """``balance.tiers(policy, items)`` for items that are the runs one after the other (each
    at its start index), all of one priority if the policy reads priorities."""
    if policy is priority or policy is srv_order:
        if len({p for _, r in runs for p in r.prios}) > 1:
            return None
    elif policy is not weighted and policy is not shuffle:
        return None
    return policy is shuffle, [(at, len(r.keys), r.weights[:], r.positive) for at, r in runs]


def _make(head: list[Tier], blocks: list[Block]) -> list[Tier]:
    out = list(head)
    for uniform, segments in blocks:
        if uniform:
            start = segments[0][0]
            n = sum(seg[1] for seg in segments)
            out.append((list(range(start, start + n)), [1.0] * n))
            continue
        pos_ix: list[int] = []
        pos_w: list[float] = []
        zero_ix: list[int] = []
        for start, n, weights, positive in segments:
            if positive:
                pos_ix += range(start, start + n)
                pos_w += weights
            else:
                zero_ix += range(start, start + n)
        if pos_ix:
            out.append((pos_ix, pos_w))
        if zero_ix:
            out.append((zero_ix, [1.0] * len(zero_ix)))
    return out
