"""Smooth weighted sequences: which instance comes first in each of a requester's successive
answers, so that over any run of them each instance's count stays within 2 of its weighted share.

A cache in front of dnsdisc (knot-resolver, PowerDNS Recursor) keeps each answer for a while and
hands it to every client in that window: the only lever left is which answer each window gets.
Independent draws wander (over 40 windows the count of a 1/4 share has a standard deviation of
2.7); a smooth sequence does not. ``sequence`` is one period of it, made as a proportionate-fair
(Pfair) schedule of one resource: instance i's k-th turn may come from slot k/w_i of the period
and is due by slot (k + 1)/w_i (as fractions of it), earliest due first; so every prefix holds
each instance's count to within one turn of its share, and every run to within two. Weights
that are not small integers are rounded to CAP turns per period. ``window`` reads the places an
answer shows from a position of the sequence: the next distinct instances, in the order of
their turns. Pure functions: the requester's position is the caller's.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

# Turns in one period, at most (unless there are more instances than this: one each).
CAP = 4096


def turns(weights: Sequence[float]) -> list[int]:
    """Each weight as a whole number of turns per period, in the same ratios (exactly where the
    weights are integers whose sum, divided by their gcd, fits CAP; else to within rounding)."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return [1] * len(weights)  # all drained: handed out evenly
    if all(float(w).is_integer() for w in positive):
        ints = [int(w) for w in weights]
        g = math.gcd(*[w for w in ints if w > 0])
        ints = [max(w, 0) // g for w in ints]
        if sum(ints) <= CAP:
            return ints
    total = sum(positive)
    return [max(1, round(w * CAP / total)) if w > 0 else 0 for w in weights]


def sequence(weights: Sequence[float]) -> list[int]:
    """One period of the smooth sequence of indices into ``weights`` (zero weights never come,
    unless every weight is zero)."""
    counts = turns(weights)
    total = sum(counts)
    # Instance i's k-th turn may come from slot floor(k * total / c_i) and is due by slot
    # ceil((k + 1) * total / c_i); earliest due first among those that may come (Pfair, one
    # resource: every count stays within one turn of its share at every slot).
    waiting = [(0, -((-total) // c), i) for i, c in enumerate(counts) if c > 0]
    heapq.heapify(waiting)  # by when it may come
    ready: list[tuple[int, int]] = []  # (due, i)
    taken = [0] * len(counts)
    out: list[int] = []
    for slot in range(total):
        while waiting and (waiting[0][0] <= slot or not ready):
            _, due, i = heapq.heappop(waiting)
            heapq.heappush(ready, (due, i))
        _, i = heapq.heappop(ready)
        out.append(i)
        taken[i] += 1
        c = counts[i]
        k = taken[i]
        if k < c:
            heapq.heappush(waiting, (k * total // c, -((-(k + 1) * total) // c), i))
    return out


def window(seq: Sequence[int], start: int, k: int) -> list[int]:
    """The first ``k`` distinct entries of ``seq`` from ``start`` on (wrapping; at most one
    period is read), in the order they come."""
    out: list[int] = []
    seen: set[int] = set()
    n = len(seq)
    for step in range(n):
        i = seq[(start + step) % n]
        if i not in seen:
            seen.add(i)
            out.append(i)
            if len(out) == k:
                break
    return out
