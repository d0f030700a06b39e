"""Drawing only the places an answer shows: for every policy, the first k places that
``RRSet`` draws (TierSampler, rotating offset, cached live tiers) have the distribution of the
full order cut to k, the one the policies drew before (checked against the exact distribution
of each place, from ``order_table``, with a fixed seed). Tails (fail-open members), priority
tiers, zero weights and one heavy weight (the redraw fallback) included."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest

from dnsdisc.dnsserver.rrset import LIVE_SMALL, REUSE, Item, RRSet
from dnsdisc.policies.balance import (
    LIVE_POLICIES,
    Policy,
    Tier,
    latency,
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

DRAWS = 20000


@dataclass
class Live:
    load: float | None = None
    latency_ms: float | None = None

    def handed_out(self) -> None:
        pass


def make(
    weights: Sequence[int],
    prios: Sequence[int] | None = None,
    loads: Sequence[float | None] | None = None,
    lats: Sequence[float | None] | None = None,
) -> list[Item]:
    n = len(weights)
    prios = prios or [0] * n
    loads = loads or [None] * n
    lats = lats or [None] * n
    return [
        Item(b"%d" % i, w, p, live=Live(ld, lt))  # type: ignore[arg-type]
        for i, (w, p, ld, lt) in enumerate(zip(weights, prios, loads, lats, strict=True))
    ]


def critical(df: int) -> float:
    """Chi-square upper critical value, Wilson-Hilferty, z = 4 (alpha about 3e-5): seeded, so a
    pass is stable, and a draw with the wrong weights is still hundreds above it."""
    z = 4.0
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def exact_groups(policy: Policy, items: Sequence[Item], tail: Sequence[Item]) -> list[Tier]:
    pick = live_tiers if policy in LIVE_POLICIES else tiers
    groups = pick(policy, items) or []
    first = len(items)
    rest = pick(policy, tail) or [] if tail else []
    return groups + [([first + i for i in ix], ws) for ix, ws in rest]


def assert_places_match(draw: Callable[[], tuple[int, ...]], groups: list[Tier], k: int) -> None:
    """Each of the first k places, over DRAWS draws, fits its exact distribution."""
    table = order_table(groups, k, max_orders=10**6)
    assert table is not None
    cum, orders = table
    probs: list[dict[int, float]] = [{} for _ in range(k)]
    prev = 0.0
    for c, order in zip(cum, orders, strict=True):
        p, prev = c - prev, c
        for place, idx in enumerate(order):
            probs[place][idx] = probs[place].get(idx, 0.0) + p
    seen: list[Counter[int]] = [Counter() for _ in range(k)]
    for _ in range(DRAWS):
        order = draw()
        assert len(order) == len(orders[0]) and len(set(order)) == len(order), order
        for place, idx in enumerate(order):
            seen[place][idx] += 1
    for place in range(k):
        unexpected = set(seen[place]) - set(probs[place])
        assert not unexpected, (place, unexpected)
        stat = sum((seen[place][i] - DRAWS * p) ** 2 / (DRAWS * p) for i, p in probs[place].items())
        df = max(1, len(probs[place]) - 1)
        assert stat < critical(df), (place, stat, critical(df), seen[place], probs[place])


def full_policy_draw(
    policy: Policy, items: Sequence[Item], tail: Sequence[Item], k: int, rng: random.Random
) -> Callable[[], tuple[int, ...]]:
    """The order as the policy functions draw it in full, cut to k: the reference."""

    def draw() -> tuple[int, ...]:
        out = list(policy(items, 0, rng)) if len(items) > 1 else list(range(len(items)))
        out += [len(items) + i for i in policy(tail, 0, rng)] if tail else []
        return tuple(out[:k])

    return draw


CASES = {
    # name: (policy, items, tail, k); each has more orders of k than a table lists (720).
    "weighted, tail reached": (weighted, make([1, 2, 3, 5, 9]), make([1, 4, 2, 7]), 7),
    "weighted, zero weights": (weighted, make([0, 3, 0, 5, 1, 2, 8, 0]), (), 7),
    "weighted, one heavy": (weighted, make([500, 1, 1, 2, 1, 1, 3, 1, 1, 1]), (), 4),
    "random": (shuffle, make([1] * 10), make([1] * 3), 4),
    "priority tiers, tail": (
        priority,
        make([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 9, 9], [1] * 10 + [2, 2]),
        make([2, 3, 1], [3, 0, 0]),
        4,
    ),
    "srv tiers": (srv_order, make([1, 2, 3, 4, 5, 6, 1, 2, 3, 4], [0] * 4 + [1] * 6), (), 7),
    "latency, large": (
        latency,
        make(
            [1 + i % 4 for i in range(LIVE_SMALL + 6)],
            lats=[None if i % 7 == 0 else 1.0 + i % 5 for i in range(LIVE_SMALL + 6)],
        ),
        make([1, 2], lats=[3.0, None]),
        2,
    ),
    "least_loaded, large": (
        least_loaded,
        make(
            [1 + i % 3 for i in range(LIVE_SMALL + 6)],
            loads=[None if i % 9 == 0 else float(i % 4) for i in range(LIVE_SMALL + 6)],
        ),
        make([1, 1, 1], loads=[0.0, None, 1.0]),
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_k_places_have_the_full_orders_distribution(case: str) -> None:
    policy, items, tail, k = CASES[case]
    groups = exact_groups(policy, items, tail)
    # The reference: the policy's full order, cut to k, fits the exact places...
    assert_places_match(full_policy_draw(policy, items, tail, k, random.Random(1)), groups, k)
    # ...and so does what an RRset draws for an answer of k records.
    rrset = RRSet(1, items, policy, None, tail)
    rng = random.Random(2)
    assert_places_match(lambda: rrset._draw(rng, k), groups, k)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_responders_cap_cuts_orders_and_a_table_is_kept_per_length(case: str) -> None:
    policy, items, tail, k = CASES[case]
    rrset = RRSet(1, items, policy, None, tail)
    rng = random.Random(3)
    for _ in range(50):
        assert len(rrset.next_order(rng, k)) == k
        assert len(rrset.next_order(rng, 2)) == 2
        full = rrset.next_order(rng)
        assert sorted(full) == sorted(set(full))
    # max_answers wins over the responder's cap.
    limited = RRSet(1, items, policy, 1, tail)
    assert len(limited.next_order(rng, k)) == 1


def test_a_broken_draw_fails_the_check() -> None:
    """The check has teeth: ignoring the weights (uniform draws) is far outside it."""
    policy, items, tail, k = CASES["weighted, tail reached"]
    groups = exact_groups(policy, items, tail)
    flat = [(ix, [1.0] * len(ix)) for ix, _ in groups]
    sampler = TierSampler(flat)
    rng = random.Random(4)
    with pytest.raises(AssertionError):
        assert_places_match(lambda: tuple(sampler.draw(k, rng)), groups, k)


def test_live_tiers_are_the_live_policies() -> None:
    """least_loaded and latency as tiers have the functions' distribution (the tiers RRSet
    draws from, through its tables, pools and sampler)."""
    items = make(
        [1, 2, 3, 1, 2, 5],
        loads=[2.0, 1.0, None, 1.0, 2.0, None],
        lats=[5.0, 1.0, None, 2.0, 0.01, 3.0],
    )
    for policy in (least_loaded, latency):
        groups = live_tiers(policy, items) or []
        assert_places_match(full_policy_draw(policy, items, (), 3, random.Random(5)), groups, 3)
        sampler = TierSampler(groups)
        rng = random.Random(6)
        assert_places_match(lambda s=sampler, r=rng: tuple(s.draw(3, r)), groups, 3)


@pytest.mark.parametrize("n,k", [(5000, 16), (7, 3), (4, 9), (1, 2)])
def test_round_robin_draws_the_rotated_prefix(n: int, k: int) -> None:
    items, tail = make([1] * n), make([1] * 3)
    rrset = RRSet(1, items, round_robin, None, tail)
    rng = random.Random(7)
    for counter in range(1, 40):
        want = round_robin(items, counter, rng) if n > 1 else list(range(n))
        want += [n + i for i in round_robin(tail, counter if n > 1 else 0, rng)]
        assert rrset.next_order(rng, k) == tuple(want[:k])


def test_a_large_rrset_draw_costs_the_answer_not_the_set() -> None:
    """5,000 weighted items, 16 places: the sampler's tiers are made once and each draw reads
    a few random numbers (counted, not timed)."""
    items = make([1 + i % 5 for i in range(5000)])
    rrset = RRSet(1, items, weighted, None)

    class Counting(random.Random):
        calls = 0

        def random(self) -> float:
            Counting.calls += 1
            return super().random()

    rng = Counting(8)
    rrset._draw(rng, 16)
    Counting.calls = 0
    for _ in range(100):
        assert len(rrset._draw(rng, 16)) == 16
    assert Counting.calls < 100 * 20


def test_the_cap_is_for_balanced_addresses_and_no_order_is_longer_than_a_reply_holds() -> None:
    items = make([1] * 5000)  # 1-byte bodies here: a reply holds at most 1232 // 3 over UDP
    a = RRSet(1, items, weighted)
    srv = RRSet(33, items, srv_order)
    assert a.length(16, tcp=False) == 16
    assert a.length(None, tcp=False) == 1232 // 3 + 1
    assert a.length(None, tcp=True) is None  # 65535 // 3 + 1 places: more than the set
    # SRV answers carry every record that fits, with TC when some do not: no cap, only the fit.
    assert srv.length(16, tcp=False) == 1232 // 3 + 1
    assert RRSet(1, items[:5], weighted).length(16, tcp=False) is None
    assert RRSet(1, items, weighted, 3).length(16, tcp=True) == 3


# least_loaded and latency draw from tables and pools made when the reported figures change,
# not per answer: the orders next_order hands out have the policy's exact distribution for the
# figures standing, a changed figure shows in the next answer of a small RRset and within
# LIVE_REFRESH of a large one, and nothing drawn from the old figures is handed out after it.


def live(item: Item) -> Live:
    assert isinstance(item.live, Live)
    return item.live


def stale(rrset: RRSet) -> None:
    """As if LIVE_REFRESH had passed since the figures were last read."""
    rrset.sampled_at = -math.inf


def test_a_small_latency_rrset_draws_from_a_table_with_the_exact_distribution() -> None:
    items = make([1, 2, 3, 1, 2], lats=[5.0, 1.0, None, 2.0, 0.01])
    rrset = RRSet(1, items, latency)
    rng = random.Random(11)
    assert_places_match(lambda: rrset.next_order(rng, 3), live_tiers(latency, items) or [], 3)
    assert [d.table is not None for d in rrset.draws.values()] == [True]


def test_a_small_rrset_shows_a_changed_figure_in_the_next_answer() -> None:
    items = make([1, 1, 1], loads=[0.0, 1.0, 2.0])
    rrset = RRSet(1, items, least_loaded, 1)
    rng = random.Random(12)
    assert {rrset.next_order(rng)[0] for _ in range(50)} == {0}
    live(items[0]).load = 3.0
    assert {rrset.next_order(rng)[0] for _ in range(50)} == {1}
    live(items[0]).load = None
    assert {rrset.next_order(rng)[0] for _ in range(50)} == {1}  # known loads come first


def test_a_large_rrset_reads_its_figures_again_after_live_refresh_and_drops_its_pool() -> None:
    n = LIVE_SMALL + 36
    items = make([1] * n, loads=[float(i) for i in range(n)])
    rrset = RRSet(1, items, least_loaded)
    rng = random.Random(13)
    for _ in range(200):
        assert rrset.next_order(rng, 4) == (0, 1, 2, 3)
    for i, item in enumerate(items):
        live(item).load = float(n - i)
    # Within LIVE_REFRESH the standing figures hold (the read is O(n), not per answer)...
    assert rrset.next_order(rng, 4) == (0, 1, 2, 3)
    stale(rrset)
    # ...after it, no order drawn from the old figures is handed out again.
    want = (n - 1, n - 2, n - 3, n - 4)
    assert {rrset.next_order(rng, 4) for _ in range(200)} == {want}


def test_a_large_latency_rrset_pool_has_the_exact_places() -> None:
    """5,000 members, 3 places, through next_order (the pool): each place fits its exact
    distribution. A pooled order serves about REUSE answers, so the chi-square is scaled by
    2*REUSE - 1 (see test_index); a draw that ignored latency is still far outside."""
    n = 5000
    items = make([1 + i % 5 for i in range(n)], lats=[1.0 + i % 40 for i in range(n)])
    # The places' exact distribution over 5,000 members is too many orders to list: check the
    # first place, whose chance is weight/latency over the sum.
    weights = [(1 + i % 5) / (1.0 + i % 40) for i in range(n)]
    total = sum(weights)
    # Pool by class (i % 200 gives weight and latency): 200 classes of 25 members each.
    rrset = RRSet(1, items, latency)
    rng = random.Random(14)
    draws = 40000
    seen: Counter[int] = Counter(rrset.next_order(rng, 3)[0] % 200 for _ in range(draws))
    assert rrset.draws[3].table is None and rrset.draws[3].pool
    probs = [sum(weights[j] for j in range(c, n, 200)) / total for c in range(200)]
    stat = sum((seen[c] - draws * p) ** 2 / (draws * p) for c, p in enumerate(probs))
    assert stat / (2 * REUSE - 1) < critical(199), stat
    # The same check on first places drawn ignoring latency (weights only) fails clearly.
    flat = [1 + i % 5 for i in range(n)]
    wrong = random.Random(15).choices(range(n), weights=flat, k=draws)
    bad = Counter(i % 200 for i in wrong)
    stat_bad = sum((bad[c] - draws * p) ** 2 / (draws * p) for c, p in enumerate(probs))
    assert stat_bad / (2 * REUSE - 1) > 3 * critical(199), stat_bad


@pytest.mark.parametrize("policy", [latency, least_loaded])
def test_a_change_of_figures_remakes_the_table(policy: object) -> None:
    items = make([1, 2, 3, 1], loads=[1.0, 0.0, 2.0, 0.0], lats=[1.0, 8.0, 2.0, 4.0])
    rrset = RRSet(1, items, policy, 2)  # type: ignore[arg-type]
    rng = random.Random(16)
    rrset.next_order(rng)
    for item, (load, ms) in zip(
        items, [(0.0, 9.0), (3.0, 0.5), (1.0, 1.0), (None, None)], strict=True
    ):
        item.live = Live(load, ms)  # type: ignore[assignment]
    groups = live_tiers(policy, items) or []  # type: ignore[arg-type]
    assert_places_match(lambda: rrset.next_order(rng), groups, 2)
    table = order_table(groups, 2)
    assert table is not None and rrset.draws[2].table == table
