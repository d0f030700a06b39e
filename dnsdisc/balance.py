"""Balancing policies: pure functions that order a service's candidates for one answer.

A policy gets the candidates (anything with ``weight`` and ``priority``), a per-RRset query
counter and a random source, and returns the order of candidate indices. It never sees bytes or
sockets, and its randomness is injected so tests can fix the seed. ``POLICIES`` maps the names
accepted by the API and the config to the functions.

Drained instances (weight 0) are not the policies' business: the answer index hands a policy
only the active candidates, or only the drained ones when no active one is left.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Sequence
from typing import Protocol


class Candidate(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def priority(self) -> int: ...


Policy = Callable[[Sequence[Candidate], int, _random.Random], list[int]]


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


def weighted(cands: Sequence[Candidate], counter: int, rng: _random.Random) -> list[int]:
    """Weighted random sampling without replacement (Efraimidis-Spirakis): the chance that
    candidate i comes first is weight_i / sum(weights), and so on down the list."""
    keys = []
    for i, cand in enumerate(cands):
        w = cand.weight
        # rng.random() is in [0, 1); u ** (1/w) keeps the order of the exponential-race keys.
        keys.append((rng.random() ** (1.0 / w) if w > 0 else -rng.random(), i))
    keys.sort(reverse=True)
    return [i for _, i in keys]


POLICIES: dict[str, Policy] = {
    "round_robin": round_robin,
    "random": shuffle,
    "weighted": weighted,
}
DEFAULT_POLICY = "round_robin"
