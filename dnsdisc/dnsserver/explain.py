"""What the next answer to a client would be, as probabilities: for each member of a balanced
RRset, the chance of coming first and of being in the answer, computed from what the responder
draws from (the order table, the zone's sub-RRset, the smooth sequence, the sticky order), not
by sending queries. Only where no table is built (more than 720 orders, or round robin over a
pool) are draws sampled, with the error bound stated.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from dnsdisc.dnsserver.locality import WHOLE, Local, Smooth, ZoneMap
from dnsdisc.dnsserver.rrset import RRSet
from dnsdisc.policies.balance import round_robin
from dnsdisc.policies.locality import MODES, PIN, PREFER

# Draws taken where no order table is built, and the error bound stated for them (3 standard
# errors of a probability: 3 * sqrt(1/4 / SAMPLES)).
SAMPLES = 20_000
SAMPLED_ERROR = 3 * math.sqrt(0.25 / SAMPLES)


@dataclass
class Shares:
    """Per member of the RRset (indices into ``members``): the chance of coming first and of
    being in the answer; the ECS scope the answer holds for; how they were computed; and, with
    locality, the client's zone and the members of the zone (or zones) that may answer."""

    first: list[float]
    present: list[float]
    scope: int = 0
    method: str = "exact"
    error: float = 0.0
    zone: str | None = None
    answering: set[int] = field(default_factory=set)


def explain(
    rrset: RRSet, zones: ZoneMap, where: bytes = b"", prefix: int = -1, cap: int | None = None
) -> Shares:
    """The shares of the next answer from ``rrset`` to a client at ``where`` (its ECS source
    ``prefix``; -1: the packet's address; b"": unknown), over UDP with the responder's ``cap``."""
    n = len(rrset.members)
    local = rrset.local
    if local is None or not where:
        # An unknown client gets the normal answer; under a smooth sequence, whoever asks gets
        # the sequence's long-run shares.
        smooth = local is not None and local.smooth_on
        shares = _smooth(rrset, cap) if smooth else _drawn(rrset, cap)
        if smooth:
            shares.method = "smooth: long-run shares of this requester's answers"
        shares.answering = set(range(n))
        return shares
    source = prefix if prefix >= 0 else len(where) * 8
    targets, zone, scope = _targets(local, where, source, zones)
    out = Shares([0.0] * n, [0.0] * n, scope, zone=zone)
    for chance, target, mapping in targets:
        if local.sticky_on:
            key, sticky = local.sticky_key(where, source)
            out.scope = max(out.scope, sticky)
            order = local.sticky_order(target, key, cap, False)
            part = Shares([0.0] * len(target.members), [0.0] * len(target.members))
            if order:
                part.first[order[0]] = 1.0
            for i in order:
                part.present[i] = 1.0
        elif local.smooth_on:
            out.scope = max(out.scope, source)
            part = _smooth(target, cap)
            out.method = "smooth: long-run shares of this requester's answers"
        else:
            part = _drawn(target, cap)
            if part.method != "exact":
                out.method, out.error = part.method, part.error
        for j, whole_i in enumerate(mapping if mapping is not None else range(n)):
            out.first[whole_i] += chance * part.first[j]
            out.present[whole_i] += chance * part.present[j]
            out.answering.add(whole_i)
    return out


def _targets(
    local: Local, where: bytes, source: int, zones: ZoneMap
) -> tuple[list[tuple[float, RRSet, tuple[int, ...] | None]], str | None, int]:
    """The RRsets that may answer, each with its chance and its members' places in the whole."""
    whole = local.whole
    mode = MODES[local.mode]
    if not local.mode:
        return [(1.0, whole, None)], None, 0
    zone, scope = zones.locate(where)
    if zone is None:
        return [(1.0, whole, None)], None, max(scope, source)
    subs, maps = local.subs, local.maps
    if mode in (PREFER, PIN):
        picked = local.held(zone)
        if picked is None:
            return [], zone, scope
    else:  # spill, by the plan this process has made (at home until it has seen demand)
        route = local.plan.get(zone)
        if route is not None and route.away:
            out: list[tuple[float, RRSet, tuple[int, ...] | None]] = []
            if zone in subs:
                out.append((route.local, subs[zone], maps[zone]))
            last = 0.0
            for away, cum in zip(route.away, route.cum, strict=True):
                if away in subs:
                    out.append(((1 - route.local) * (cum - last), subs[away], maps[away]))
                last = cum
            return out, zone, scope
        picked = zone if zone in subs else WHOLE
    if picked == WHOLE:
        return [(1.0, whole, None)], zone, scope
    return [(1.0, subs[picked], maps[picked])], zone, scope


def _drawn(rrset: RRSet, cap: int | None) -> Shares:
    """Independent draws (or round robin's rotation): from the order table where there is one,
    else sampled."""
    n = len(rrset.members)
    first, present = [0.0] * n, [0.0] * n
    if n == 0:
        return Shares(first, present)
    limit = rrset.length(cap, False)
    if rrset.fixed or rrset.policy is None:
        shown = range(n if limit is None else min(limit, n))
        first[0] = 1.0
        for i in shown:
            present[i] = 1.0
        return Shares(first, present)
    if rrset.policy is round_robin:
        items = len(rrset.items)
        width = n if limit is None else min(limit, n)
        for start in range(items):  # every rotation equally often
            rotated = [(start + j) % items for j in range(min(width, items))]
            rotated += list(range(items, items + width - len(rotated)))
            first[rotated[0]] += 1 / items
            for i in rotated:
                present[i] += 1 / items
        return Shares(first, present)
    table = rrset._table(limit)  # the same table the responder draws from
    if table is not None:
        cum, orders = table
        before = 0.0
        for edge, order in zip(cum, orders, strict=True):
            chance = min(edge, 1.0) - before
            before = min(edge, 1.0)
            if order:
                first[order[0]] += chance
            for i in order:
                present[i] += chance
        return Shares(first, present)
    rng = random.Random(0)
    for _ in range(SAMPLES):
        order = rrset._draw(rng, limit)
        if order:
            first[order[0]] += 1 / SAMPLES
        for i in order:
            present[i] += 1 / SAMPLES
    return Shares(first, present, method=f"sampled: {SAMPLES} draws", error=SAMPLED_ERROR)


def _smooth(rrset: RRSet, cap: int | None) -> Shares:
    """The long-run shares of one requester's answers: every place of the sequence equally."""
    n = len(rrset.members)
    smooth = Smooth(rrset.tiers())
    limit = rrset.length(cap, False)
    first, present = [0.0] * n, [0.0] * n
    size = len(smooth.seq)
    rng = random.Random(0)
    for place in range(size):
        smooth.places[b""] = place
        order = smooth.next(b"", rng, limit)
        if order:
            first[order[0]] += 1 / size
        for i in order:
            present[i] += 1 / size
    return Shares(first, present)
