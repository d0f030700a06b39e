"""policies.locality: the spill plan's arithmetic and rendezvous hashing's stickiness and shares."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from dnsdisc.policies.locality import Route, bucket, rendezvous, spill_plan


def test_a_zone_with_enough_capacity_answers_at_home() -> None:
    plan = spill_plan({"a": 1, "b": 1}, {"a": 50, "b": 50})
    assert plan == {"a": Route(1.0), "b": Route(1.0)}


def test_a_zone_short_of_capacity_spills_its_excess_to_the_zones_with_surplus() -> None:
    # Equal capacity, 80/20 demand: a keeps 0.5/0.8 of its clients, sends the rest to b.
    plan = spill_plan({"a": 100, "b": 100}, {"a": 80, "b": 20})
    assert plan["a"].local == pytest.approx(0.625)
    assert plan["a"].away == ("b",)
    assert plan["b"] == Route(1.0)


def test_spill_goes_in_proportion_to_surplus_and_every_instance_gets_its_weight() -> None:
    capacity = {"a": 1.0, "b": 2.0, "c": 1.0}  # shares 0.25, 0.5, 0.25
    demand = {"a": 70.0, "b": 20.0, "c": 10.0}
    plan = spill_plan(capacity, demand)
    # Traffic arriving at each zone, from the plan, must equal its capacity share.
    rng = random.Random(3)
    got: Counter[str] = Counter()
    n = 40_000
    for _ in range(n):
        home = rng.choices(list(demand), weights=list(demand.values()))[0]
        got[plan[home].pick(home, rng.random())] += 1
    total = sum(capacity.values())
    for zone, c in capacity.items():
        assert got[zone] / n == pytest.approx(c / total, abs=0.01)
    # a keeps what its capacity allows (0.25 of 0.7), and no zone with surplus sends any away.
    assert plan["a"].local == pytest.approx(0.25 / 0.7)
    assert plan["b"].local == plan["c"].local == 1.0


def test_a_zone_without_instances_sends_everyone_away_and_no_demand_means_home() -> None:
    plan = spill_plan({"b": 1.0}, {"a": 10.0})
    assert plan["a"].local == 0.0 and plan["a"].pick("a", 0.3) == "b"
    assert spill_plan({"a": 1.0}, {}) == {}
    assert spill_plan({}, {"a": 1.0}) == {"a": Route(1.0)}


def test_bucket_clears_the_bits_past_the_prefix() -> None:
    assert bucket(bytes([10, 1, 2, 3]), 24) == bytes([10, 1, 2, 24])
    assert bucket(bytes([10, 1, 0xFF, 3]), 20) == bytes([10, 1, 0xF0, 20])
    assert bucket(bytes([10, 1, 2, 3]), 0) == bytes([0])


def _keys(n: int) -> list[bytes]:
    return [bucket(bytes([10, i >> 8, i & 0xFF, 0]), 24) for i in range(n)]


def test_rendezvous_is_sticky_and_removing_one_of_ten_moves_about_a_tenth() -> None:
    members = [f"i{k}".encode() for k in range(10)]
    weights = [1.0] * 10
    keys = _keys(1000)
    first = {k: rendezvous(k, members, weights, 1)[0] for k in keys}
    assert first == {k: rendezvous(k, members, weights, 1)[0] for k in keys}  # stable
    # Remove i3: only its subnets move, about 100 of 1,000.
    kept = members[:3] + members[4:]
    moved = sum(kept[rendezvous(k, kept, weights[:9], 1)[0]] != members[first[k]] for k in keys)
    held = sum(first[k] == 3 for k in keys)
    assert moved == held
    assert 50 <= moved <= 160


def test_rendezvous_shares_follow_the_weights() -> None:
    members = [b"a", b"b", b"c", b"d"]
    weights = [1.0, 2.0, 3.0, 4.0]
    got = Counter(rendezvous(k, members, weights, 1)[0] for k in _keys(2000))
    expected = [2000 * w / 10 for w in weights]
    chi2 = sum((got[i] - e) ** 2 / e for i, e in enumerate(expected))
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001; equal weights would score ~330


def test_rendezvous_puts_drained_members_last_unless_all_are() -> None:
    order = rendezvous(b"k", [b"a", b"b", b"c"], [0.0, 5.0, 1.0])
    assert order[-1] == 0 and sorted(order) == [0, 1, 2]
    assert sorted(rendezvous(b"k", [b"a", b"b"], [0.0, 0.0])) == [0, 1]
    assert (
        rendezvous(b"k", [b"a", b"b", b"c"], [1.0, 1.0, 1.0], 2)
        == rendezvous(b"k", [b"a", b"b", b"c"], [1.0, 1.0, 1.0])[:2]
    )
