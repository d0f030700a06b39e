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
