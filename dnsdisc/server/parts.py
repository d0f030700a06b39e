"""What a running server is made of, and how the parts that a reload rebuilds are built from
the config: the answer index, the zone data, the names nobody may register."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from dnsdisc.api.audit import AuditLog
from dnsdisc.api.http import Api, ServerState
from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.names import QUERY_LABEL
from dnsdisc.dnsserver.stats import DnsCounters
from dnsdisc.dnsserver.view import AnswerSink
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.settings import NS_HOST
from dnsdisc.server.queries import QueryAnswers
from dnsdisc.tls import ContextSwitch
from dnsdisc.workers.pool import WorkerPool


@dataclass
class Server:
    """A running dnsdisc: what ``start`` opened and ``stop`` closes.

    DNS is answered either here (``face``: workers 0) or by worker processes (``pool``); either
    way ``index`` is what the registry's changes are rebuilt into."""

    config: Config
    registry: Registry
    health: HealthMonitor
    index: AnswerSink
    face: DnsFace | None = None
    pool: WorkerPool | None = None
    # Re-reads the config file and applies the same flags again (for reload); None: no file.
    loader: Callable[[], Config] | None = None
    # Runs a reload, one at a time, coalescing requests (reload.Reloader; set by start).
    reload: Callable[[], Awaitable[None]] | None = None
    # The open-file limit in force (raised to the hard limit at start): the HTTP cap fits under it.
    nofile: int = 1024
    api: Api | None = None
    state: ServerState = field(default_factory=ServerState)
    http_runner: web.AppRunner | None = None
    # The audit trail of HTTP writes (audit_log), reopened by a reload for log rotation.
    audit: AuditLog | None = None
    # The HTTP listener's TLS context, swapped by a reload (None: plain HTTP).
    http_tls: ContextSwitch | None = None
    # The workers' DNS counters as last gathered (for /metrics).
    dns_counters: DnsCounters = field(default_factory=DnsCounters)
    # The named queries' answers, kept current (set by ``attach``).
    queries: QueryAnswers | None = None


def build_index(config: Config, zone_data: zones.ZoneData, after: int | None = None) -> AnswerIndex:
    """The index of ``config`` and the zone files, static layer only. Its SOA serial is the
    time in seconds, or one past ``after`` (the serial in use) when that is not ahead of it by
    RFC 1982: two changes in one second must still move it, or secondaries and caches keyed on
    it would keep the first."""
    serial = int(time.time()) & 0xFFFFFFFF
    if after is not None and not 0 < (serial - after) % 2**32 < 2**31:
        serial = (after + 1) % 2**32
    settings = IndexSettings(
        domain=wire.text_to_wire(config.domain),
        ns_label=config.ns_label,
        ns_addresses=config.nameserver_addresses(),
        hostmaster=config.hostmaster,
        serial=serial,
        negative_ttl=config.negative_ttl,
        extra_zones=tuple(zone_data.apexes)
        + tuple(wire.text_to_wire(z) for z in config.reverse_zones),
        networks=config.locality_networks,
    )
    return AnswerIndex(settings, zone_data.records)


class _HasIndex(Protocol):
    @property
    def index(self) -> AnswerSink: ...


def attach(registry: Registry, target: _HasIndex, health: HealthMonitor) -> QueryAnswers:
    """Keep ``target.index`` current: every registry change rebuilds the changed service's names
    from the instances health hands out (into whichever index is current: a reload swaps it;
    with workers, the pool sends it to each of them). A change to one instance is handed out
    and patched in alone where health and the index allow: a write to a large service then
    costs what changed, not the service."""

    queries = QueryAnswers(registry, health, lambda: target.index)

    def on_change(service: str, iid: str | None) -> None:
        svc = registry.get(service)
        if svc is None:
            health.forget(service)
            target.index.rebuild(service, None, ())
        elif (
            iid is not None
            and (found := health.view_one(svc, iid)) is not None
            and (target.index.patch(service, *found))
        ):
            pass
        else:
            target.index.rebuild(service, svc.settings, health.view(svc))
        queries.service_changed(service)  # in the same turn: a 2xx covers the query names too

    registry.subscribe_changes(on_change)
    registry.subscribe_queries(queries.query_changed)
    return queries


def load_zones(config: Config) -> zones.ZoneData:
    return zones.load_dir(
        config.zones_dir, config.domain, config.defaults, required=config.zones_dir_required
    )


def reserved_names(config: Config, zone_data: zones.ZoneData) -> dict[str, str]:
    return {
        **zones.taken_service_names(zone_data.records, config.domain),
        config.ns_label: NS_HOST,
        QUERY_LABEL: "the label named queries answer under (<name>.query.<domain>)",
    }
