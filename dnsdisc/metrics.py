"""Prometheus metrics, read at scrape time from the objects that keep the counts.

The DNS hot path keeps plain integer counters on its own objects (responder, rate limiter,
forwarder, health monitor); this collector turns them into metric families when /metrics is
scraped, so counting costs a query nothing but an integer increment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dnsdisc.dns.answer import Responder
from dnsdisc.dns.forward import Forwarder
from dnsdisc.dns.ratelimit import RateLimiter
from dnsdisc.health import HealthMonitor
from dnsdisc.registry.registry import Registry


class DnsdiscCollector(Collector):
    def __init__(
        self,
        registry: Registry,
        health: HealthMonitor,
        responder: Responder,
        limiter: RateLimiter | None = None,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.registry = registry
        self.health = health
        self.responder = responder
        self.limiter = limiter
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
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
        changes = CounterMetricFamily(
            "dnsdisc_health_transitions",
            "Health state changes, by the state entered",
            labels=["state"],
        )
        for status, n in sorted(self.health.transitions.items()):
            changes.add_metric([status], n)
        yield changes
        yield CounterMetricFamily(
            "dnsdisc_dns_internal_errors",
            "Queries answered SERVFAIL because answering raised (a bug)",
            value=self.responder.errors,
        )
        if self.limiter is not None:
            limited = CounterMetricFamily(
                "dnsdisc_dns_rate_limited", "UDP responses over the rate limit", labels=["action"]
            )
            limited.add_metric(["slip"], self.limiter.slipped)
            limited.add_metric(["drop"], self.limiter.dropped)
            yield limited
        if self.forwarder is not None:
            yield CounterMetricFamily(
                "dnsdisc_dns_forwarded",
                "Queries relayed to recursors",
                value=self.forwarder.forwarded,
            )
            yield CounterMetricFamily(
                "dnsdisc_dns_forward_failures",
                "Relayed queries no recursor answered (SERVFAIL)",
                value=self.forwarder.failures,
            )


def metrics_registry(collector: DnsdiscCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
