"""policies.smooth: every run of the sequence holds each instance's share to within 2, every
prefix to within 1; weights are turned into turns in the same ratios."""

from __future__ import annotations

import random

import pytest

from dnsdisc.policies.smooth import CAP, sequence, turns, window


def worst_run(seq: list[int], weights: list[float], runs: int) -> float:
    """The largest |count - share| of any instance over any run of up to ``runs`` answers."""
    total = sum(weights)
    n = len(seq)
    worst = 0.0
    doubled = seq * (runs // n + 2)
    for start in range(n):
        counts = [0] * len(weights)
        for length in range(1, runs + 1):
            counts[doubled[start + length - 1]] += 1
            for i, w in enumerate(weights):
                worst = max(worst, abs(counts[i] - length * w / total))
    return worst


@pytest.mark.parametrize(
    "weights", [[1, 2, 3, 4], [1, 1, 2], [100, 100, 100], [1, 1000], [7, 3, 3, 1, 1, 1]]
)
def test_every_run_stays_within_two_of_the_share(weights: list[float]) -> None:
    seq = sequence(weights)
    assert sorted(set(seq)) == list(range(len(weights)))
    assert worst_run(seq, weights, min(3 * len(seq), 300)) <= 2
    # Prefixes (a requester's first answers): within one.
    total = sum(weights)
    counts = [0] * len(weights)
    for t, i in enumerate(seq, 1):
        counts[i] += 1
        assert all(abs(counts[j] - t * w / total) < 1 for j, w in enumerate(weights))


def test_random_weights_keep_the_bound() -> None:
    rng = random.Random(7)
    for _ in range(30):
        weights = [float(rng.randint(1, 20)) for _ in range(rng.randint(2, 7))]
        seq = sequence(weights)
        assert worst_run(seq, weights, min(2 * len(seq), 120)) < 2


def test_a_random_draw_misses_what_the_sequence_keeps() -> None:
    # The same check on independent draws: over 40 answers at weights 1:1:2 the worst run is
    # regularly off by more than 2 (which is why the sequence exists).
    weights = [1.0, 1.0, 2.0]
    rng = random.Random(19)
    draws = [rng.choices(range(3), weights)[0] for _ in range(40)]
    assert worst_run(draws, weights, 40) > 2


def test_turns_keep_the_ratios_and_fit_the_cap() -> None:
    assert turns([100, 200, 300]) == [1, 2, 3]
    assert turns([0, 5, 10]) == [0, 1, 2]
    assert turns([0, 0]) == [1, 1]  # all drained: evenly
    big = turns([1.5, 3.0, 4.5])
    assert abs(big[1] - 2 * big[0]) <= 1 and abs(big[2] - 3 * big[0]) <= 1
    assert sum(big) <= CAP + 3
    odd = turns([65535, 1])
    assert sum(odd) <= CAP + 1 and odd[1] == 1


def test_window_reads_the_next_distinct_entries() -> None:
    seq = [0, 1, 0, 2, 0, 1, 0, 3]
    assert window(seq, 0, 2) == [0, 1]
    assert window(seq, 6, 3) == [0, 3, 1]
    assert window(seq, 3, 10) == [2, 0, 1, 3]
