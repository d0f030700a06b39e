"""DNS over HTTPS (RFC 8484): ``GET /dns-query?dns=<base64url>`` and ``POST /dns-query`` with an
``application/dns-message`` body, on the HTTP listener (clients need it over TLS: ``http.tls``).

A query is relayed over TCP to this server's own DNS port, so DoH gets what TCP gets (the same
index, balancing and EDNS handling) whether DNS is answered here or by worker processes, and
holds no index of its own. The DNS port sees the relay as a loopback client, which
``recursion_allow`` would let use ``recursors``: a query from an HTTP client outside
``recursion_allow`` goes on with RD cleared (names outside our zones then get REFUSED, as over
UDP) and its reply gets the client's RD back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import struct

import dns.exception
import dns.message
from aiohttp import web

from dnsdisc.errors import ValidationError
from dnsdisc.netaddr import HostPort, NetRules

CONTENT_TYPE = "application/dns-message"
_LEN = struct.Struct("!H")
_HEADER = 12  # a DNS message is at least its header
_RD = 0x01  # in the third byte of the header


class Unavailable(Exception):
    """The DNS port did not answer the relayed query."""


class Relay:
    """Queries to the DNS port over TCP, one connection each, at most ``concurrency`` at once
    (the DNS port caps connections per client address, and every relayed query comes from
    loopback)."""

    def __init__(
        self,
        target: HostPort,
        recursion: NetRules | None,
        concurrency: int = 16,
        timeout: float = 5.0,
    ) -> None:
        self.target = target
        self.recursion = recursion  # None: no recursors, nothing to guard
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.relayed = 0
        self.failures = 0

    async def query(self, message: bytes, client: str) -> bytes:
        rd = bool(message[2] & _RD)
        if rd and self.recursion is not None and not self.recursion.allows(client):
            message = message[:2] + bytes([message[2] & ~_RD]) + message[3:]
        async with self._slots:
            try:
                reply = await asyncio.wait_for(self._exchange(message), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                self.failures += 1
                raise Unavailable(str(exc) or type(exc).__name__) from None
        self.relayed += 1
        if rd and not reply[2] & _RD and len(reply) >= _HEADER:
            reply = reply[:2] + bytes([reply[2] | _RD]) + reply[3:]
        return reply

    async def _exchange(self, message: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
        try:
            writer.write(_LEN.pack(len(message)) + message)
            (length,) = _LEN.unpack(await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _decode_get(request: web.Request) -> bytes:
    param = request.query.get("dns")
    if not param:
        raise ValidationError("dns", "GET /dns-query needs ?dns=<the query in base64url>")
    try:
        # RFC 8484 4.1: base64url without padding; padding is tolerated.
        return base64.urlsafe_b64decode(param + "=" * (-len(param) % 4))
    except (binascii.Error, ValueError):
        raise ValidationError("dns", "dns must be a DNS message in base64url") from None


def max_age(reply: bytes) -> int | None:
    """RFC 8484 5.1: the smallest TTL of the answer and authority records (the SOA of a
    negative answer included); None when there is none to go by."""
    try:
        parsed = dns.message.from_wire(reply)
    except dns.exception.DNSException:
        return None
    ttls = [rrset.ttl for section in (parsed.answer, parsed.authority) for rrset in section]
    return min(ttls) if ttls else None


class DohHandler:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/dns-query", self.handle)
        router.add_post("/dns-query", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            if request.content_type != CONTENT_TYPE:
                raise web.HTTPUnsupportedMediaType(
                    reason=f"POST /dns-query takes Content-Type: {CONTENT_TYPE}"
                )
            message = await request.read()
        else:
            message = _decode_get(request)
        if not _HEADER <= len(message) <= 0xFFFF:
            raise ValidationError("dns", "the query is not a DNS message (12 to 65535 bytes)")
        try:
            reply = await self.relay.query(message, request.remote or "")
        except Unavailable as exc:
            raise web.HTTPBadGateway(reason=f"the DNS port did not answer: {exc}") from None
        response = web.Response(body=reply, content_type=CONTENT_TYPE)
        age = max_age(reply)
        if age is not None:
            response.headers["Cache-Control"] = f"max-age={age}"
        return response
