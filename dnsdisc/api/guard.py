"""Limits on the HTTP port's connections, ahead of aiohttp's request handling: a deadline for a
request's headers (aiohttp has none: a half-sent request held its connection, and a descriptor,
for as long as the client liked), a deadline for its body, and caps on connections in all and
per client address. A connection over a cap is closed at once, before anything is read from it;
one whose headers or body are late is closed, with a 408 where a response can still be sent.

``GuardedRunner`` stands where ``web.AppRunner`` stands; ``HttpGuard`` holds the counts that
``/metrics`` shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dnsdisc.api.settings import HttpLimits

log = logging.getLogger(__name__)

Handler = Any  # the next middleware or the route's handler

AUTH_FAILURES = 10
AUTH_WINDOW = 60.0


class HttpGuard:
    """The connections open, per client address, and how often a limit was hit."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open = 0
        self.per_client: Counter[str] = Counter()
        # Every label value present from the start: /metrics shows each series at 0.
        self.refused: Counter[str] = Counter({"global": 0, "per_client": 0})
        self.timeouts: Counter[str] = Counter({"header": 0, "body": 0})
        # Failed authentications: counted, and per client address, throttled past
        # AUTH_FAILURES within AUTH_WINDOW seconds (a 429 until the window has passed).
        self.auth: Counter[str] = Counter({"failed": 0, "throttled": 0})
        self._failures: dict[str, list[float]] = {}

    def auth_throttled(self, client: str, now: float) -> bool:
        recent = [t for t in self._failures.get(client, ()) if now - t < AUTH_WINDOW]
        if len(recent) >= AUTH_FAILURES:
            self.auth["throttled"] += 1
            return True
        return False

    def auth_failed(self, client: str, now: float) -> None:
        self.auth["failed"] += 1
        if len(self._failures) >= 10_000 and client not in self._failures:
            self._failures.clear()  # bounded: a flood of addresses forgets, never grows
        recent = [t for t in self._failures.get(client, ()) if now - t < AUTH_WINDOW]
        self._failures[client] = [*recent[-AUTH_FAILURES:], now]

    def admit(self, client: str) -> bool:
        """Count a new connection in, or say it is over a cap (and count that)."""
        if self.open >= self.limits.max_connections:
            self.refused["global"] += 1
            return False
        if self.per_client[client] >= self.limits.max_connections_per_client:
            self.refused["per_client"] += 1
            return False
        self.open += 1
        self.per_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self.open -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]

    @web.middleware
    async def body_deadline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Read the whole body (at most the app's client_max_size) within body_timeout, before
        the handler runs: a body trickled in, or never finished, does not hold the request."""
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), self.limits.body_timeout)
            except TimeoutError:
                self.timeouts["body"] += 1
                timeout = self.limits.body_timeout
                response = web.json_response(
                    {"error": f"the body did not arrive within {timeout:g} s", "field": "body"},
                    status=408,
                )
                # What is left of the body would be read as a request: close the connection once
                # the 408 is sent, without first reading on for aiohttp's lingering time.
                response.force_close()
                if isinstance(request.protocol, _GuardedHandler):
                    request.protocol.no_lingering()
                return response
        result: web.StreamResponse = await handler(request)
        return result


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps(
        {"error": f"the request headers did not arrive within {seconds:g} s", "field": ""}
    ).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _GuardedHandler(RequestHandler):
    """aiohttp's protocol for one connection, with the caps and the header deadline."""

    def __init__(self, guard: HttpGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.client: str | None = None  # set once admitted under the caps
        self.header_timer: asyncio.TimerHandle | None = None
        self.partial = False  # bytes of the next request have arrived
        # Done when the connection is lost: what a parked blocking query also waits on (see
        # ``disconnected``), since aiohttp does not cancel a handler whose client left.
        self.gone: asyncio.Future[None] | None = None

    def no_lingering(self) -> None:
        self._lingering_time = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self.guard.admit(client):
            # A TCP transport (asyncio's or uvloop's, which does not subclass it) can abort.
            cast(asyncio.Transport, transport).abort()  # closed at once: the descriptor is not held
            return
        self.client = client
        self._arm()

    def _arm(self) -> None:
        """The next request's headers are due within header_timeout from now."""
        loop = asyncio.get_running_loop()
        count = self._request_count
        self.header_timer = loop.call_later(
            self.guard.limits.header_timeout, self._headers_late, count
        )

    def _headers_late(self, count: int) -> None:
        self.header_timer = None
        if self._request_count != count or self.transport is None:
            return  # they arrived: that request is handled, or was, and is no longer waiting
        self.guard.timeouts["header"] += 1
        if self.partial:
            self.transport.write(_timeout_response(self.guard.limits.header_timeout))
        self.force_close()

    def data_received(self, data: bytes) -> None:
        # Between requests (a fresh or kept-alive connection), the first bytes of the next one
        # start its header deadline; an idle kept-alive connection is keepalive_timeout's.
        between = not getattr(self, "_request_in_progress", False) and not self._messages
        if between and data and self.header_timer is None:
            self._arm()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # whole headers arrived
            self.partial = False
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None
        elif data:
            self.partial = True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        if self.client is not None:
            self.guard.release(self.client)
            self.client = None
        if self.gone is not None and not self.gone.done():
            self.gone.set_result(None)
        super().connection_lost(exc)


def disconnected(request: web.BaseRequest) -> asyncio.Future[None] | None:
    """A future done once the request's client has gone (None: not a guarded connection)."""
    proto = request.protocol
    if not isinstance(proto, _GuardedHandler):
        return None
    if proto.gone is None:
        proto.gone = asyncio.get_running_loop().create_future()
        if proto.transport is None:
            proto.gone.set_result(None)
    return proto.gone


class _GuardedServer(web.Server):
    def __init__(self, guard: HttpGuard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self.guard, self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are guarded by ``guard``."""

    def __init__(self, app: web.Application, guard: HttpGuard, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", guard.limits.keepalive_timeout)
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The same server, but making guarded protocols; aiohttp keeps its arguments here.
        return _GuardedServer(
            self.guard,
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
