"""Reload: re-read the config and zone files, build everything new and check it, then swap each
part's settings whole. A bad file changes nothing; settings that need the listeners or the store
reopened keep their old values until a restart (with a warning)."""

from __future__ import annotations

import logging
from dataclasses import replace

from dnsdisc.config.schema import RESTART_FIELDS
from dnsdisc.registry.settings import RegistrySettings
from dnsdisc.server.parts import Server, build_index, load_zones, reserved_names

log = logging.getLogger("dnsdisc")


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
    zone_data = load_zones(new)
    index = build_index(new, zone_data)
    settings = RegistrySettings(
        new.defaults, new.services, reserved_names(new, zone_data), new.limits
    )
    # Nothing below can fail on bad input: everything was parsed and checked above. Each part
    # gets its new settings as one value, swapped whole.
    registry = server.registry
    registry.settings = settings
    registry.replace_static([(s, list(i)) for s, i in zone_data.services])
    server.health.settings = new.health
    if server.api is not None:
        server.api.token = new.token
    if server.pool is not None:
        server.pool.new_index(index)
    else:
        server.index = index
    for svc in list(registry):
        registry.touch(svc.settings.name)  # rebuilds every service into the new index
    # Queries switch over only now, to a complete index.
    if server.pool is not None:
        server.pool.swap()
        await registry.settled()
    elif server.face is not None:
        server.face.responder.index = index
    server.config = new
    log.info(
        "reloaded: %d zone records, %d static services",
        len(zone_data.records),
        len(zone_data.services),
    )
