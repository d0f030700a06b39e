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
    max_connections: int = 1000
    max_connections_per_client: int = 100


@dataclass(frozen=True, slots=True)
class Identity:
    """What Consul calls the datacenter and the node; for dnsdisc, settings
    (``consul.datacenter``, ``consul.node``) that the Consul-compatible API reports."""

    datacenter: str = "dc1"
    node: str = "dnsdisc"
