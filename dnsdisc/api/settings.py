"""What the HTTP port's guard is told (``http.*`` limits): kept apart from ``guard`` so that the
config loader, and with it the light client commands, need not import aiohttp."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    max_connections: int = 1000
    max_connections_per_client: int = 100
