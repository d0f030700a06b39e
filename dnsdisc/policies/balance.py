"""Balancing policies: pure functions that order a service's candidates for one answer.

A policy gets the candidates (anything with ``weight``, ``priority``, ``load`` and
``latency_ms``), a per-RRset query counter and a random source, and returns candidate indices in
answer order. It may return fewer than all of them (``priority`` keeps one tier). It never sees
bytes or sockets, and its randomness is injected so tests can fix the seed. ``POLICIES`` maps the
names accepted by the API and the config to the functions; ``srv_order`` is the RFC 2782 order
every SRV answer uses, whatever the service's policy.

Drained instances (weight 0) are not the policies' business: the answer index hands a policy
only the active candidates, or only the drained ones when no active one is left.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable, Sequence
from typing import Protocol


class Candidate(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def priority(self) -> int: ...

    @property
    def load(self) -> float | None: ...

    @property
    def latency_ms(self) -> float | None: ...


Policy = Callable[[Sequence[Candidate], int, _random.Random], list[int]]

# Latencies below this are measurement noise; it also keeps 1/latency finite.
_MIN_LATENCY_MS = 0.1


def round_robin(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Rotate the order by one place per query: over n*k queries each of k candidates is first
    exactly n times."""
    n = len(cands)
    start = counter % n if n else 0
    return [*range(start, n), *range(start)]


def shuffle(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """A uniform random permutation per query."""
    order = list(range(len(cands)))
    rng.shuffle(order)
    return order


def _weighted_order(
    indices: Sequence[int], weights: Sequence[float], rng: _random.Random
) -> list[int]:
    """Weighted random sampling without replacement (Efraimidis-Spirakis): the chance that an
    index comes first is its weight over the sum, and so on down the list. Zero weights come
    last, in random order."""
    rand, log = rng.random, math.log
    if min(weights, default=1) > 0:
        # log(u) / w orders like u ** (1/w) (the exponential race of rate w) but cannot
        # underflow to 0.0 for small weights, which would tie and skew the order.
        keys = [log(1.0 - rand()) / w for w in weights]
        ranked = sorted(range(len(keys)), key=keys.__getitem__, reverse=True)
        return [indices[r] for r in ranked]
    keyed = []
    for i, w in zip(indices, weights, strict=True):
        if w > 0:
            keyed.append((log(1.0 - rand()) / w, 0.0, i))
        else:
            keyed.append((-math.inf, rand(), i))
    keyed.sort(reverse=True)
    return [i for _, _, i in keyed]


def weighted(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """P(candidate i first) = weight_i / sum(weights), and so on down the list."""
    return _weighted_order(range(len(cands)), [c.weight for c in cands], rng)


def priority(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Failover: only the lowest priority number's tier, weighted within it."""
    if not cands:
        return []
    best = min(c.priority for c in cands)
    tier = [i for i, c in enumerate(cands) if c.priority == best]
    return _weighted_order(tier, [cands[i].weight for i in tier], rng)


def least_loaded(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Lowest reported load first, ties broken at random; candidates that reported no load
    follow in weighted order. With no load reported at all this is ``weighted``."""
    known = [i for i, c in enumerate(cands) if c.load is not None]
    if not known:
        return weighted(cands, counter, rng)
    unknown = [i for i, c in enumerate(cands) if c.load is None]
    # The random second key breaks ties without favouring registration order.
    known.sort(key=lambda i: (cands[i].load, rng.random()))
    return known + _weighted_order(unknown, [cands[i].weight for i in unknown], rng)


def latency(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Weighted, with each weight divided by the candidate's measured latency. Candidates with
    no measurement count as the median of those measured; none measured is plain ``weighted``."""
    measured = sorted(max(c.latency_ms, _MIN_LATENCY_MS) for c in cands if c.latency_ms is not None)
    if not measured:
        return weighted(cands, counter, rng)
    median = measured[len(measured) // 2]
    weights = [
        c.weight / (max(c.latency_ms, _MIN_LATENCY_MS) if c.latency_ms is not None else median)
        for c in cands
    ]
    return _weighted_order(range(len(cands)), weights, rng)


def consistent(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Sticky: each client subnet keeps its instances (``locality.rendezvous``, which the answer
    code applies with the client's subnet). Where no client is known it draws as ``weighted``."""
    return weighted(cands, counter, rng)


def srv_order(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """RFC 2782: ascending priority; within a priority, weighted selection without replacement.
    Every record is kept: SRV clients make their own choice from the real priorities and weights."""
    tiers: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        tiers.setdefault(c.priority, []).append(i)
    out: list[int] = []
    for prio in sorted(tiers):
        members = tiers[prio]
        out += _weighted_order(members, [cands[i].weight for i in members], rng)
    return out


POLICIES: dict[str, Policy] = {
    "round_robin": round_robin,
    "random": shuffle,
    "weighted": weighted,
    "priority": priority,
    "least_loaded": least_loaded,
    "latency": latency,
    "consistent": consistent,
}
DEFAULT_POLICY = "weighted"
# Policies that read figures reported after the answer index was built (load, latency): their
# orders cannot be drawn ahead of time.
LIVE_POLICIES: frozenset[Policy] = frozenset({least_loaded, latency})

# A tier: candidate indices and their weights, ordered by weighted sampling without replacement.
Tier = tuple[list[int], list[float]]


def _weight_tiers(indices: Sequence[int], weights: Sequence[float]) -> list[Tier]:
    """``_weighted_order`` as tiers: the positive weights, then the zeros in uniform order."""
    pos = [(i, w) for i, w in zip(indices, weights, strict=True) if w > 0]
    zero = [i for i, w in zip(indices, weights, strict=True) if w <= 0]
    tiers = [([i for i, _ in pos], [w for _, w in pos])] if pos else []
    if zero:
        tiers.append((zero, [1.0] * len(zero)))
    return tiers


def tiers(policy: Policy, cands: Sequence[Candidate]) -> list[Tier] | None:
    """The order ``policy`` draws for ``cands``, as independent tiers one after the other; None
    for policies that are not of that shape (round robin, load and latency)."""
    n = len(cands)
    if policy is shuffle:
        return [(list(range(n)), [1.0] * n)]
    if policy is weighted or policy is consistent:
        return _weight_tiers(range(n), [c.weight for c in cands])
    if policy is priority:
        if not cands:
            return []
        best = min(c.priority for c in cands)
        tier = [i for i, c in enumerate(cands) if c.priority == best]
        return _weight_tiers(tier, [cands[i].weight for i in tier])
    if policy is srv_order:
        by_prio: dict[int, list[int]] = {}
        for i, c in enumerate(cands):
            by_prio.setdefault(c.priority, []).append(i)
        out: list[Tier] = []
        for prio in sorted(by_prio):
            members = by_prio[prio]
            out += _weight_tiers(members, [cands[i].weight for i in members])
        return out
    return None


# The most orders a table lists (6! = 720): beyond that, drawing is cheaper than listing.
MAX_TABLE_ORDERS = 720
# Tables already made, by the tiers' shape: services of the same shape (5 instances of equal
# weight: 120 orders) share one, instead of ~15 kB and ~0.6 ms each for every RRset drawn from
# (thousands of services, each with its A, AAAA and SRV RRsets). Emptied when they hold more
# than _MAX_HELD orders in all (about 6 MB).
OrderTable = tuple[list[float], list[tuple[int, ...]]]
_TABLES: dict[tuple[object, ...], OrderTable | None] = {}
_MAX_HELD = 1 << 16
_held = 0


def order_table(
    groups: Sequence[Tier], limit: int | None, max_orders: int = MAX_TABLE_ORDERS
) -> OrderTable | None:
    """Every order the tiers can give, cut to ``limit``, with cumulative probabilities: one
    uniform number and a bisection then draw an order with exactly the policy's distribution.
    None when there would be more than ``max_orders`` of them. The lists returned may be shared
    with other callers: they are never changed."""
    length = sum(len(ix) for ix, _ in groups)
    if limit is not None:
        length = min(length, limit)
    count, left = 1, length
    for indices, _ in groups:
        for k in range(len(indices), len(indices) - min(left, len(indices)), -1):
            count *= k
        left -= min(left, len(indices))
        if count > max_orders:
            return None
    global _held
    shape = (length, max_orders, *[(tuple(ix), tuple(ws)) for ix, ws in groups])
    if shape in _TABLES:
        return _TABLES[shape]
    table = _order_table(groups, length, max_orders)
    size = 1 if table is None else len(table[1])
    if _held + size > _MAX_HELD:
        _TABLES.clear()
        _held = 0
    _TABLES[shape] = table
    _held += size
    return table


def _order_table(groups: Sequence[Tier], length: int, max_orders: int) -> OrderTable | None:
    orders: list[tuple[float, tuple[int, ...]]] = [(1.0, ())]
    for indices, weights in groups:
        take = min(len(indices), length - len(orders[0][1]))
        if take <= 0:
            break
        grown: list[tuple[float, tuple[int, ...]]] = []
        for p, prefix in orders:
            for q, part in _prefixes(indices, weights, take):
                grown.append((p * q, prefix + part))
                if len(grown) > max_orders:
                    return None
        orders = grown
    cum, total = [], 0.0
    for p, _ in orders:
        total += p
        cum.append(total)
    cum = [c / total for c in cum]
    cum[-1] = 1.0  # a uniform number below 1 always falls inside
    return cum, [o for _, o in orders]


def _prefixes(
    indices: Sequence[int], weights: Sequence[float], take: int
) -> list[tuple[float, tuple[int, ...]]]:
    """Ordered draws of ``take`` of ``indices`` without replacement, each with its chance."""
    if take == 0:
        return [(1.0, ())]
    total = sum(weights)
    out = []
    for j, (i, w) in enumerate(zip(indices, weights, strict=True)):
        rest_i = [*indices[:j], *indices[j + 1 :]]
        rest_w = [*weights[:j], *weights[j + 1 :]]
        for q, tail in _prefixes(rest_i, rest_w, take - 1):
            out.append((w / total * q, (i, *tail)))
    return out


def live_tiers(policy: Policy, cands: Sequence[Candidate]) -> list[Tier] | None:
    """``least_loaded`` and ``latency`` as tiers, from the figures reported now: the same
    distribution as the functions above (tests compare them). Least loaded: one uniform tier per
    distinct load, lowest first (a random tie-break is a uniform order within equal loads), then
    the candidates without a load, weighted. Latency: one weighted tier of weight / latency."""
    n = len(cands)
    if policy is least_loaded:
        known = [i for i, c in enumerate(cands) if c.load is not None]
        if not known:
            return _weight_tiers(range(n), [c.weight for c in cands])
        by_load: dict[float, list[int]] = {}
        for i in known:
            load = cands[i].load
            assert load is not None
            by_load.setdefault(load, []).append(i)
        out: list[Tier] = [(by_load[x], [1.0] * len(by_load[x])) for x in sorted(by_load)]
        unknown = [i for i, c in enumerate(cands) if c.load is None]
        return out + _weight_tiers(unknown, [cands[i].weight for i in unknown])
    if policy is latency:
        lat = [c.latency_ms for c in cands]
        measured = sorted(max(x, _MIN_LATENCY_MS) for x in lat if x is not None)
        if not measured:
            return _weight_tiers(range(n), [c.weight for c in cands])
        median = measured[len(measured) // 2]
        weights = [
            c.weight / (max(x, _MIN_LATENCY_MS) if x is not None else median)
            for c, x in zip(cands, lat, strict=True)
        ]
        return _weight_tiers(range(n), weights)
    return None
