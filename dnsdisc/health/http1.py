"""The HTTP/1.1 client of HTTP(S) checks: one request, its status, its ``Location`` and the
first ``MAX_BODY`` bytes of its body, over connections kept alive between runs.

A check needs far less than a general client: no cookies, no decompression, no proxies, no
streaming. aiohttp's request path cost about 200 µs of the main process's CPU a check, half of
it at 2,000 checks/s (py-spy, bench/checks.py); this one sends the whole request in one write
and parses the answer in the protocol's callback.

Connections: at most ``PER_TARGET`` idle ones are kept per target (address, port, TLS
settings) for ``KEEPALIVE`` s; how many are open at once is bounded by the checks in flight
(``health.max_concurrent_checks``); a timer closes idle ones past ``KEEPALIVE`` whether or not
more runs come. A connection is kept only when its response was read whole, framed by its length
or its chunks (not by the end of the connection), said nothing of closing, and nothing followed
it. A request that finds a reused connection closed before any byte of its response came is sent
once more on a new one (RFC 9112, 9.3.1.1: the methods the caller marks idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, cast

KEEPALIVE = 15.0  # s an idle connection is kept for the next run
PER_TARGET = 16  # idle connections kept per target at most
MAX_HEAD = 65536  # bytes of status line and headers at most
_SWEEP = 5.0  # s between looks for idle connections past KEEPALIVE
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")  # RFC 9112, 7.1: 1*HEXDIG, nothing else
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class HttpError(Exception):
    """The target's answer is not HTTP/1.x this client reads (the message is ours)."""


class Closed(Exception):
    """The target closed the connection before the response was complete."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    location: str | None
    body: bytes  # the first ``limit`` bytes


Target = tuple[str, int, ssl.SSLContext | None, str | None]  # address, port, TLS, server name


class _Conn(asyncio.Protocol):
    """One connection: sends a request, parses its response as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._sock: Any = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._limit = 0
        self.got_bytes = False
        self.reusable = False
        # The response being parsed.
        self._state = 0  # 0 head, 1 sized body, 2 chunked body, 3 body until close, 4 done
        self._status = 0
        self._location: str | None = None
        self._keep = False
        self._left = 0
        self._body = bytearray()

    # -- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.reusable = False  # bytes nobody asked for: never reused
            self.close()
            return
        self.got_bytes = True
        self._buf += data
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)
            return
        if self._state != 4 and self._sock is not None and _QUICKACK is not None:
            # More is to come: acknowledge now. A target that writes its head and its body
            # apart (Python's http.server) holds the body back (Nagle) until the head is
            # acknowledged, and Linux delays that ACK by 40 ms on a kept-alive connection.
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def eof_received(self) -> bool | None:
        if self._state == 3:  # a body delimited by the end of the connection
            self._keep = False
            self._finish()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._state == 3:
            self._keep = False
            self._finish()
        else:
            self._fail(Closed())

    # -- use ---------------------------------------------------------------------------------

    def request(self, data: bytes, head_only: bool, limit: int) -> asyncio.Future[Response]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head_only, self._limit = head_only, limit
        self.got_bytes = self.reusable = False
        self._state, self._status, self._location, self._keep = 0, 0, None, False
        self._body = bytearray()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self) -> None:
        while True:
            if self._state == 0:
                end, after = _head_end(self._buf)
                if end < 0 or end > MAX_HEAD:
                    if len(self._buf) > MAX_HEAD:
                        raise HttpError("response head too large")
                    return
                head = bytes(self._buf[:end])
                del self._buf[:after]
                self._head(head)  # the body next (or, after an interim 1xx, another head)
                continue
            elif self._state == 1:
                take = min(self._left, len(self._buf))
                self._keep_body(self._buf[:take])
                del self._buf[:take]
                self._left -= take
                if self._left == 0:
                    self._finish()
                elif len(self._body) >= self._limit:
                    self._keep = False  # the rest is not read: the connection cannot be reused
                    self._finish()
                return
            elif self._state == 2:
                if not self._chunk():
                    return
                continue
            elif self._state == 3:
                self._keep_body(self._buf)
                self._buf.clear()
                if len(self._body) >= self._limit:
                    self._finish()
                return
            return

    def _head(self, head: bytes) -> None:
        """Parse a status line and headers (of an interim 1xx response: wait for the next)."""
        # Lines end in CRLF, or a bare LF (RFC 9112, 2.2: a recipient may accept it, and
        # aiohttp, which HTTP checks used before, did).
        lines = [line.removesuffix(b"\r") for line in head.split(b"\n")]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise HttpError("not an HTTP/1.x response")
        if len(parts[1]) != 3 or not parts[1].isdigit():
            raise HttpError("invalid status line")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        keep = parts[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise HttpError("invalid header line")
            key = name.lower()
            value = value.strip()
            if key == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise HttpError("invalid Content-Length")
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = value.lower().split(b",")[-1].strip() == b"chunked"
                if not chunked:
                    raise HttpError("unsupported Transfer-Encoding")
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep = False
                elif b"keep-alive" in tokens and parts[0] == b"HTTP/1.0":
                    keep = True
            elif key == b"location":
                self._location = value.decode("latin-1")
        if 100 <= status < 200:
            if status == 101:
                raise HttpError("unexpected protocol switch")
            self._location = None
            return
        if chunked and length is not None:
            keep = False  # RFC 9112, 6.1: framed twice; not reused whichever was meant
        self._status, self._keep = status, keep
        if self._head_only or status in (204, 304):
            self._finish()
        elif chunked:
            self._state, self._left = 2, -1
        elif length is not None:
            self._state, self._left = 1, length
            if length == 0:
                self._finish()
        else:
            # Delimited by the end of the connection: never reused, even when read only up to
            # the limit (the rest would come as the next request's response).
            self._state, self._keep = 3, False

    def _chunk(self) -> bool:
        """Consume what the buffer holds of a chunked body; True when it made progress."""
        if self._left < 0:  # at a chunk-size line (or the trailers after the last chunk)
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 1024:
                    raise HttpError("invalid chunk size")
                return False
            line = bytes(self._buf[:end]).split(b";", 1)[0].rstrip(b" \t")
            if self._left == -2:  # trailers: skip lines until an empty one
                del self._buf[: end + 2]
                if not line:
                    self._finish()
                    return False
                return True
            # Hex digits only: int() would also take a sign, "0x", "_" and spaces, which the
            # target's framing does not mean (a "-2" stalled the run until its timeout).
            if not _CHUNK_SIZE.fullmatch(line):
                raise HttpError("invalid chunk size")
            size = int(line, 16)
            del self._buf[: end + 2]
            self._left = -2 if size == 0 else size + 2  # the data and its CRLF
            return True
        left = self._left  # of the chunk's data and its CRLF
        take = min(left, len(self._buf))
        if not take:
            return False
        data = self._buf[:take]
        del self._buf[:take]
        self._left -= take
        self._keep_body(data[: max(0, left - 2)])
        if len(self._body) >= self._limit:
            self._keep = False  # the rest is not read: the connection cannot be reused
            self._finish()
            return False
        if self._left == 0:
            self._left = -1
            return True
        return False

    def _keep_body(self, data: bytes | bytearray) -> None:
        room = self._limit - len(self._body)
        if room > 0:
            self._body += data[:room]

    def _finish(self) -> None:
        if self._state == 4:
            return
        self._state = 4
        waiter = self._waiter
        self.reusable = self._keep and not self._buf and not self.closed
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._location, bytes(self._body)))

    def _fail(self, exc: Exception) -> None:
        self._state = 4
        self.reusable = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()


class Client:
    """Requests over kept-alive connections, pooled per target."""

    def __init__(self) -> None:
        self._idle: dict[Target, list[_Conn]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        target: Target,
        data: bytes,
        *,
        head_only: bool,
        reuse: bool,
        retry: bool,
        limit: int,
    ) -> Response:
        """Send ``data`` (a whole request) to ``target`` and read its response; ``reuse``: take
        and give back an idle connection; ``retry``: send once more on a new connection when a
        reused one turns out closed."""
        conn = self._take(target) if reuse else None
        if conn is not None:
            try:
                return await self._exchange(target, conn, data, head_only, reuse, limit)
            except Closed:
                if not retry or conn.got_bytes:
                    raise
        conn = await self._open(target)
        return await self._exchange(target, conn, data, head_only, reuse, limit)

    async def _exchange(
        self, target: Target, conn: _Conn, data: bytes, head_only: bool, reuse: bool, limit: int
    ) -> Response:
        try:
            response = await conn.request(data, head_only, limit)
        except BaseException:  # failed, timed out or cancelled: never reused
            conn.close()
            raise
        if reuse and conn.reusable:
            self._give(target, conn)
        else:
            conn.close()
        return response

    async def _open(self, target: Target) -> _Conn:
        address, port, ctx, server_name = target
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if ctx is not None:
            extra = {"ssl": ctx, "server_hostname": server_name or address}
        _, conn = await loop.create_connection(_Conn, address, port, **extra)
        return conn

    def _take(self, target: Target) -> _Conn | None:
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE:
                return conn
            conn.close()
        return None

    def _give(self, target: Target, conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(target, [])
        if len(idle) >= PER_TARGET:
            conn.close()
        else:
            idle.append(conn)
        if self._sweeper is None:
            # A timer, not a look at the next give: idle connections must close after
            # KEEPALIVE s even when no run comes to give one (the checks were removed, or this
            # node stopped checking), as aiohttp's connector closed them.
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP, self._on_sweep)

    def _on_sweep(self) -> None:
        self._sweeper = None
        self._sweep(time.monotonic())
        if self._idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP, self._on_sweep)

    def _sweep(self, now: float) -> None:
        """Close idle connections past ``KEEPALIVE`` (of targets no longer checked, too)."""
        for target, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < KEEPALIVE]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            if keep:
                self._idle[target] = keep
            else:
                del self._idle[target]

    def close(self) -> None:
        """Close the idle connections; any given back from now on (a run that ends after
        this) is closed, not kept."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _head_end(buf: bytearray) -> tuple[int, int]:
    """Where the response head in ``buf`` ends (its last line's end, without the empty line)
    and where what follows it starts; (-1, -1) while it is incomplete. The empty line ending
    it is CRLF or a bare LF, after a line ended either way."""
    crlf = buf.find(b"\n\r\n")
    lf = buf.find(b"\n\n", 0, crlf + 1 if crlf >= 0 else len(buf))
    if lf >= 0:
        return lf, lf + 2
    if crlf >= 0:
        return crlf, crlf + 3
    return -1, -1
