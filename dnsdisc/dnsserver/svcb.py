"""HTTPS records (RFC 9460) of a service's instances: one ServiceMode record per instance.

Each record says "connect to this instance": TargetName the instance's own name, SvcPriority
from its priority, ``port``, ``alpn`` (``no-default-alpn``, ``ech``) from the service's
``https`` setting and the instance's address as ``ipv4hint`` or ``ipv6hint``. They are
encoded with dnspython's SVCB classes (which order the SvcParams by key and validate them as
the RFC asks) when a member changes, never per query, so the cost of the library is paid off
the answer path; the responder splices the bodies like any other.
"""

from __future__ import annotations

import functools
import socket
import struct

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.svcbbase as svcbbase
from dns.rdtypes.IN.HTTPS import HTTPS as _HTTPS

from dnsdisc.dnsserver import wire
from dnsdisc.dnsserver.view import HttpsView

# The record types (RFC 9460 14.1); wire.py does not name them.
SVCB = 64
HTTPS = 65
_PARAM = struct.Struct("!H")
_PARAM_HEAD = struct.Struct("!HH")  # SvcParamKey, SvcParamValue length
_PORT = struct.Struct("!HHH")  # key 3 (port), length 2, the port
# SvcPriority 0 is AliasMode (RFC 9460 2.4.2): ServiceMode priorities are 1-65535.
MAX_PRIORITY = 65535


def svc_priority(priority: int) -> int:
    """The SvcPriority of an instance of registered (or health-adjusted) ``priority``: one
    more, so that priority 0, the preferred tier, is ServiceMode's first (1), and the order of
    the tiers is kept (lower is preferred in both). 65535 has no room above it and shares
    65535 with 65534."""
    return min(priority + 1, MAX_PRIORITY)


def https_rdata(https: HttpsView, priority: int, target: bytes, port: int, address: str) -> bytes:
    """The rdata of one instance's HTTPS record: ``target`` its name in wire form, ``port``
    its registered port (the setting's ``port`` wins), ``address`` its address (the hint).

    dnspython encodes the service's own SvcParams once per setting (``_service_params``);
    per instance only ``port`` and the hint, two fixed-size parameters, are packed here and
    put in key order (RFC 9460 2.2). dnspython for the whole record costs ~120 us, which a
    start with 100,000 instances would pay in every DNS worker; this costs ~2 us. Tests compare
    the two encodings."""
    head, ech = _service_params(https.alpn, https.no_default_alpn, https.ech)
    packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
    fixed = (
        _PARAM.pack(svc_priority(priority))
        + target
        + head
        + _PORT.pack(3, 2, https.port if https.port is not None else port)
    )
    if len(packed) == 4:
        return fixed + _PARAM_HEAD.pack(4, 4) + packed + ech
    return fixed + ech + _PARAM_HEAD.pack(6, 16) + packed


@functools.lru_cache(maxsize=256)
def _service_params(
    alpn: tuple[str, ...], no_default_alpn: bool, ech: bytes | None
) -> tuple[bytes, bytes]:
    """The wire form of the SvcParams a service's records share: those keyed below ``port``
    (``alpn``, ``no-default-alpn``) and ``ech`` (keyed between ``ipv4hint`` and
    ``ipv6hint``), encoded by dnspython."""
    key = svcbbase.ParamKey
    below: dict[svcbbase.ParamKey, svcbbase.Param | None] = {}
    if alpn:
        ids = tuple(p.encode() for p in alpn)
        below[key.ALPN] = svcbbase.ALPNParam(ids)  # type: ignore[no-untyped-call]
    if no_default_alpn:
        below[key.NO_DEFAULT_ALPN] = None  # a key without a value (dnspython's spelling)
    echo: dict[svcbbase.ParamKey, svcbbase.Param | None] = {}
    if ech is not None:
        echo[key.ECH] = svcbbase.ECHParam(ech)  # type: ignore[no-untyped-call]
    return _params_wire(below), _params_wire(echo)


def _params_wire(params: dict[svcbbase.ParamKey, svcbbase.Param | None]) -> bytes:
    # A record "1 . <params>": 2 bytes of priority and the root name (1 byte) before them.
    rdata = _HTTPS(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, dns.rdatatype.HTTPS, 1, dns.name.root, params
    )
    encoded = rdata.to_wire()
    assert encoded is not None  # None only when writing into a file it was given
    return encoded[3:]


def https_body(
    https: HttpsView, ttl: int, priority: int, target: bytes, port: int, address: str
) -> bytes:
    """One instance's HTTPS record body (no owner), as ``wire.rr_body`` makes the others."""
    return wire.rr_body(HTTPS, ttl, https_rdata(https, priority, target, port, address))
