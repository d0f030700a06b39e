"""balance: every policy as a pure function with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from dnsdisc.policies.balance import (
    POLICIES,
    latency,
    least_loaded,
    order_table,
    priority,
    round_robin,
    shuffle,
    srv_order,
    tiers,
    weighted,
)
from tests.support.stats import CRITICAL_001, assert_shares, chi_square

N = 20000


@dataclass
class C:
    weight: int = 100
    priority: int = 0
    load: float | None = None
    latency_ms: float | None = None


def firsts(policy, cands, n: int = N, seed: int = 1) -> Counter[str]:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    out: Counter[str] = Counter()
    for i in range(n):
        order = policy(cands, i, rng)
        out[str(order[0])] += 1
    return out


def test_policy_table() -> None:
    assert set(POLICIES) == {
        "consistent",
        "round_robin",
        "random",
        "weighted",
        "priority",
        "least_loaded",
        "latency",
    }


def test_round_robin_each_first_exactly_n_over_k_times() -> None:
    cands = [C()] * 4
    assert firsts(round_robin, cands, 400) == {"0": 100, "1": 100, "2": 100, "3": 100}
    assert round_robin(cands, 1, random.Random(0)) == [1, 2, 3, 0]


def test_random_is_a_uniform_permutation() -> None:
    rng = random.Random(1)
    for i in range(100):
        assert sorted(shuffle([C()] * 4, i, rng)) == [0, 1, 2, 3]
    assert_shares(firsts(shuffle, [C()] * 4), {"0": 1, "1": 1, "2": 1, "3": 1})


def test_weighted_first_choice_follows_weights() -> None:
    cands = [C(1), C(2), C(3), C(4)]
    counts = firsts(weighted, cands)
    assert_shares(counts, {"0": 1, "1": 2, "2": 3, "3": 4}, max_abs_error=0.01)
    # The bound a uniform policy misses by far.
    assert (
        chi_square(firsts(shuffle, cands), {"0": 1, "1": 2, "2": 3, "3": 4}) > 50 * CRITICAL_001[3]
    )


def test_weighted_second_place_is_sampling_without_replacement() -> None:
    # With weights 1:1:2, P(first = 2) = 1/2; given that, the second is 0 or 1 evenly, and
    # P(second = 2) = P(first = 0) * 2/3 + P(first = 1) * 2/3 = 1/3.
    rng = random.Random(3)
    seconds: Counter[str] = Counter()
    for i in range(N):
        order = weighted([C(1), C(1), C(2)], i, rng)
        assert sorted(order) == [0, 1, 2]
        seconds[str(order[1])] += 1
    assert_shares(seconds, {"0": 1, "1": 1, "2": 1})


def test_weighted_zero_weights_come_last() -> None:
    rng = random.Random(4)
    for i in range(500):
        order = weighted([C(0), C(5), C(0), C(1)], i, rng)
        assert set(order[2:]) == {0, 2}


def test_priority_keeps_only_the_best_tier_weighted_within() -> None:
    cands = [C(1, 10), C(3, 10), C(5, 20), C(5, 0 + 20)]
    rng = random.Random(5)
    for i in range(200):
        assert set(priority(cands, i, rng)) == {0, 1}
    assert_shares(firsts(priority, cands), {"0": 1, "1": 3})
    # The next tier appears only when the tier above is empty (the index removes unhealthy or
    # drained instances before the policy sees them).
    assert set(priority(cands[2:], 0, rng)) == {0, 1}
    assert priority([], 0, rng) == []


def test_least_loaded_orders_by_load_ties_at_random() -> None:
    cands = [C(load=0.9), C(load=0.1), C(load=0.5), C(load=0.1)]
    rng = random.Random(6)
    orders = [least_loaded(cands, i, rng) for i in range(2000)]
    assert all(o[2:] == [2, 0] for o in orders)
    assert_shares(Counter(str(o[0]) for o in orders), {"1": 1, "3": 1})


def test_least_loaded_falls_back_to_weighted() -> None:
    cands = [C(1), C(3)]
    assert_shares(firsts(least_loaded, cands), {"0": 1, "1": 3})
    # Instances that reported no load come after those that did.
    mixed = [C(load=None), C(load=0.7), C(load=None)]
    rng = random.Random(7)
    assert all(least_loaded(mixed, i, rng)[0] == 1 for i in range(100))


def test_latency_scales_weights_inversely() -> None:
    cands = [C(100, latency_ms=10.0), C(100, latency_ms=30.0)]
    assert_shares(firsts(latency, cands), {"0": 3, "1": 1})
    # Unmeasured candidates count as the median of the measured ones.
    cands = [C(100, latency_ms=10.0), C(100, latency_ms=None), C(100, latency_ms=40.0)]
    assert_shares(firsts(latency, cands), {"0": 4, "1": 1, "2": 1})
    # Nothing measured: plain weighted.
    assert_shares(firsts(latency, [C(1), C(4)]), {"0": 1, "1": 4})


def test_srv_order_is_rfc2782() -> None:
    cands = [C(10, 20), C(30, 10), C(10, 10), C(0, 30), C(60, 20)]
    rng = random.Random(8)
    first_in_tier: Counter[str] = Counter()
    for i in range(N):
        order = srv_order(cands, i, rng)
        prios = [cands[j].priority for j in order]
        assert prios == sorted(prios)  # ascending priority, every record kept
        assert sorted(order) == [0, 1, 2, 3, 4]
        first_in_tier[str(order[0])] += 1
    # Within priority 10: weights 30 and 10.
    assert_shares(first_in_tier, {"1": 3, "2": 1})


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_returns_valid_indices(name: str) -> None:
    policy = POLICIES[name]
    rng = random.Random(9)
    for n in range(0, 6):
        cands = [C(w + 1, w % 2, load=w / 10, latency_ms=w + 1.0) for w in range(n)]
        order = policy(cands, n, rng)
        assert len(set(order)) == len(order) and all(0 <= i < n for i in order)
        if name != "priority":
            assert sorted(order) == list(range(n))


# -- drawing whole orders from a table (what the answer index does for these policies) ---------


TABLE_CASES = [
    (weighted, [C(1), C(2), C(3), C(4)], None),
    (weighted, [C(10), C(0), C(30), C(0)], 3),
    (priority, [C(1, 0), C(3, 0), C(5, 1)], None),
    (shuffle, [C(), C(), C()], 2),
    (srv_order, [C(10, 1), C(20, 1), C(5, 0), C(0, 0)], None),
]


@pytest.mark.parametrize(("policy", "cands", "limit"), TABLE_CASES)
def test_order_table_has_the_policys_distribution(policy, cands, limit) -> None:  # type: ignore[no-untyped-def]
    groups = tiers(policy, cands)
    assert groups is not None
    table = order_table(groups, limit)
    assert table is not None
    cum, orders = table
    exact = {o: c - p for o, c, p in zip(orders, cum, [0.0, *cum[:-1]], strict=True)}
    assert abs(sum(exact.values()) - 1) < 1e-9
    rng = random.Random(3)
    n = 40000
    seen = Counter(tuple(policy(cands, i, rng)[:limit]) for i in range(n))
    assert set(seen) <= set(exact), set(seen) - set(exact)
    for order, p in exact.items():
        assert abs(seen[order] / n - p) < 0.01, (order, seen[order] / n, p)


def test_order_table_first_places_are_exactly_the_weight_shares() -> None:
    cands = [C(1), C(2), C(3), C(4)]
    cum, orders = order_table(tiers(weighted, cands) or [], None) or ([], [])
    first: Counter[int] = Counter()
    for o, c, p in zip(orders, cum, [0.0, *cum[:-1]], strict=True):
        first[o[0]] += c - p  # type: ignore[assignment]
    for i, c in enumerate(cands):
        assert abs(first[i] - c.weight / 10) < 1e-12
    assert len(orders) == 24 and all(len(o) == 4 for o in orders)


def test_order_table_gives_up_on_too_many_orders() -> None:
    cands = [C(w) for w in range(1, 11)]
    groups = tiers(weighted, cands)
    assert groups is not None
    assert order_table(groups, None) is None  # 10! orders
    assert order_table(groups, 2) is not None  # 90 prefixes of two
    assert tiers(round_robin, cands) is None and tiers(least_loaded, cands) is None


def test_tiers_of_one_shape_share_one_table() -> None:
    """Thousands of services of 5 equal instances each draw from the same 120 orders: one table
    is made for them all (it held ~15 kB and took ~0.6 ms per RRset)."""
    one = order_table([([0, 1, 2, 3, 4], [100.0] * 5)], None)
    assert one is not None
    assert order_table([([0, 1, 2, 3, 4], [100.0] * 5)], None) is one
    assert order_table([([0, 1, 2, 3, 4], [100.0] * 5)], 9) is one  # the same length: 5
    assert order_table([([0, 1, 2, 3, 4], [100.0] * 5)], 2) is not one
    other = order_table([([0, 1, 2, 3, 4], [100.0, 100.0, 100.0, 100.0, 50.0])], None)
    assert other is not None and other[0] != one[0]
    assert order_table([([0, 1, 2], [1.0] * 3), ([3, 4], [1.0] * 2)], None) is not one


# -- found in review: each of these failed before its fix --------------------------------------


def test_small_weights_do_not_underflow_into_ties() -> None:
    # weight/latency far below 1: u ** (1/w) underflowed to 0.0 and ties sorted by index.
    rng = random.Random(11)
    cands = [C(1, latency_ms=10_000.0) for _ in range(3)]
    firsts = Counter(latency(cands, i, rng)[0] for i in range(6000))
    assert all(1700 < firsts[i] < 2300 for i in range(3)), firsts
    firsts = Counter(weighted([C(1), C(1)], i, rng)[0] for i in range(4000))
    assert all(1800 < n < 2200 for n in firsts.values()), firsts
