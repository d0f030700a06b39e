"""What the HTTP port is told by the config (``http.*`` limits, the Consul subset's names): kept
apart from ``guard`` and ``consul`` so that the config loader, and with it the light client
commands, need not import aiohttp or the registry."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    # Watchers hold a connection each (blocking queries, event streams): room for thousands
    # in all; per address, Consul's default (limits.http_max_conns_per_client).
    max_connections: int = 4096
    max_connections_per_client: int = 200


@dataclass(frozen=True, slots=True)
class Identity:
    """What Consul calls the datacenter and the node; for dnsdisc, settings
    (``consul.datacenter``, ``consul.node``) that the Consul-compatible API reports."""

    datacenter: str = "dc1"
    node: str = "dnsdisc"
