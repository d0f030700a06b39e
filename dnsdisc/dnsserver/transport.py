"""asyncio protocols for DNS over UDP and TCP (RFC 1035 section 4.2, RFC 7766).

Lifecycle lives in ``app``; these classes only move bytes between sockets and the responder.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import cast

from dnsdisc.dnsserver import ratelimit, wire
from dnsdisc.dnsserver.answer import FORWARD, Responder
from dnsdisc.dnsserver.cookies import Cookies, Verdict, may_carry, packed_address
from dnsdisc.dnsserver.forward import Forwarder, fit_udp, refused
from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.dnsserver.transfer import Transfers, transfer_type

log = logging.getLogger(__name__)
query_log = logging.getLogger("dnsdisc.query")


def log_query(client: object, query: bytes, reply: bytes | None, tcp: bool) -> None:
    """One line per query (``--query-log``): client, name, type, rcode, answer count."""
    try:
        q = wire.parse_query(query)
        name = wire.wire_to_text(q.qname.lower()) if q.qname else "-"
        qtype = q.qtype
    except Exception:  # a malformed query is logged as such, never raised
        name, qtype = "-", 0
    if reply is None or len(reply) < 12:
        outcome = "no reply"
    else:
        rcode = reply[3] & 0x0F
        answers = int.from_bytes(reply[6:8], "big")
        outcome = f"rcode {rcode} answers {answers}{' TC' if reply[2] & 0x02 else ''}"
    query_log.info("%s %s %s type %d: %s", "tcp" if tcp else "udp", client, name, qtype, outcome)


_LEN = struct.Struct("!H")


class UDPProtocol(asyncio.DatagramProtocol):
    def __init__(
        self,
        responder: Responder,
        forwarder: Forwarder | None = None,
        limiter: ratelimit.RateLimiter | None = None,
        log_queries: bool = False,
        catch_up: Callable[[], None] | None = None,
        cookies: Cookies | None = None,
    ) -> None:
        self.responder = responder
        self.forwarder = forwarder
        self.limiter = limiter
        # DNS cookies: a query that may carry one leaves the fast path (``may_carry``).
        self.cookies = cookies
        self.log_queries = log_queries
        self.transport: asyncio.DatagramTransport | None = None
        # The common case (no rate limit, no query log) skips every check per query.
        self.plain = limiter is None and not log_queries
        self._sendto: Callable[..., None] = lambda reply, addr: None
        self.respond = responder.respond
        self._addresses: dict[object, bytes] = {}  # see _packed
        # A worker's hook to apply what its feed already holds before answering (see ``feed``).
        self.catch_up = catch_up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, so this is a cast, not a check.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._sendto = self.transport.sendto

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.catch_up is not None:
            self.catch_up()
            if self.transport is not None and self.transport.is_closing():
                return  # the feed could not be applied: this worker stops answering
        reply = self.respond(data, False, self._packed(addr))
        if (
            self.plain
            and reply.__class__ is bytes
            and (self.cookies is None or not may_carry(data))
        ):
            self._sendto(reply, addr)
            return
        self.reply_to(data, reply, addr)

    def _packed(self, addr: tuple[str | object, ...]) -> bytes:
        """The client's address packed (``packed_address``), remembered per address text."""
        host = addr[0]
        packed = self._addresses.get(host)
        if packed is None:
            if len(self._addresses) >= 4096:
                self._addresses.clear()
            packed = self._addresses[host] = packed_address(str(host))
        return packed

    def reply_to(self, data: bytes, reply: object, addr: tuple[str | object, ...]) -> None:
        """Everything after the answer: the query log, forwarding, the rate limit, sending."""
        if self.log_queries:
            log_query(addr[0], data, reply if isinstance(reply, bytes) else None, False)
        if reply is None:
            return
        if reply is FORWARD:
            forwarder = self.forwarder
            if forwarder is None:
                return
            if forwarder.allowed(str(addr[0])):
                forwarder.submit(data, False, lambda got: self._send(fit_udp(data, got), addr))
            else:
                self._send(refused(data), addr)
            return
        verdict = Verdict.NONE
        cookies = self.cookies
        if cookies is not None and may_carry(data):
            where = self._packed(addr)
            present = self.responder.echoed
            reply, verdict = cookies.answer(data, cast(bytes, reply), where, False, present)
        self._send(cast(bytes, reply), addr, data, verdict)

    def _send(
        self,
        reply: bytes,
        addr: tuple[str | object, ...],
        query: bytes = b"",
        cookie: Verdict = Verdict.NONE,
    ) -> None:
        if self.limiter is not None:
            limited = self.limited(reply, self._packed(addr), query, cookie)
            if limited is None:
                return
            reply = limited
        if self.transport is not None:
            self.transport.sendto(reply, addr)

    def limited(self, reply: bytes, where: bytes, query: bytes, cookie: Verdict) -> bytes | None:
        """The rate limit on ``reply`` to the client at ``where`` (packed): the reply, the slip
        reply, or None (dropped). The batched transport calls it too, keeping the reply in the
        batch (sent one by one, as ``_send`` does, the sending took 40% of a worker)."""
        limiter = self.limiter
        # A valid server cookie shows the source address took a reply from us: not spoofed,
        # so not limited (RFC 7873 5.4; BIND and unbound do the same).
        if limiter is None or cookie is Verdict.VALID:
            return reply
        verdict = limiter.check_packed(where, reply)
        if verdict == ratelimit.ALLOW:
            return reply
        if verdict == ratelimit.DROP:
            return None
        bad = None
        if cookie is Verdict.CLIENT and self.cookies is not None:
            # A client that does cookies gets one to come back with (RFC 7873 5.4).
            bad = self.cookies.badcookie(query, where)
        return bad if bad is not None else ratelimit.truncated(reply)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone); nothing to do but keep serving.
        log.debug("UDP error: %s", exc)


class TCPState:
    """Shared by every TCP connection of one listener: the connection caps and idle timeout.

    ``connections`` is kept in order of last activity (a dict moved to the end on each
    answered query), so the least recently active one is first: the one reclaimed when the
    global cap is reached (as Knot and NSD do), if it has been quiet for ``reclaim_after``."""

    def __init__(
        self,
        max_connections: int = 1000,
        idle_timeout: float = 10.0,
        log_queries: bool = False,
        max_per_client: int = 20,
        reclaim_after: float = 1.0,
        cookies: Cookies | None = None,
        transfers: Transfers | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.log_queries = log_queries
        self.max_per_client = max_per_client
        self.reclaim_after = min(reclaim_after, idle_timeout)
        self.cookies = cookies
        # Zone transfers (AXFR/IXFR); None: refused like any query for them.
        self.transfers = transfers or Transfers(TransferSettings())
        self.connections: dict[TCPProtocol, None] = {}
        self.per_client: dict[str, int] = {}
        self.refused = 0
        self.reclaimed = 0

    def admit(self, conn: TCPProtocol, client: str, now: float) -> bool:
        """Whether ``conn`` from ``client`` may stay; makes room by reclaiming if it can."""
        if self.per_client.get(client, 0) >= self.max_per_client:
            self.refused += 1
            return False
        if len(self.connections) >= self.max_connections:
            oldest = next(iter(self.connections))
            if now - oldest.active < self.reclaim_after or oldest.transport is None:
                self.refused += 1
                return False
            self.reclaimed += 1
            self.release(oldest)
            oldest.transport.abort()
        self.connections[conn] = None
        self.per_client[client] = self.per_client.get(client, 0) + 1
        return True

    def release(self, conn: TCPProtocol) -> None:
        if conn in self.connections:
            del self.connections[conn]
            left = self.per_client.get(conn.client, 1) - 1
            if left > 0:
                self.per_client[conn.client] = left
            else:
                self.per_client.pop(conn.client, None)

    def touch(self, conn: TCPProtocol) -> None:
        if conn in self.connections:
            del self.connections[conn]
            self.connections[conn] = None


class TCPProtocol(asyncio.Protocol):
    """Length-prefixed messages; several queries per connection, answered in order of arrival.

    A client that sends faster than it reads is not allowed to pile replies up in memory: when
    the transport's write buffer is full, reading stops until it drains. The idle timer restarts
    only when a whole message arrived, so a trickle of partial frames cannot hold a slot."""

    def __init__(
        self,
        responder: Responder,
        state: TCPState,
        forwarder: Forwarder | None = None,
        catch_up: Callable[[], None] | None = None,
    ) -> None:
        self.responder = responder
        self.state = state
        self.forwarder = forwarder
        self.catch_up = catch_up
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.idle: asyncio.TimerHandle | None = None
        self.paused = False
        self.client = "-"
        self.client_packed = b""  # the client's address packed (cookies, locality)
        self.active = 0.0
        # A zone transfer being sent: the queries after it wait until it ends (their replies
        # must not land between its messages).
        self.transfer: asyncio.Task[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.client = ratelimit.unmapped(str(peer[0])) if peer else "-"
        self.client_packed = packed_address(self.client)  # once, not per query
        self.active = asyncio.get_running_loop().time()
        if not self.state.admit(self, self.client, self.active):
            self.transport.abort()
            return
        self._arm()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.active = loop.time()
        self.state.touch(self)
        self.idle = loop.call_later(self.state.idle_timeout, self._expire)

    def _expire(self) -> None:
        transport = self.transport
        if transport is None:
            return
        # close() waits for the write buffer to drain, which never happens if the client stopped
        # reading: replies still unsent at the idle timeout are given up and the slot freed.
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._answer_buffered()

    def _answer_buffered(self) -> None:
        buf = self.buffer
        transport = self.transport
        assert transport is not None
        answered = False
        if self.catch_up is not None:
            self.catch_up()  # once for every query buffered now: all arrived before this
        while len(buf) >= 2 and not self.paused and self.transfer is None:
            (length,) = _LEN.unpack_from(buf)
            if len(buf) < 2 + length:
                break
            message = bytes(buf[2 : 2 + length])
            del buf[: 2 + length]
            answered = True
            if transfer_type(message):
                self._transfer(message)
                break
            reply = self.responder.respond(message, True, self.client_packed)
            if self.state.log_queries:
                log_query(self.client, message, reply if isinstance(reply, bytes) else None, True)
            if reply is FORWARD:
                if self.forwarder is None:
                    pass
                elif self.forwarder.allowed(self.client):
                    # Answered when the upstream replies; RFC 7766 lets replies overtake.
                    self.forwarder.submit(message, True, self._write)
                else:
                    self._write(refused(message))
            elif reply is not None:
                cookies = self.state.cookies
                if cookies is not None and may_carry(message):
                    reply = cookies.answer(
                        message,
                        cast(bytes, reply),
                        self.client_packed,
                        True,
                        self.responder.echoed,
                    )[0]
                self._write(cast(bytes, reply))
        if answered:
            self._arm()

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_LEN.pack(len(reply)) + reply)

    def _transfer(self, message: bytes) -> None:
        # Nothing is read until the transfer ends: the queries after it wait anyway, and what
        # a client sent meanwhile would pile up in ``buffer`` without bound.
        assert self.transport is not None
        self.transport.pause_reading()
        # The index as it is now: a reload's swap mid-transfer does not mix two indexes.
        serve = self.state.transfers.serve(
            self.responder.index, message, self.client, self._write, self._drained
        )
        self.transfer = asyncio.get_running_loop().create_task(serve)
        self.transfer.add_done_callback(self._transferred)

    async def _drained(self) -> None:
        """Between a transfer's messages: wait while the client's socket is full. A transfer
        that moves counts as activity (the idle timer restarts)."""
        self._arm()
        while self.paused and self.transport is not None and not self.transport.is_closing():
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client went away during the transfer")

    def _transferred(self, task: asyncio.Task[None]) -> None:
        self.transfer = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            if not isinstance(exc, ConnectionError):
                log.error("zone transfer to %s failed", self.client, exc_info=exc)
            if self.transport is not None:
                self.transport.abort()  # a transfer cut short must not look complete
            return
        if self.transport is not None and not self.transport.is_closing():
            if not self.paused:
                self.transport.resume_reading()
            self._answer_buffered()

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            if self.transfer is None:  # a transfer reads again when it ends
                self.transport.resume_reading()
            self._answer_buffered()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.release(self)
        if self.idle is not None:
            self.idle.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self.transfer is not None:
            self.transfer.cancel()
