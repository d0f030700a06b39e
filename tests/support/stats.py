"""A chi-square goodness-of-fit check for the statistical tests of the balancing policies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Upper critical values of the chi-square distribution, by degrees of freedom.
# alpha = 0.001 for seeded unit tests; alpha = 0.0001 for tests against a running server, whose
# random source is not seeded (a correct policy then fails one run in 10,000).
CRITICAL_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}
CRITICAL_0001 = {1: 15.137, 2: 18.421, 3: 21.108, 4: 23.513, 5: 25.745}


def chi_square(observed: Mapping[str, int], weights: Mapping[str, float]) -> float:
    total = sum(observed.values())
    wsum = sum(weights.values())
    stat = 0.0
    for key, w in weights.items():
        expected = total * w / wsum
        stat += (observed.get(key, 0) - expected) ** 2 / expected
    unexpected = set(observed) - set(weights)
    assert not unexpected, f"answers outside the expected set: {unexpected}"
    return stat


def assert_shares(
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    alpha: float = 0.001,
    max_abs_error: float = 0.05,
) -> None:
    """The observed counts fit the weights: chi-square below the critical value, and every share
    within ``max_abs_error`` of its target (the bound a uniform or first-only policy misses)."""
    critical = (CRITICAL_001 if alpha == 0.001 else CRITICAL_0001)[len(weights) - 1]
    stat = chi_square(observed, weights)
    total = sum(observed.values())
    wsum = sum(weights.values())
    shares = {k: observed.get(k, 0) / total for k in weights}
    assert stat < critical, f"chi-square {stat:.1f} >= {critical} for shares {shares}"
    for key, w in weights.items():
        assert abs(shares[key] - w / wsum) < max_abs_error, (key, shares)


def shares_of(counts: Mapping[str, int], keys: Sequence[str]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {k: round(counts.get(k, 0) / total, 4) for k in keys}


def worst_run(answers: Sequence[object], weights: Mapping[object, float]) -> float:
    """The largest |count - exact share| of any key of ``weights`` over any run of consecutive
    ``answers`` (how far a sequence of answers strays from the weights at its worst)."""
    total = sum(weights.values())
    worst = 0.0
    for start in range(len(answers)):
        counts: dict[object, int] = {}
        for length, got in enumerate(answers[start:], 1):
            counts[got] = counts.get(got, 0) + 1
            for key, weight in weights.items():
                worst = max(worst, abs(counts.get(key, 0) - length * weight / total))
    return worst
