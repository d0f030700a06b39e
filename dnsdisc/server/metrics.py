"""Prometheus metrics, read at scrape time from the objects that keep the counts.

The DNS hot path keeps plain integer counters on its own objects (responder, rate limiter,
forwarder, health monitor); this collector turns them into metric families when /metrics is
scraped, so counting costs a query nothing but an integer increment.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import dns.rcode
import dns.rdatatype
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from dnsdisc.api.guard import HttpGuard
from dnsdisc.api.http import ServerState
from dnsdisc.dnsserver.stats import OTHER_TYPE, DnsCounters, type_key
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.registry import Registry

if TYPE_CHECKING:
    from dnsdisc.server.queries import QueryAnswers
    from dnsdisc.workers.pool import WorkerPool


class DnsdiscCollector(Collector):
    def __init__(
        self,
        registry: Registry,
        health: HealthMonitor,
        dns: Callable[[], DnsCounters],
        *,
        rate_limited: bool = False,
        forwarding: bool = False,
        state: ServerState | None = None,
        pool: WorkerPool | None = None,
        http: HttpGuard | None = None,
        queries: Callable[[], QueryAnswers | None] | None = None,
    ) -> None:
        self.queries = queries
        self.state = state
        self.registry = registry
        self.health = health
        # The DNS face's counters: this process's, or the workers' summed.
        self.dns = dns
        self.rate_limited = rate_limited
        self.forwarding = forwarding
        self.pool = pool
        self.http = http

    def collect(self) -> Iterator[Metric]:
        found = self.queries() if self.queries is not None else None
        if found is not None:
            yield from _query_metrics(found)
        states: Counter[tuple[str, str]] = Counter()
        for svc in self.registry:
            for state in svc.instances.values():
                states[(svc.settings.name, state.effective_status)] += 1
        instances = GaugeMetricFamily(
            "dnsdisc_instances",
            "Registered instances by service and health state",
            labels=["service", "state"],
        )
        for (service, status), n in sorted(states.items()):
            instances.add_metric([service, status], n)
        yield instances
        yield GaugeMetricFamily(
            "dnsdisc_health_self_preservation",
            "1 while health.protection holds leases that would expire (most missed at once)",
            value=int(self.health.protecting),
        )
        yield GaugeMetricFamily(
            "dnsdisc_health_leases_held", "Leases held by self-preservation", value=self.health.held
        )
        yield CounterMetricFamily(
            "dnsdisc_health_self_preservations",
            "Times self-preservation began",
            value=self.health.protections,
        )
        changes = CounterMetricFamily(
            "dnsdisc_health_transitions",
            "Health state changes, by the state entered",
            labels=["state"],
        )
        for status, n in sorted(self.health.transitions.items()):
            changes.add_metric([status], n)
        yield changes
        stats = self.dns()
        queries = CounterMetricFamily(
            "dnsdisc_dns_queries",
            "Queries answered, by query type and rcode (type 0: the question was not read)",
            labels=["type", "rcode"],
        )
        # Both labels come from a bounded set (the responder folds unknown types into
        # OTHER_TYPE; rcodes are ours, 4 bits or BADVERS), whatever clients send.
        folded: Counter[tuple[str, str]] = Counter()
        for (qtype, rcode), n in stats.by_type_rcode.items():
            key = type_key(qtype)
            known = key != OTHER_TYPE
            kind = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(key)) if known else "OTHER"
            folded[(kind, dns.rcode.to_text(dns.rcode.Rcode.make(rcode)))] += n
        for labels, n in sorted(folded.items()):
            queries.add_metric(list(labels), n)
        yield queries
        yield CounterMetricFamily(
            "dnsdisc_dns_truncated", "UDP replies sent with TC set", value=stats.truncated
        )
        yield CounterMetricFamily(
            "dnsdisc_dns_signatures", "DNSSEC signatures made", value=stats.signatures
        )
        over = CounterMetricFamily(
            "dnsdisc_dns_signing_over_budget",
            "Signed replies cut short by dnssec.max_signatures: refused (SERVFAIL) or with glue"
            " RRsets left out",
            labels=["what"],
        )
        over.add_metric(["refused"], stats.signing_refused)
        over.add_metric(["glue"], stats.signing_left_out)
        yield over
        yield HistogramMetricFamily(
            "dnsdisc_dns_answer_seconds",
            "Time to build each reply inside the server (from bytes in to bytes out)",
            buckets=stats.latency.cumulative(),
            sum_value=stats.latency.total,
        )
        delay = self.health.check_delay
        yield HistogramMetricFamily(
            "dnsdisc_health_check_delay_seconds",
            "How late each active check run started against when it was due",
            buckets=delay.cumulative(),
            sum_value=delay.total,
        )
        writes = CounterMetricFamily(
            "dnsdisc_registry_writes", "Acknowledged registry writes, by kind", labels=["kind"]
        )
        for kind, n in sorted(self.registry.writes.items()):
            writes.add_metric([kind], n)
        yield writes
        checks = CounterMetricFamily(
            "dnsdisc_health_checks", "Active check results", labels=["type", "result"]
        )
        for (kind, ok), n in sorted(self.health.check_results.items()):
            checks.add_metric([kind, "success" if ok else "failure"], n)
        yield checks
        yield CounterMetricFamily(
            "dnsdisc_health_checks_skipped",
            "Check runs skipped, not judged: no slot in the check budgets before the next was due",
            value=self.health.checks_skipped,
        )
        yield GaugeMetricFamily(
            "dnsdisc_health_checks_in_flight",
            "Active checks running now",
            value=self.health.gate.running,
        )
        if self.state is not None:
            yield GaugeMetricFamily(
                "dnsdisc_store_up", "1 while the store is open", value=int(self.state.store_open)
            )
            yield GaugeMetricFamily(
                "dnsdisc_store_stale",
                "1 while a shared store (etcd) is unreachable and answers come from the last view",
                value=int(self.state.store_stale()),
            )
        yield CounterMetricFamily(
            "dnsdisc_store_skipped_keys",
            "Stored keys ignored because they do not validate (logged; a shared store's keys "
            "may come from another version or from hand)",
            value=self.registry.skipped_keys,
        )
        yield GaugeMetricFamily(
            "dnsdisc_health_checker",
            "1 while this node runs the active health checks (always, unless storage is etcd)",
            value=int(self.health.checking),
        )
        yield CounterMetricFamily(
            "dnsdisc_dns_internal_errors",
            "Queries answered SERVFAIL because answering raised (a bug)",
            value=stats.errors,
        )
        yield GaugeMetricFamily(
            "dnsdisc_dns_reply_cache_bytes",
            "Bytes the reply caches of the DNS processes hold (estimated, objects included)",
            value=stats.reply_cache_bytes,
        )
        yield CounterMetricFamily(
            "dnsdisc_dns_reply_cache_evictions",
            "Questions dropped from a reply cache to keep it within dns.reply_cache_bytes",
            value=stats.reply_cache_evictions,
        )
        if self.pool is not None:
            supervisor, barrier = self.pool.supervisor, self.pool.barrier
            yield GaugeMetricFamily(
                "dnsdisc_dns_workers", "DNS worker processes running", value=len(supervisor.workers)
            )
            yield HistogramMetricFamily(
                "dnsdisc_worker_confirm_seconds",
                "How long a write waited until no DNS worker could answer from an older state",
                buckets=barrier.confirm.cumulative(),
                sum_value=barrier.confirm.total,
            )
            yield CounterMetricFamily(
                "dnsdisc_worker_ack_waits",
                "Writes that waited for a DNS worker's acknowledgement (its fence did not cover "
                "the change: a message queued in this process, or a worker not answering yet)",
                value=barrier.ack_waits,
            )
            yield CounterMetricFamily(
                "dnsdisc_dns_worker_restarts",
                "DNS worker processes started again after one exited or hung",
                value=supervisor.restarts,
            )
            yield CounterMetricFamily(
                "dnsdisc_dns_worker_spawn_failures",
                "Starts of a DNS worker process that failed (out of descriptors or memory); "
                "each is retried, with a growing delay",
                value=supervisor.spawn_failures,
            )
            yield GaugeMetricFamily(
                "dnsdisc_dns_answering_workers",
                "DNS worker processes answering (ready, and answering the supervisor's pings)",
                value=supervisor.answering(time.monotonic()),
            )
        if self.http is not None:
            yield from _http_metrics(self.http)
        if self.rate_limited:
            limited = CounterMetricFamily(
                "dnsdisc_dns_rate_limited", "UDP responses over the rate limit", labels=["action"]
            )
            limited.add_metric(["slip"], stats.slipped)
            limited.add_metric(["drop"], stats.dropped)
            yield limited
        if self.forwarding:
            yield CounterMetricFamily(
                "dnsdisc_dns_forwarded",
                "Queries relayed to recursors",
                value=stats.forwarded,
            )
            yield CounterMetricFamily(
                "dnsdisc_dns_forward_failures",
                "Relayed queries no recursor answered (SERVFAIL)",
                value=stats.failures,
            )


def _query_metrics(found: QueryAnswers) -> Iterator[Metric]:
    """The named queries: address answers led by their own service's instances or a failover
    step's, moves to a failover step, and the step each answers from now."""
    answers = CounterMetricFamily(
        "dnsdisc_query_answers",
        "Address answers of named queries, by the step that answered (own or failover)",
        labels=["query", "step"],
    )
    for (name, kind), n in sorted(found.answers.items()):
        answers.add_metric([name, kind], n)
    yield answers
    failovers = CounterMetricFamily(
        "dnsdisc_query_failovers", "Moves of a named query to a failover step", labels=["query"]
    )
    step = GaugeMetricFamily(
        "dnsdisc_query_step",
        "The step a named query answers from (0: its own service; -1: none exists)",
        labels=["query"],
    )
    for name in sorted(found.built):
        failovers.add_metric([name], found.failovers[name])
        step.add_metric([name], found.step.get(name, -1))
    yield failovers
    yield step


def _http_metrics(guard: HttpGuard) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "dnsdisc_http_connections", "HTTP connections open (under the caps)", value=guard.open
    )
    yield _by_label(
        "dnsdisc_http_connections_refused",
        "HTTP connections closed at once: over http.max_connections (global) or "
        "http.max_connections_per_client (per_client)",
        "limit",
        guard.refused,
    )
    yield _by_label(
        "dnsdisc_http_auth_failures",
        "Requests with a token no token has (failed), and those refused with 429 because their "
        "client address failed too often of late (throttled)",
        "outcome",
        guard.auth,
    )
    yield _by_label(
        "dnsdisc_http_request_timeouts",
        "HTTP requests whose headers (http.header_timeout) or body (http.body_timeout) did not "
        "arrive in time; the connection was closed",
        "phase",
        guard.timeouts,
    )


def _by_label(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


def metrics_registry(collector: DnsdiscCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
