"""Lifecycle: open the store, load zones, build the answer index, start DNS (UDP and TCP) and
HTTP listeners on one asyncio loop, wait for a signal, drain and close. No protocol logic here."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import time
from dataclasses import dataclass, field

from aiohttp import web

from dnsdisc import zones
from dnsdisc.config import Config, HostPort
from dnsdisc.dns import wire
from dnsdisc.dns.answer import Responder
from dnsdisc.dns.forward import Forwarder
from dnsdisc.dns.index import AnswerIndex, IndexSettings
from dnsdisc.dns.ratelimit import RateLimiter
from dnsdisc.dns.transport import TCPProtocol, TCPState, UDPProtocol
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
    state: ServerState = field(default_factory=ServerState)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    tcp_servers: list[asyncio.AbstractServer] = field(default_factory=list)
    http_runner: web.AppRunner | None = None


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


def attach(registry: Registry, index: AnswerIndex, health: HealthMonitor) -> None:
    """Keep ``index`` current: every registry change rebuilds the changed service's names from
    the instances health hands out."""

    def on_change(service: str) -> None:
        svc = registry.get(service)
        if svc is None:
            index.rebuild(service, None, ())
        else:
            index.rebuild(service, svc.settings, health.view(svc))

    registry.subscribe(on_change)


async def start(config: Config) -> Server:
    zone_data = zones.load_dir(
        config.zones_dir, config.domain, config.defaults, required=config.zones_dir_required
    )
    index = build_index(config, zone_data)
    registry = Registry(
        open_store(config.storage, config.data_dir),
        defaults=config.defaults,
        configured=dict(config.services),
        reserved={
            **zones.taken_service_names(zone_data.records, config.domain),
            config.ns_label: "it is the name server's host name",
        },
    )

    health = HealthMonitor(registry, config.health)
    attach(registry, index, health)
    try:
        await registry.load()
    except BaseException:
        await registry.close()
        raise
    for settings, instances in zone_data.services:
        registry.add_static(settings, instances)
    server = Server(config, registry, index, health)
    server.state.store_open = True
    try:
        await _listen(server)
    except BaseException:
        await stop(server)
        raise
    server.state.listeners_up = True
    health.start()
    if config.token is None and not _is_loopback(config.http_listen.host):
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
        config.storage if config.storage == "memory" else f"sqlite in {config.data_dir}",
        len(registry),
    )
    return server


async def _listen(server: Server) -> None:
    loop = asyncio.get_running_loop()
    config = server.config
    forwarder = Forwarder(config.recursors, config.recursor_timeout) if config.recursors else None
    responder = Responder(server.index, forwarding=forwarder is not None)
    rrl = config.rate_limit
    limiter = (
        RateLimiter(rrl.responses_per_second, rrl.slip, rrl.ipv4_prefix, rrl.ipv6_prefix)
        if rrl
        else None
    )
    tcp_state = TCPState(config.tcp_max_connections, config.tcp_idle_timeout)
    for hp in config.dns_listen:
        family = _family(hp)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: UDPProtocol(responder, forwarder, limiter),
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
    collector = DnsdiscCollector(server.registry, server.health, responder, limiter, forwarder)
    api = Api(server.registry, server.state, config.token, metrics_registry(collector))
    runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
    await runner.setup()
    server.http_runner = runner
    site = web.TCPSite(runner, config.http_listen.host, config.http_listen.port, reuse_address=True)
    await site.start()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _family(hp: HostPort) -> int:
    return socket.AF_INET6 if ":" in hp.host else socket.AF_UNSPEC


async def stop(server: Server) -> None:
    server.state.listeners_up = False
    await server.health.stop()
    if server.http_runner is not None:
        await server.http_runner.cleanup()
    for tcp in server.tcp_servers:
        tcp.close()
    for transport in server.transports:
        transport.close()
    for tcp in server.tcp_servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tcp.wait_closed(), 2)
    await server.registry.close()
    server.state.store_open = False


async def serve(config: Config) -> None:
    """Run until SIGINT or SIGTERM."""
    server = await start(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await stop(server)


def run(config: Config) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
