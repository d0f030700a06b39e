"""balance: the policies as pure functions with a seeded random source."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from dnsdisc.balance import POLICIES, round_robin, shuffle, weighted


@dataclass
class C:
    weight: int
    priority: int = 0


def test_round_robin_each_first_exactly_n_over_k_times() -> None:
    cands = [C(1)] * 4
    firsts = Counter(round_robin(cands, i, random.Random(0))[0] for i in range(400))
    assert firsts == {0: 100, 1: 100, 2: 100, 3: 100}
    assert round_robin(cands, 1, random.Random(0)) == [1, 2, 3, 0]


def test_shuffle_is_a_permutation_and_uniform() -> None:
    rng = random.Random(1)
    firsts = Counter()
    for i in range(4000):
        order = shuffle([C(1)] * 4, i, rng)
        assert sorted(order) == [0, 1, 2, 3]
        firsts[order[0]] += 1
    assert all(900 < n < 1100 for n in firsts.values())


def test_weighted_first_choice_follows_weights() -> None:
    rng = random.Random(2)
    cands = [C(1), C(2), C(3), C(4)]
    firsts = Counter(weighted(cands, i, rng)[0] for i in range(20000))
    for i, c in enumerate(cands):
        share = firsts[i] / 20000
        assert abs(share - c.weight / 10) < 0.015, (i, share)


def test_policy_table_names() -> None:
    assert set(POLICIES) == {"round_robin", "random", "weighted"}
