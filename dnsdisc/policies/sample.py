"""Drawing the first k places of a tiered order without drawing the rest.

Every policy but round robin orders its candidates as tiers one after the other (``tiers``,
``live_tiers`` in balance.py), each tier by weighted sampling without replacement. An answer
shows only its first k places, so ``TierSampler`` draws just those: tier by tier, each place by
one uniform number and a bisection in the tier's cumulative weights, redrawn when it falls on a
candidate already placed. Conditioned on the places drawn so far that picks candidate i with
chance w_i / (sum of the weights not yet placed), which is exactly how Efraimidis-Spirakis
orders a tier, so the first k places have the policy's distribution (tests compare the two).
The cost is O(k log n) per draw instead of O(n log n); the cumulative weights are computed
once, when the tiers change.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

from dnsdisc.policies.balance import Tier

# Batches of draws before the rest of a tier is drawn the long way: placed candidates holding
# most of a tier's weight (one heavy instance) would otherwise cost many redraws.
_REDRAWS = 4


class _Prepared:
    __slots__ = ("cum", "indices", "total", "uniform", "weights")

    def __init__(self, indices: Sequence[int], weights: Sequence[float]) -> None:
        self.indices = list(indices)
        self.weights = list(weights)
        self.uniform = len(set(self.weights)) <= 1
        self.cum = list(accumulate(self.weights))
        self.total = self.cum[-1] if self.cum else 0.0
        if self.cum:
            # rand() * total may round up to total: it then lands on the last candidate.
            self.cum[-1] = math.inf


class TierSampler:
    """The first ``k`` places of the order that ``groups`` (tiers, one after the other) give."""

    __slots__ = ("groups", "length", "tiers")

    def __init__(self, groups: Sequence[Tier]) -> None:
        self.groups = list(groups)
        self.tiers = [_Prepared(ix, ws) for ix, ws in groups if ix]
        self.length = sum(len(t.indices) for t in self.tiers)

    def draw(self, k: int | None, rng: random.Random) -> list[int]:
        left = self.length if k is None else min(k, self.length)
        out: list[int] = []
        for tier in self.tiers:
            if left <= 0:
                break
            take = min(left, len(tier.indices))
            out += _draw_tier(tier, take, rng)
            left -= take
        return out


def _draw_tier(tier: _Prepared, take: int, rng: random.Random) -> list[int]:
    indices = tier.indices
    n = len(indices)
    if tier.uniform:
        # Equal weights: any ordered sample of ``take`` is equally likely, as in a shuffle.
        return [indices[j] for j in rng.sample(range(n), take)]
    if 2 * take > n:
        return _long_way(tier, {}, take, rng)
    cum, total, rand = tier.cum, tier.total, rng.random
    # Draws with replacement, kept in order of first appearance: the candidates that appear
    # are a draw without replacement (a repeat is the redraw), in batches to save the loop.
    placed: dict[int, None] = {}
    for _ in range(_REDRAWS):
        placed.update(dict.fromkeys([bisect_right(cum, rand() * total) for _ in range(take)]))
        if len(placed) >= take:
            return [indices[j] for j in list(placed)[:take]]
    return _long_way(tier, placed, take, rng)


def _long_way(tier: _Prepared, placed: dict[int, None], take: int, rng: random.Random) -> list[int]:
    """The places after ``order``, by Efraimidis-Spirakis keys over the candidates not yet
    placed (which, given the places drawn, is the same distribution as going on)."""
    rand, log = rng.random, math.log
    weights = tier.weights
    keys = [
        (log(1.0 - rand()) / weights[j], j)
        for j in range(len(weights))
        if j not in placed and weights[j] > 0
    ]
    keys.sort(reverse=True)
    rest = [j for _, j in keys[: take - len(placed)]]
    return [tier.indices[j] for j in [*placed, *rest]]
