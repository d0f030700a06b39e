"""Counters the DNS face keeps per query: plain integers and a fixed-bucket latency histogram,
cheap enough for the answer path. ``metrics.py`` turns them into Prometheus families."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

# Upper bounds of the answer-time buckets, in seconds (the last bucket is +Inf).
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)


class QueryStats:
    __slots__ = ("by_type_rcode", "latency_buckets", "latency_count", "latency_sum", "truncated")

    def __init__(self) -> None:
        self.by_type_rcode: Counter[tuple[int, int]] = Counter()
        self.truncated = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, seconds: float) -> None:
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1


class DnsCounters(QueryStats):
    """A snapshot of one DNS face's counters (or the sum over worker processes): what the
    metrics read. Plain data, so a worker can send it to the main process."""

    __slots__ = ("dropped", "errors", "failures", "forwarded", "slipped")

    def __init__(self) -> None:
        super().__init__()
        self.errors = 0
        self.slipped = 0
        self.dropped = 0
        self.forwarded = 0
        self.failures = 0

    def add_stats(self, stats: QueryStats | DnsCounters) -> None:
        self.by_type_rcode.update(stats.by_type_rcode)
        self.truncated += stats.truncated
        self.latency_buckets = [
            a + b for a, b in zip(self.latency_buckets, stats.latency_buckets, strict=True)
        ]
        self.latency_sum += stats.latency_sum
        self.latency_count += stats.latency_count

    def __iadd__(self, other: DnsCounters) -> DnsCounters:
        self.add_stats(other)
        self.errors += other.errors
        self.slipped += other.slipped
        self.dropped += other.dropped
        self.forwarded += other.forwarded
        self.failures += other.failures
        return self

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, k) for k in _COUNTER_FIELDS)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for k, v in zip(_COUNTER_FIELDS, state, strict=True):
            setattr(self, k, v)


_COUNTER_FIELDS = QueryStats.__slots__ + DnsCounters.__slots__


class Histogram:
    """Counts of observations under fixed upper bounds (the last bucket is +Inf)."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        return cumulative(self.bounds, self.buckets)


def cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """(upper bound, observations at or below it) per bucket, +Inf last: the Prometheus way."""
    out, running = [], 0
    for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        running += n
        out.append((bound, running))
    return out
