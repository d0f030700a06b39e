"""Counters the DNS face keeps per query: plain integers and a fixed-bucket latency histogram,
cheap enough for the answer path. ``metrics.py`` turns them into Prometheus families."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

# Query types counted by their own name; any other (a client picks the type, 65,536 of them)
# is counted as OTHER, so the metric's series are bounded by this list, not by clients.
KNOWN_TYPES = frozenset(
    (1, 2, 5, 6, 12, 13, 15, 16, 28, 33, 35, 39, 41, 43, 44, 46, 47, 48, 50, 52, 59, 60, 64,
     65, 99, 251, 252, 255, 256, 257)
)  # fmt: skip
OTHER_TYPE = -1


def type_key(qtype: int) -> int:
    """The query type as counted: itself if known, else OTHER_TYPE."""
    return qtype if qtype in KNOWN_TYPES else OTHER_TYPE


# Upper bounds of the answer-time buckets, in seconds (the last bucket is +Inf).
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)


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

    def add(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.total += other.total
        self.count += other.count

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last: the Prometheus
        way."""
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


class QueryStats:
    __slots__ = ("by_type_rcode", "latency", "truncated")

    def __init__(self) -> None:
        self.by_type_rcode: Counter[tuple[int, int]] = Counter()
        self.truncated = 0
        self.latency = Histogram(LATENCY_BUCKETS)

    def observe(self, seconds: float) -> None:
        self.latency.observe(seconds)


class DnsCounters(QueryStats):
    """A snapshot of one DNS face's counters (or the sum over worker processes): what the
    metrics read. Plain data, so a worker can send it to the main process."""

    __slots__ = (
        "dropped",
        "errors",
        "failures",
        "forwarded",
        "reply_cache_bytes",
        "reply_cache_evictions",
        "signatures",
        "signing_left_out",
        "signing_refused",
        "slipped",
    )

    def __init__(self) -> None:
        super().__init__()
        self.reply_cache_bytes = 0
        self.reply_cache_evictions = 0
        self.errors = 0
        self.slipped = 0
        self.dropped = 0
        self.forwarded = 0
        self.failures = 0
        # DNSSEC (signing.Budget): signatures made; replies refused (SERVFAIL) and glue RRsets
        # left out because signing was over its budget.
        self.signatures = 0
        self.signing_refused = 0
        self.signing_left_out = 0

    def add_stats(self, stats: QueryStats) -> None:
        self.by_type_rcode.update(stats.by_type_rcode)
        self.truncated += stats.truncated
        self.latency.add(stats.latency)

    def __iadd__(self, other: DnsCounters) -> DnsCounters:
        self.add_stats(other)
        self.errors += other.errors
        self.reply_cache_bytes += other.reply_cache_bytes
        self.reply_cache_evictions += other.reply_cache_evictions
        self.slipped += other.slipped
        self.dropped += other.dropped
        self.forwarded += other.forwarded
        self.failures += other.failures
        self.signatures += other.signatures
        self.signing_refused += other.signing_refused
        self.signing_left_out += other.signing_left_out
        return self
