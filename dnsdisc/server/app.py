"""Lifecycle: open the store, load zones, build the answer index, start DNS (UDP and TCP) and
HTTP listeners, wait for a signal, drain and close. No protocol logic here.

DNS is answered in this process (``workers: 0``) or by worker processes that share the port
(``dnsdisc.workers``); this process always owns the store, the HTTP API and the health checks."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from aiohttp import web

from dnsdisc import heap
from dnsdisc.api.audit import AuditLog
from dnsdisc.api.doh import DohHandler, Relay
from dnsdisc.api.guard import GuardedRunner, HttpGuard
from dnsdisc.api.http import Api
from dnsdisc.config.load import Config
from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.dnssec import ZoneKey
from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.view import MemberView
from dnsdisc.errors import ConfigError
from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.netaddr import HostPort, is_loopback
from dnsdisc.registry.checks import RemoteCheckRules
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.state import Service
from dnsdisc.server import dnssec, keystore, staleness
from dnsdisc.server.explain import Explainer
from dnsdisc.server.limits import http_limits, raise_nofile
from dnsdisc.server.metrics import DnsdiscCollector, metrics_registry
from dnsdisc.server.notify import Notifier
from dnsdisc.server.parts import Server, attach, build_index, load_zones, reserved_names
from dnsdisc.server.reload import Reloader
from dnsdisc.store.base import open_store
from dnsdisc.tls import ContextSwitch
from dnsdisc.workers.pool import WorkerPool

log = logging.getLogger("dnsdisc")


async def start(config: Config, loader: Callable[[], Config] | None = None) -> Server:
    # Before any worker is spawned or store opened: they inherit the raised limit.
    nofile = raise_nofile()
    zone_data = load_zones(config)
    tls = config.http_tls.context(config.source, "http.tls") if config.http_tls else None
    if config.dns_tls is not None:
        # Each DNS process makes its own context from the files; a bad one stops the start here.
        config.dns_tls.context(config.source, "dns.tls")
    index = build_index(config, zone_data)
    dns_settings = config.dns_settings()
    keyring = None
    if config.dnssec_enabled:
        keyring = dnssec.Keyring(
            keystore.key_store(config),
            config.dnssec_algorithm,
            dnssec.timing(config),
            lambda keys: _sign(server, keys),
        )
        try:
            await keyring.load()
        except BaseException:
            await keyring.close()
            raise
        dns_settings = replace(dns_settings, dnssec_keys=keyring.current)
    registry = Registry(
        open_store(config.storage, config.data_dir, config.etcd),
        defaults=config.defaults,
        configured=dict(config.services),
        reserved=reserved_names(config, zone_data),
        limits=config.limits,
    )
    health = HealthMonitor(registry, config.health)
    server = Server(config, registry, health, index, loader=loader, keyring=keyring)
    server.state.leases_held = lambda: health.held if health.protecting else None
    server.reload = Reloader(server)
    server.nofile = nofile
    server.http_tls = ContextSwitch(tls) if tls is not None else None
    server.audit = _open_audit(config)
    if config.workers:
        pool = WorkerPool(
            dns_settings,
            config.workers,
            index,
            lambda: _snapshot(server),
            loop_kind(config.event_loop),
        )
        server.pool = server.index = pool
        registry.set_barrier(pool.settle)
        registry.on_figures(
            lambda service, iid, load, latency: (
                pool.figures(service, iid, load, latency)
                if _reads_figures(registry.get(service))
                else None
            )
        )
        supervisor = pool.supervisor
        server.state.dns_workers = lambda: (
            supervisor.answering(time.monotonic()),
            supervisor.count,
        )
    else:
        server.face = DnsFace.create(dns_settings, index)
    server.queries = queries = attach(registry, server, health, server.changes)
    if server.pool is not None:
        pool = server.pool
        registry.on_figures(
            lambda service, iid, load, latency: queries.figures(
                service, iid, load, latency, pool.figures, FIGURE_POLICIES
            )
        )
    registry.replace_static_queries(config.queries)
    try:
        if server.pool is not None:
            await server.pool.spawn()  # they build from the feed while the store loads
        with heap.bulk():
            await registry.load()
    except BaseException:
        if server.pool is not None:
            await server.pool.stop()
        if keyring is not None:
            await keyring.close()  # with etcd, its own gateway session
        await registry.close()
        raise
    for settings, instances in zone_data.services:
        registry.add_static(settings, instances)
    server.queries.rebuild_all()  # the stored queries, now that every service is there
    server.index.set_changes(server.changes())  # the SOA serial, as loaded
    if config.transfer_notify:
        server.notifier = Notifier(config.dns_settings().transfer, lambda: _zones(server))
        registry.subscribe_changes(server.notifier.changed)
    registry.subscribe_changes(heap.Settler().changed)
    server.state.store_open = True
    try:
        await _listen(server)
    except BaseException:
        await stop(server)
        raise
    server.state.listeners_up = True
    health.start()
    if keyring is not None:
        keyring.start()  # each step of the keys' timeline from now on
    _join_cluster(server)
    if config.token is None and not is_loopback(config.http_listen.host):
        log.warning(
            "the HTTP API listens on %s without a token: anyone who reaches it can change "
            "the registry (set DNSDISC_TOKEN or http.token)",
            config.http_listen,
        )
    log.info(
        "dnsdisc serving %s on DNS %s (UDP+TCP, %s, event loop %s)%s, HTTP %s%s, storage %s, "
        "%d services",
        config.domain,
        ", ".join(str(hp) for hp in config.dns_listen),
        f"{config.workers} worker processes" if config.workers else "in this process",
        "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio",
        f", DNS over TLS {', '.join(str(hp) for hp in config.dns_tls_listen)}"
        if config.dns_tls_listen
        else "",
        config.http_listen,
        _tls_text(server.http_tls),
        _storage_text(config),
        len(registry),
    )
    return server


def _sign(server: Server, keys: tuple[ZoneKey, ...]) -> None:
    """The DNS processes sign with ``keys`` from now on (a step of the keys' timeline); the
    DNSKEY RRset changed, so the SOA serial moves and the secondaries are told."""
    if server.pool is not None:
        server.pool.sign(keys)
    elif server.face is not None:
        server.face.sign(keys)
    server.index.set_changes(server.changes())
    if server.notifier is not None:
        server.notifier.changed()


def _snapshot(server: Server) -> list[tuple[str, ServiceSettings, Sequence[MemberView]]]:
    services = [(s.settings.name, s.settings, server.health.view(s)) for s in server.registry]
    queries = server.queries.snapshot() if server.queries is not None else []
    return [*services, *queries]


def _open_audit(config: Config) -> AuditLog | None:
    if config.audit_log is None:
        return None
    try:
        return AuditLog(config.audit_log)
    except OSError as exc:
        raise ConfigError(
            config.source, "audit_log", f"a file that can be appended to ({exc.strerror})"
        ) from None


def _own_address(hp: HostPort) -> HostPort:
    """Where this process reaches its own DNS port: loopback for a wildcard listen."""
    if hp.host in ("0.0.0.0", ""):
        return HostPort("127.0.0.1", hp.port)
    if hp.host == "::":
        return HostPort("::1", hp.port)
    return hp


def _tls_text(tls: ContextSwitch | None) -> str:
    if tls is None:
        return ""
    return " (TLS, client certificates required)" if tls.mutual else " (TLS)"


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
    from dnsdisc.store.etcd.store import EtcdStore

    assert isinstance(store, EtcdStore)
    server.state.store_stale = lambda: store.stale
    staleness.follow(lambda: store.stale, server.face, server.pool)
    store.campaign(server.health.set_checking)


async def _listen(server: Server) -> None:
    config = server.config
    if server.pool is not None:
        await server.pool.listen()
    elif server.face is not None:
        await server.face.listen()
    guard = HttpGuard(http_limits(config, server.nofile))
    collector = DnsdiscCollector(
        server.registry,
        server.health,
        lambda: server.face.counters() if server.face is not None else server.dns_counters,
        rate_limited=config.effective_rate_limit() is not None,
        forwarding=bool(config.recursors),
        state=server.state,
        pool=server.pool,
        http=guard,
        queries=lambda: server.queries,
    )
    explainer = Explainer(server.registry, server.health, lambda: server.config)
    api = Api(
        server.registry,
        server.state,
        None,
        metrics_registry(collector),
        reload=server.reload,
        refresh=(lambda service: _gather(server, service)) if server.pool is not None else None,
        check_rules=lambda: RemoteCheckRules(
            server.health.settings.check_networks, server.health.settings.min_check_interval
        ),
        guard=guard,
        acl=config.acl(),
        allowed_hosts=config.allowed_hosts(),
        audit=server.audit,
        explain=explainer,
        consul=lambda: server.config.consul_identity(),
        query_status=lambda name: server.queries.status(name) if server.queries else None,
        explain_query=explainer.query,
        dnssec=server.keyring,
        doh=DohHandler(
            Relay(
                _own_address(config.dns_listen[0]),
                config.recursion_allow if config.recursors else None,
                concurrency=config.tcp_max_connections_per_client,
            )
        ),
    )
    server.api = api
    runner = GuardedRunner(api.app(), guard, access_log=None, handle_signals=False)
    await runner.setup()
    server.http_runner = runner
    site = web.TCPSite(
        runner,
        config.http_listen.host,
        config.http_listen.port,
        reuse_address=True,
        ssl_context=server.http_tls.listening if server.http_tls is not None else None,
    )
    await site.start()


async def _gather(server: Server, service: str | None) -> None:
    """Fetch the workers' counters: the DNS face's (for /metrics) and the answers each instance
    led (for the dashboard)."""
    assert server.pool is not None
    counters, answers = await server.pool.counters(service)
    if service is None:
        server.dns_counters = counters
        if server.queries is not None:
            server.queries.absorb(answers)
    services = [server.registry.get(service)] if service is not None else list(server.registry)
    for svc in services:
        if svc is not None:
            for iid, state in svc.instances.items():
                state.answers = answers.get((svc.settings.name, iid), 0)


def _zones(server: Server) -> list[str]:
    """Every zone we serve, as text (what NOTIFY names)."""
    index = server.pool.index if server.pool is not None else server.index
    assert isinstance(index, AnswerIndex)
    settings = index.settings
    return [wire.wire_to_text(apex) for apex in (settings.domain, *settings.extra_zones)]


async def stop(server: Server) -> None:
    """Graceful: stop accepting, let relayed queries finish (bounded), flush and close every
    connection, then close the store (every acknowledged write is already committed)."""
    server.state.listeners_up = False
    if server.face is not None:
        server.face.stop_accepting()
    if server.http_runner is not None:
        await server.http_runner.cleanup()  # waits for requests in progress
    await server.health.stop()
    if server.keyring is not None:
        # First: a step due meanwhile (its timer, the etcd poll) would publish to stopped DNS
        # processes and start a NOTIFY round after the notifier's close.
        await server.keyring.close()
    if server.face is not None:
        await server.face.drain()
    if server.pool is not None:
        await server.pool.stop()
    if server.notifier is not None:
        await server.notifier.close()
    await server.registry.close()
    server.state.store_open = False
    if server.audit is not None:
        server.audit.close()


async def serve(config: Config, loader: Callable[[], Config] | None = None) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the config and zone files."""
    server = await start(config, loader)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    async def on_hup() -> None:
        assert server.reload is not None
        try:
            await server.reload()
        except ConfigError as exc:
            log.error("reload rejected, the old configuration keeps serving: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(on_hup()))
    try:
        await stopping.wait()
        log.info("shutting down")
    finally:
        await stop(server)


def loop_kind(choice: str = "auto") -> str:
    """The event loop to run: uvloop where it is installed (auto), or the one asked for."""
    if choice != "auto":
        return choice
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(config: Config, loader: Callable[[], Config] | None = None) -> None:
    if loop_kind(config.event_loop) == "uvloop":
        import uvloop

        uvloop.run(serve(config, loader))
    else:
        asyncio.run(serve(config, loader))


# The policies whose order reads an instance's reported load or measured latency: only their
# services' figures go to the DNS workers (a check's latency changes with every run: sent for
# every service, it cost the workers CPU and the checks a message each; bench/checks.py).
FIGURE_POLICIES = frozenset(("least_loaded", "latency"))


def _reads_figures(svc: Service | None) -> bool:
    return svc is not None and svc.settings.policy in FIGURE_POLICIES
