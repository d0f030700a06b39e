"""dnsdisc's Python client: the HTTP API (sync and asyncio), leases kept alive in the background,
and SRV lookups in RFC 2782 order. ``from dnsdisc.client import Client, resolve`` is the public
surface; the modules behind it are free to move:

- ``rest``: ``Client`` (urllib) and ``AsyncClient`` (the same calls, in threads);
- ``wire``: the API without I/O: paths, request bodies and headers, reply and error decoding;
- ``lease``: ``Registration`` and ``AsyncRegistration``, an instance kept alive by heartbeats;
- ``srv``: ``resolve`` and ``pick``, SRV lookups through dnspython;
- ``addresses``: ``HOST:PORT`` and the API's base URL; ``errors``: ``ClientError`` and kin.

It imports neither the server nor PyYAML (an import-linter contract in pyproject.toml): only the
standard library, ``dnsdisc.errors``, ``dnsdisc.netaddr`` and the pure ``dnsdisc.policies``;
asyncio when an async call runs, dnspython on the first ``resolve()``.
"""

from dnsdisc.client.addresses import base_url, split_hostport
from dnsdisc.client.errors import ClientError, ResolveError, Unreachable
from dnsdisc.client.lease import AsyncRegistration, Registration
from dnsdisc.client.rest import AsyncClient, Client
from dnsdisc.client.srv import pick, resolve
from dnsdisc.client.wire import HEALTHY

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
