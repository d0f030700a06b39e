"""dnsdisc's Python client: the HTTP API (sync and asyncio), leases kept alive in the background,
and SRV lookups in RFC 2782 order. ``from dnsdisc.client import Client, resolve`` is the public
surface; the modules behind it are free to move.

It imports neither the server nor PyYAML (checked by tests/meta): only the standard library,
``dnsdisc.errors``, ``dnsdisc.netaddr`` and the pure ``dnsdisc.policies``; dnspython on the first
``resolve()``.
"""

from dnsdisc.client.rest import (
    HEALTHY,
    AsyncClient,
    AsyncRegistration,
    Client,
    ClientError,
    Registration,
    ResolveError,
    Unreachable,
    base_url,
    pick,
    resolve,
    split_hostport,
)

__all__ = [
    "HEALTHY",
    "AsyncClient",
    "AsyncRegistration",
    "Client",
    "ClientError",
    "Registration",
    "ResolveError",
    "Unreachable",
    "base_url",
    "pick",
    "resolve",
    "split_hostport",
]
