"""Reload: re-read the config and zone files, build everything new and check it, then swap each
part's settings whole. A bad file changes nothing; settings that need the listeners or the store
reopened keep their old values until a restart (with a warning).

Incremental: the workers' answer index is rebuilt (a new index, every service's names sent
again) only when the settings it is made of changed: the domain, the nameserver settings, the
negative TTL, the zones. Changed zone-file records are replaced in the index in place (the
services' names stay; a reload that edits one record costs the zone records, not the
registry). The zone files' services that changed are rebuilt into the index in place, or every
service's names when the health settings (which decide who is handed out) changed.

``Reloader`` runs one reload at a time: a request while one runs is coalesced into one more
(which reads the files after every request it stands for), and every caller waits for it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace

from dnsdisc.config.load import Config
from dnsdisc.config.schema import RESTART_FIELDS
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.registry.settings import RegistrySettings
from dnsdisc.server.parts import Server, build_index, load_zones, reserved_names

log = logging.getLogger("dnsdisc")


class Reloader:
    """At most one reload running and one more waiting: a burst of SIGHUPs or POSTs costs two
    reloads, not one each. Callers wait for a reload that started after they asked (so it read
    their files) and get its error, if any."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._running: asyncio.Task[None] | None = None
        self._next: asyncio.Task[None] | None = None
        self.runs = 0  # reloads run (for tests and the log)

    async def __call__(self) -> None:
        if self._next is not None:  # one is queued: it has not read the files yet
            task = self._next
        elif self._running is None or self._running.done():
            task = self._running = asyncio.get_running_loop().create_task(self._run())
        else:
            task = self._next = asyncio.get_running_loop().create_task(self._after(self._running))
        # Shielded: a caller that hangs up must not cancel the reload the others wait for.
        await asyncio.shield(task)

    async def _after(self, previous: asyncio.Task[None]) -> None:
        await asyncio.wait([previous])  # its outcome is its own callers'
        self._next = None
        self._running = asyncio.current_task()
        await self._run()

    async def _run(self) -> None:
        self.runs += 1
        await reload(self._server)


def _current_index(server: Server) -> AnswerIndex | None:
    current = server.pool.index if server.pool is not None else server.index
    return current if isinstance(current, AnswerIndex) else None


def _index_change(old: AnswerIndex | None, new: AnswerIndex) -> str:
    """How ``new`` differs from ``old`` before any service is added: "none"; "records" (only
    the zone files' records, which ``restatic`` replaces in place); or "settings" (a new index).
    The SOA serial is left out: only a change needs to move it."""
    if old is None or replace(new.settings, serial=old.settings.serial) != old.settings:
        return "settings"
    return "none" if new.static_records == old.static_records else "records"


def _tls_context(old: Config, new: Config) -> tuple[Config, ssl.SSLContext | None]:
    """The HTTP listener's next TLS context, made from the files as they are now (a renewed
    certificate under the same name included), with ``new`` as far as it can apply: TLS and
    mutual TLS are turned on or off only by a restart. A file that cannot be loaded raises
    ConfigError: the reload changes nothing and the old certificate keeps serving."""
    if old.http_tls is None or new.http_tls is None:
        if old.http_tls != new.http_tls:
            log.warning("reload: http.tls was added or removed; that takes effect after a restart")
        return replace(new, http_tls=old.http_tls), None
    files = new.http_tls
    if (files.client_ca_file is None) != (old.http_tls.client_ca_file is None):
        log.warning(
            "reload: http.tls.client_ca_file was added or removed; that takes effect after a "
            "restart"
        )
        files = replace(files, client_ca_file=old.http_tls.client_ca_file)
    return replace(new, http_tls=files), files.context(new.source, "http.tls")


async def reload(server: Server) -> None:
    """Re-read the config file and the zone files and apply them without a restart. Anything
    wrong raises ConfigError before a thing has changed: the old config keeps serving."""
    old = server.config
    new = server.loader() if server.loader is not None else old
    # The schema marks these fields "restart": they need the listeners or the store reopened.
    kept = {
        key: getattr(old, key) for key in RESTART_FIELDS if getattr(new, key) != getattr(old, key)
    }
    for key in kept:
        log.warning("reload: %s changed; that takes effect after a restart", key)
    new = replace(new, **kept)
    if old.token is not None and new.token is None:
        log.warning(
            "reload: http.token was removed: write requests (PUT, POST, DELETE) on %s are no "
            "longer authenticated",
            new.http_listen,
        )
    new, tls = _tls_context(old, new)
    zone_data = load_zones(new)
    current = _current_index(server)
    index = build_index(new, zone_data, current.settings.serial if current else None)
    change = _index_change(current, index)
    rebuild = change == "settings"
    settings = RegistrySettings(
        new.defaults, new.services, reserved_names(new, zone_data), new.limits
    )
    # Nothing below can fail on bad input: everything was parsed and checked above. Each part
    # gets its new settings as one value, swapped whole.
    registry = server.registry
    registry.settings = settings
    if rebuild:
        if server.pool is not None:
            server.pool.new_index(index)
        else:
            server.index = index
    elif change == "records":
        if server.pool is not None:
            server.pool.restatic(index.settings, index.static_records)
        elif current is not None:
            current.restatic(index.settings, index.static_records)
    # Changed zone-file services are rebuilt into the current index (the new one if any).
    registry.replace_static([(s, list(i)) for s, i in zone_data.services])
    health_changed = server.health.settings != new.health
    server.health.settings = new.health
    if server.api is not None:
        server.api.acl = new.acl()
        server.api.allowed_hosts = frozenset(new.allowed_hosts())
    if server.audit is not None:
        server.audit.reopen()  # a rotated file is let go of (logrotate, then SIGHUP)
    if tls is not None and server.http_tls is not None:
        server.http_tls.swap(tls)  # new handshakes get it; open connections keep theirs
        assert new.http_tls is not None
        log.info("reload: HTTP TLS certificate read again from %s", new.http_tls.cert_file)
    if rebuild or health_changed:
        for svc in list(registry):
            registry.touch(svc.settings.name)  # every service's names, from the new settings
    registry.replace_static_queries(new.queries)
    if rebuild and server.queries is not None:
        server.queries.rebuild_all()  # into the new index, the NODATA ones included
    # Queries switch over only now, to a complete index.
    if server.pool is not None:
        if rebuild:
            server.pool.swap()
        await registry.settled()
    elif server.face is not None and rebuild:
        # Its serial now, not at the next change: the zone files' part alone would be behind
        # the one answered until now (a pool's new index got it with INDEX).
        index.set_changes(server.changes())
        server.face.responder.index = index
        index.start_journal()  # from what is answered now (see AnswerIndex.start_journal)
    server.config = new
    if change != "none" and server.notifier is not None:
        server.notifier.changed()  # the serial moved: secondaries transfer now, not at refresh
    log.info(
        "reloaded: %d zone records, %d static services; %s",
        len(zone_data.records),
        len(zone_data.services),
        "answer index rebuilt"
        if rebuild
        else "every service rebuilt (health settings changed)"
        if health_changed
        else "zone records replaced in place"
        if change == "records"
        else "answer index kept",
    )
