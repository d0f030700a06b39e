"""What a running server is made of, and how the parts that a reload rebuilds are built from
the config: the answer index, the zone data, the names nobody may register."""

from __future__ import annotations

import asyncio
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
from dnsdisc.dnsserver.zone import IndexSettings, catalog_records
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.settings import NS_HOST
from dnsdisc.server.dnssec import Keyring
from dnsdisc.server.notify import Notifier
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
    # NOTIFY to the secondaries in transfer.notify (None: none configured).
    notifier: Notifier | None = None
    # The DNSSEC keys and their timeline (None: dnssec.enabled is off).
    keyring: Keyring | None = None

    def changes(self) -> int:
        """The change index the SOA serial follows: the registry's, plus the keys' timeline
        events come by (``dnssec.step_count``: their DNSKEY RRset is zone content too; kept
        with the keys, so it does not go back after a restart)."""
        steps = self.keyring.steps if self.keyring is not None else 0
        return self.registry.events.changes.index + steps


def build_index(config: Config, zone_data: zones.ZoneData, after: int | None = None) -> AnswerIndex:
    """The index of ``config`` and the zone files, static layer only. The zone files' part of
    its SOA serial (``IndexSettings.serial``) is 0 at start and one past ``after`` (the part in
    use) on a reload; the registry's change index is added to it (``AnswerIndex.set_changes``).
    0 at start rather than the time: with etcd every node then shows the same serial for the
    same content, the store's revision."""
    serial = 0 if after is None else (after + 1) % 2**32
    catalog = config.transfer_catalog
    records = list(zone_data.records)
    extra = tuple(zone_data.apexes) + tuple(wire.text_to_wire(z) for z in config.reverse_zones)
    if catalog is not None:
        apexes = (wire.text_to_wire(config.domain), *extra)
        records += catalog_records(wire.text_to_wire(catalog), apexes, config.negative_ttl)
        extra += (wire.text_to_wire(catalog),)
    settings = IndexSettings(
        domain=wire.text_to_wire(config.domain),
        ns_label=config.ns_label,
        ns_addresses=config.nameserver_addresses(),
        hostmaster=config.hostmaster,
        serial=serial,
        negative_ttl=config.negative_ttl,
        extra_zones=extra,
        networks=config.locality_networks,
        catalog=wire.text_to_wire(catalog) if catalog is not None else None,
        journal=bool(config.transfer_allow.rules or config.transfer_tsig_keys),
    )
    return AnswerIndex(settings, records)


class _HasIndex(Protocol):
    @property
    def index(self) -> AnswerSink: ...


def attach(
    registry: Registry,
    target: _HasIndex,
    health: HealthMonitor,
    changes: Callable[[], int] | None = None,
) -> QueryAnswers:
    """Keep ``target.index`` current: every registry change rebuilds the changed service's names
    from the instances health hands out (into whichever index is current: a reload swaps it;
    with workers, the pool sends it to each of them). A change to one instance is handed out
    and patched in alone where health and the index allow: a write to a large service then
    costs what changed, not the service. ``changes``: the change index the SOA serial follows
    (``Server.changes``; the registry's by default)."""

    queries = QueryAnswers(registry, health, lambda: target.index)
    serial_due = False

    def set_serial() -> None:
        # Once per turn of the event loop, after that turn's changes: the SOA serial follows
        # the change index (a batch of 128 registrations moves it once).
        nonlocal serial_due
        serial_due = False
        target.index.set_changes(
            changes() if changes is not None else registry.events.changes.index
        )

    def on_change(service: str, iid: str | None) -> None:
        nonlocal serial_due
        if not serial_due:
            serial_due = True
            try:
                asyncio.get_running_loop().call_soon(set_serial)
            except RuntimeError:  # no loop (a zone file's services, loaded at start): now
                set_serial()
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
