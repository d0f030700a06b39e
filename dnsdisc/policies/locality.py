"""Answers by where the client is: which zone's instances a located client gets, and which
instance a client subnet sticks to. Pure functions over plain numbers; randomness is the
caller's (a draw in [0, 1)), so tests can fix it.

``spill_plan`` is capacity-aware zone routing as Envoy's zone-aware load balancing does it: a
zone whose share of the capacity covers its share of the demand answers locally; a zone short of
capacity answers locally with probability capacity / demand and sends the rest to the zones
with a surplus, in proportion to their surplus. Each instance's share of all traffic then
follows its weight, with as much of it kept local as capacity allows.

``rendezvous`` is weighted highest-random-weight hashing (Schindelhauer and Schomaker's
logarithmic method): each instance scores ``-weight / ln(u)`` with ``u`` a hash of (client
subnet, instance) in (0, 1); the highest scores win. The same subnet gets the same instances
while the set is unchanged; removing one of n moves only the subnets it held (about 1/n of
them); across subnets the first place follows the weights.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

OFF, PREFER, PIN, SPILL = "off", "prefer", "pin", "spill"
MODES = (OFF, PREFER, PIN, SPILL)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a spill plan sends one zone's clients: home with probability ``local``, else to
    ``away[i]`` where ``cum[i - 1] <= u < cum[i]`` for ``u`` uniform in [0, 1)."""

    local: float
    away: tuple[str, ...] = ()
    cum: tuple[float, ...] = ()

    def pick(self, home: str, draw: float) -> str:
        """The zone to answer from for ``draw`` uniform in [0, 1)."""
        if draw < self.local or not self.away:
            return home
        # Rescale the part of [0, 1) above ``local`` to [0, 1): one draw decides both steps.
        rest = (draw - self.local) / (1.0 - self.local)
        return self.away[min(bisect_right(self.cum, rest), len(self.away) - 1)]


def spill_plan(capacity: Mapping[str, float], demand: Mapping[str, float]) -> dict[str, Route]:
    """Each demanding zone's route. ``capacity``: the weight handed out per zone (any zone, even
    one no client is in); ``demand``: recent queries per located client zone. Without demand,
    or without capacity, every zone answers at home."""
    total_c = sum(v for v in capacity.values() if v > 0)
    total_d = sum(v for v in demand.values() if v > 0)
    if total_c <= 0 or total_d <= 0:
        return {z: Route(1.0) for z in demand}
    cap = {z: max(v, 0.0) / total_c for z, v in capacity.items()}
    dem = {z: max(v, 0.0) / total_d for z, v in demand.items()}
    surplus = {z: c - dem.get(z, 0.0) for z, c in cap.items() if c > dem.get(z, 0.0)}
    spare = sum(surplus.values())
    away = tuple(sorted(surplus))
    cum: list[float] = []
    acc = 0.0
    for z in away:
        acc += surplus[z] / spare if spare > 0 else 0.0
        cum.append(acc)
    plan: dict[str, Route] = {}
    for z, d in dem.items():
        c = cap.get(z, 0.0)
        if d <= 0 or c >= d or not away:
            plan[z] = Route(1.0)
        else:
            plan[z] = Route(c / d, away, tuple(cum))
    return plan


def bucket(address: bytes, prefix: int) -> bytes:
    """``address`` with the bits past ``prefix`` cleared, and the prefix: the sticky key."""
    whole, bits = divmod(prefix, 8)
    head = address[:whole]
    if bits and whole < len(address):
        head += bytes((address[whole] & (0xFF00 >> bits) & 0xFF,))
    return head + bytes((prefix,))


def score(key: bytes, member: bytes, weight: float) -> float:
    """One member's rendezvous score for a client key: higher wins."""
    digest = hashlib.blake2b(key + b"\x00" + member, digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64  # in (0, 1)
    return -weight / math.log(u)


def rendezvous(
    key: bytes, members: Sequence[bytes], weights: Sequence[float], limit: int | None = None
) -> list[int]:
    """Indices of ``members`` by descending score for ``key``, the first ``limit`` of them.
    Weights of 0 (drained members, handed out only when no other is left) count as 1."""
    if not members:
        return []
    positive = any(w > 0 for w in weights)
    scored = []
    for i, (m, w) in enumerate(zip(members, weights, strict=True)):
        if w > 0:
            scored.append((score(key, m, w), i))
        else:  # behind every positive weight; among themselves by an equal weight
            scored.append((score(key, m, 1.0) if not positive else -1.0 - i, i))
    scored.sort(reverse=True)
    out = [i for _, i in scored]
    return out if limit is None else out[:limit]
