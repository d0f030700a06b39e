"""Whether the DNS ports are free before the workers bind them with SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from dnsdisc.netaddr import HostPort


async def check_free(listen: Sequence[HostPort], patience: float = 3.0) -> None:
    """Fail if another server holds a DNS port. The workers bind with SO_REUSEPORT, which would
    let them share a port with another dnsdisc of the same user, silently splitting its queries;
    a plain bind first makes that an error. Workers of a server that was just killed may hold the
    port for a moment while they notice, so a refusal is retried for ``patience`` seconds."""
    deadline = asyncio.get_running_loop().time() + patience
    for hp in dict.fromkeys(listen):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            while True:
                try:
                    _probe(hp, kind)
                    break
                except OSError:
                    if asyncio.get_running_loop().time() >= deadline:
                        raise
                    await asyncio.sleep(0.1)


def _probe(hp: HostPort, kind: int) -> None:
    family = socket.AF_INET6 if ":" in hp.host else socket.AF_INET
    for info in socket.getaddrinfo(hp.host, hp.port, family, kind):
        with socket.socket(info[0], kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
