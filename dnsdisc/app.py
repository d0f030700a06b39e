"""Lifecycle: open the store, load zones, build the answer index, start DNS (UDP and TCP) and
HTTP listeners on one asyncio loop, wait for a signal, drain and close. No protocol logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from aiohttp import web

from dnsdisc import zones
from dnsdisc.config import Config, HostPort, is_loopback
from dnsdisc.dns import wire
from dnsdisc.dns.answer import Responder
from dnsdisc.dns.forward import Forwarder
from dnsdisc.dns.index import AnswerIndex, IndexSettings
from dnsdisc.dns.ratelimit import RateLimiter
from dnsdisc.dns.transport import TCPProtocol, TCPState, UDPProtocol
from dnsdisc.errors import ConfigError
from dnsdisc.health import HealthMonitor
from dnsdisc.http_api import Api, ServerState
from dnsdisc.metrics import DnsdiscCollector, metrics_registry
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.store import open_store

log = logging.getLogger("dnsdisc")


@dataclass
class Server:
    """A running dnsdisc: what ``start`` opened and ``stop`` closes."""

    config: Config
    registry: Registry
    index: AnswerIndex
    health: HealthMonitor
    responder: Responder
    forwarder: Forwarder | None = None
    # Re-reads the config file and applies the same flags again (for reload); None: no file.
    loader: Callable[[], Config] | None = None
    api: Api | None = None
    state: ServerState = field(default_factory=ServerState)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    tcp_servers: list[asyncio.AbstractServer] = field(default_factory=list)
    http_runner: web.AppRunner | None = None
    tcp_state: TCPState | None = None


def build_index(config: Config, zone_data: zones.ZoneData) -> AnswerIndex:
    settings = IndexSettings(
        domain=wire.text_to_wire(config.domain),
        ns_label=config.ns_label,
        ns_addresses=config.nameserver_addresses(),
        hostmaster=config.hostmaster,
        serial=int(time.time()) & 0xFFFFFFFF,
        negative_ttl=config.negative_ttl,
        extra_zones=tuple(zone_data.apexes)
        + tuple(wire.text_to_wire(z) for z in config.reverse_zones),
    )
    return AnswerIndex(settings, zone_data.records)


class _HasIndex(Protocol):
    index: AnswerIndex


def attach(registry: Registry, target: _HasIndex, health: HealthMonitor) -> None:
    """Keep ``target.index`` current: every registry change rebuilds the changed service's names
    from the instances health hands out (into whichever index is current: a reload swaps it)."""

    def on_change(service: str) -> None:
        svc = registry.get(service)
        if svc is None:
            target.index.rebuild(service, None, ())
        else:
            target.index.rebuild(service, svc.settings, health.view(svc))

    registry.subscribe(on_change)


def _load_zones(config: Config) -> zones.ZoneData:
    return zones.load_dir(
        config.zones_dir, config.domain, config.defaults, required=config.zones_dir_required
    )


def _reserved(config: Config, zone_data: zones.ZoneData) -> dict[str, str]:
    return {
        **zones.taken_service_names(zone_data.records, config.domain),
        config.ns_label: "it is the name server's host name",
    }


async def start(config: Config, loader: Callable[[], Config] | None = None) -> Server:
    zone_data = _load_zones(config)
    index = build_index(config, zone_data)
    registry = Registry(
        open_store(config.storage, config.data_dir, config.etcd),
        defaults=config.defaults,
        configured=dict(config.services),
        reserved=_reserved(config, zone_data),
    )
    health = HealthMonitor(registry, config.health)
    forwarder = Forwarder(config.recursors, config.recursor_timeout) if config.recursors else None
    server = Server(
        config,
        registry,
        index,
        health,
        Responder(index, forwarding=forwarder is not None),
        forwarder,
        loader,
    )
    attach(registry, server, health)
    try:
        await registry.load()
    except BaseException:
        await registry.close()
        raise
    for settings, instances in zone_data.services:
        registry.add_static(settings, instances)
    server.state.store_open = True
    try:
        await _listen(server, forwarder)
    except BaseException:
        await stop(server)
        raise
    server.state.listeners_up = True
    health.start()
    _join_cluster(server)
    if config.token is None and not is_loopback(config.http_listen.host):
        log.warning(
            "the HTTP API listens on %s without a token: anyone who reaches it can change "
            "the registry (set DNSDISC_TOKEN or http.token)",
            config.http_listen,
        )
    log.info(
        "dnsdisc serving %s on DNS %s (UDP+TCP), HTTP %s, storage %s, %d services",
        config.domain,
        ", ".join(str(hp) for hp in config.dns_listen),
        config.http_listen,
        _storage_text(config),
        len(registry),
    )
    return server


def _storage_text(config: Config) -> str:
    if config.storage == "sqlite":
        return f"sqlite in {config.data_dir}"
    if config.storage == "etcd":
        return f"etcd at {', '.join(config.etcd.endpoints)} under {config.etcd.prefix}"
    return config.storage


def _join_cluster(server: Server) -> None:
    """With a shared store: report its staleness, and take part in electing the node that
    runs the active checks (until elected, this node runs none)."""
    store = server.registry.store
    if not server.registry.shared:
        return
    from dnsdisc.registry.etcd import EtcdStore

    assert isinstance(store, EtcdStore)
    server.state.store_stale = lambda: store.stale
    store.campaign(server.health.set_checking)


async def _listen(server: Server, forwarder: Forwarder | None) -> None:
    loop = asyncio.get_running_loop()
    config = server.config
    responder = server.responder
    rrl = config.rate_limit
    limiter = (
        RateLimiter(rrl.responses_per_second, rrl.slip, rrl.ipv4_prefix, rrl.ipv6_prefix)
        if rrl
        else None
    )
    tcp_state = TCPState(config.tcp_max_connections, config.tcp_idle_timeout, config.query_log)
    server.tcp_state = tcp_state
    for hp in config.dns_listen:
        family = _family(hp)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UDPProtocol(responder, forwarder, limiter, config.query_log),
            local_addr=(hp.host, hp.port),
            family=family,
        )
        server.transports.append(transport)
        tcp = await loop.create_server(
            lambda: TCPProtocol(responder, tcp_state, forwarder),
            hp.host,
            hp.port,
            family=family,
            reuse_address=True,
        )
        server.tcp_servers.append(tcp)
    collector = DnsdiscCollector(
        server.registry, server.health, responder, limiter, forwarder, server.state
    )
    api = Api(
        server.registry,
        server.state,
        config.token,
        metrics_registry(collector),
        reload=lambda: reload(server),
    )
    server.api = api
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
    await runner.setup()
    server.http_runner = runner
    site = web.TCPSite(runner, config.http_listen.host, config.http_listen.port, reuse_address=True)
    await site.start()


def _family(hp: HostPort) -> int:
    return socket.AF_INET6 if ":" in hp.host else socket.AF_UNSPEC


async def stop(server: Server) -> None:
    """Graceful: stop accepting, let relayed queries finish (bounded), flush and close every
    connection, then close the store (every acknowledged write is already committed)."""
    server.state.listeners_up = False
    for tcp in server.tcp_servers:
        tcp.close()  # no new TCP connections; open ones keep being answered meanwhile
    if server.http_runner is not None:
        await server.http_runner.cleanup()  # waits for requests in progress
    await server.health.stop()
    if server.forwarder is not None and server.forwarder.tasks:
        await asyncio.wait(set(server.forwarder.tasks), timeout=server.forwarder.timeout + 1)
    for transport in server.transports:
        transport.close()
    if server.tcp_state is not None:
        for conn in list(server.tcp_state.connections):
            if conn.transport is not None:
                conn.transport.close()  # writes what is buffered, then closes
    for tcp in server.tcp_servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tcp.wait_closed(), 2)
    await server.registry.close()
    server.state.store_open = False


# Settings a reload cannot change: they need the listeners or the store reopened.
_RESTART_ONLY = (
    "domain",
    "dns_listen",
    "http_listen",
    "storage",
    "data_dir",
    "etcd",
    "recursors",
    "rate_limit",
    "tcp_idle_timeout",
    "tcp_max_connections",
)


async def reload(server: Server) -> None:
    """Re-read the config file and the zone files and apply them without a restart. Anything
    wrong raises ConfigError before a thing has changed: the old config keeps serving."""
    old = server.config
    new = server.loader() if server.loader is not None else old
    kept = {
        key: getattr(old, key) for key in _RESTART_ONLY if getattr(new, key) != getattr(old, key)
    }
    for key in kept:
        log.warning("reload: %s changed; that takes effect after a restart", key)
    new = replace(new, **kept)
    zone_data = _load_zones(new)
    index = build_index(new, zone_data)
    # Nothing below can fail on bad input: everything was parsed and checked above.
    registry = server.registry
    registry.defaults = new.defaults
    registry.configured = dict(new.services)
    registry.reserved = _reserved(new, zone_data)
    registry.replace_static([(s, list(i)) for s, i in zone_data.services])
    server.health.cfg = new.health
    if server.api is not None:
        server.api.token = new.token
    server.index = index
    for svc in list(registry):
        registry.touch(svc.settings.name)  # rebuilds every service into the new index
    server.responder.index = index  # queries switch over only now, to a complete index
    server.config = new
    log.info(
        "reloaded: %d zone records, %d static services",
        len(zone_data.records),
        len(zone_data.services),
    )


async def serve(config: Config, loader: Callable[[], Config] | None = None) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the config and zone files."""
    server = await start(config, loader)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def on_hup() -> None:
        try:
            await reload(server)
        except ConfigError as exc:
            log.error("reload rejected, the old configuration keeps serving: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(on_hup()))
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await stop(server)


def run(config: Config, loader: Callable[[], Config] | None = None) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, loader))
    else:
        uvloop.run(serve(config, loader))
