"""One process's DNS face: the UDP and TCP listeners over a responder, with their rate limiter,
forwarder and counters, opened and drained together. The main process runs one when it answers
DNS itself; each worker process (``dnsdisc.workers.replica``) runs one on the shared port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import platform
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dnsdisc.dnsserver import nsid, udpbatch
from dnsdisc.dnsserver.answer import Responder
from dnsdisc.dnsserver.cookies import Cookies
from dnsdisc.dnsserver.dnssec import Signer, ZoneKey
from dnsdisc.dnsserver.forward import Forwarder
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.ratelimit import RateLimiter
from dnsdisc.dnsserver.settings import DnsSettings
from dnsdisc.dnsserver.stats import DnsCounters
from dnsdisc.dnsserver.transfer import Transfers
from dnsdisc.dnsserver.transport import TCPProtocol, TCPState, UDPProtocol
from dnsdisc.dnsserver.tsig import Tsig
from dnsdisc.netaddr import HostPort

log = logging.getLogger(__name__)

RESIGN_EVERY = 3600.0  # s between emptyings of the reply cache while signing (forget_signed)

# Python's socket module does not name it: 33 on Linux where the generic socket numbers apply
# (not everywhere: alpha, MIPS, PA-RISC and SPARC number it otherwise). Elsewhere: SO_RCVBUF only.
SO_RCVBUFFORCE: int | None = getattr(
    socket,
    "SO_RCVBUFFORCE",
    33
    if sys.platform.startswith("linux")
    and platform.machine() in ("x86_64", "aarch64", "i686", "armv7l", "riscv64")
    else None,
)


@dataclass
class DnsFace:
    settings: DnsSettings
    responder: Responder
    forwarder: Forwarder | None
    limiter: RateLimiter | None
    tcp_state: TCPState
    cookies: Cookies | None = None
    _ticker: asyncio.TimerHandle | None = None  # keeps cookies.now current
    _resign: asyncio.TimerHandle | None = None  # forgets signed replies hourly (DNSSEC)
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    tcp_servers: list[asyncio.AbstractServer] = field(default_factory=list)
    # Called before answering queries just read (a worker brings its index up to the fence).
    catch_up: Callable[[], None] | None = None

    @classmethod
    def create(
        cls,
        settings: DnsSettings,
        index: AnswerIndex,
        processes: int = 1,
        process: str | None = None,
    ) -> DnsFace:
        """``processes``: how many faces share the port. The kernel spreads a client's queries
        over them by source port, so each enforces its share of the rate limit. ``process``:
        this process's name in NSID replies (None: as ``nsid.name_process`` set it)."""
        identifier = nsid.option(settings.nsid, process)
        forwarder = (
            Forwarder(
                settings.recursors,
                settings.recursor_timeout,
                allow=settings.recursion_allow,
                nsid=identifier,
            )
            if settings.recursors
            else None
        )
        cookies = (
            Cookies(settings.cookie_secret)
            if settings.cookies and len(settings.cookie_secret) == 16
            else None
        )
        rrl = settings.rate_limit
        limiter = (
            RateLimiter(
                math.ceil(rrl.responses_per_second / processes),
                rrl.slip,
                rrl.ipv4_prefix,
                rrl.ipv6_prefix,
            )
            if rrl
            else None
        )
        responder = Responder(
            index,
            forwarding=forwarder is not None,
            any_full=settings.any_full,
            reply_cache_bytes=settings.reply_cache_bytes,
            udp_answer_limit=settings.udp_answer_limit,
            nsid=identifier,
            max_signatures=settings.dnssec_max_signatures,
        )
        if settings.dnssec_keys:  # a new worker's; later ones come as KEYS messages (sign)
            signer = Signer(
                settings.dnssec_keys,
                max_ttl=settings.zone_max_ttl,
                validity=settings.signature_validity,
            )
            responder.sign_with(signer, settings.dnskey_ttl)
        tsig = Tsig(settings.transfer.tsig_keys)
        transfers = Transfers(settings.transfer, tsig)
        if settings.transfer.tsig_keys:
            # A secondary's signed SOA query wants a signed reply (see Tsig.signed).
            responder.signed = tsig.signed
        return cls(
            settings,
            responder,
            forwarder,
            limiter,
            TCPState(
                settings.tcp_max_connections,
                settings.tcp_idle_timeout,
                settings.query_log,
                settings.tcp_max_connections_per_client,
                cookies=cookies,
                transfers=transfers,
            ),
            cookies,
        )

    async def listen(self, reuse_port: bool = False) -> None:
        """Bind every DNS listen address, UDP and TCP, and every DNS-over-TLS one. With
        ``reuse_port`` several processes bind the same port (SO_REUSEPORT) and the kernel
        spreads the queries over them."""
        loop = asyncio.get_running_loop()
        cfg = self.settings
        responder, forwarder, limiter = self.responder, self.forwarder, self.limiter
        catch_up = self.catch_up

        def udp() -> UDPProtocol:
            return UDPProtocol(responder, forwarder, limiter, cfg.query_log, catch_up, self.cookies)

        def tcp_protocol() -> TCPProtocol:
            return TCPProtocol(responder, self.tcp_state, forwarder, catch_up)

        for hp in cfg.listen:
            family = _family(hp)
            if cfg.udp_batch and udpbatch.AVAILABLE:
                transport: asyncio.BaseTransport = await udpbatch.create_endpoint(
                    udp(), hp.host, hp.port, family, reuse_port
                )
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    udp,
                    local_addr=(hp.host, hp.port),
                    family=family,
                    reuse_port=reuse_port or None,
                )
            self.transports.append(transport)
            if cfg.udp_receive_buffer:
                _receive_buffer(transport.get_extra_info("socket"), cfg.udp_receive_buffer)
            self.tcp_servers.append(await _stream_server(tcp_protocol, hp, reuse_port))
        cookies = self.cookies
        if cookies is not None:

            def tick() -> None:
                cookies.tick()
                self._ticker = loop.call_later(1.0, tick)

            tick()
        if self.responder.signer is not None:
            self._resign = loop.call_later(RESIGN_EVERY, self.forget_signed)
        if cfg.tls_listen:
            assert cfg.tls is not None  # the config refuses tls_listen without dns.tls
            context = cfg.tls.context(key="dns.tls")
            for hp in cfg.tls_listen:
                # The same protocol as TCP, under asyncio's TLS layer. A handshake gets the idle
                # timeout: a client that never completes one is dropped.
                self.tcp_servers.append(
                    await _stream_server(
                        tcp_protocol, hp, reuse_port, context, cfg.tcp_idle_timeout
                    )
                )

    def sign(self, keys: Sequence[ZoneKey]) -> None:
        """Sign with ``keys`` from now on, and publish them (a KEYS message: the first keys, or
        a step of a rollover). Signatures made still hold when the signing keys are the same.
        The reply cache is emptied: its replies carry the DNSKEY RRset and signatures of
        before, which may name a key no longer published."""
        responder = self.responder
        signer = (
            Signer(
                keys,
                previous=responder.signer,
                max_ttl=self.settings.zone_max_ttl,
                validity=self.settings.signature_validity,
            )
            if keys
            else None
        )
        responder.sign_with(signer, self.settings.dnskey_ttl)
        responder.index.cache.forget()
        if signer is not None and self._resign is None and self.transports:
            loop = asyncio.get_running_loop()
            self._resign = loop.call_later(RESIGN_EVERY, self.forget_signed)

    def forget_signed(self) -> None:
        """Empty the reply cache, hourly while signing: a cached reply keeps the RRSIGs it was
        made with, and a quiet zone (no change empties the cache) would otherwise serve them
        until they expire. The signer makes a signature again after half its validity, so no
        reply is older than that plus an hour."""
        self.responder.index.cache.forget()
        if self.responder.signer is not None:
            loop = asyncio.get_running_loop()
            self._resign = loop.call_later(RESIGN_EVERY, self.forget_signed)

    def stop_answering(self) -> None:
        """Stop at once: close every listener and connection without waiting for anything."""
        self.stop_accepting()
        for transport in self.transports:
            transport.close()
        for conn in list(self.tcp_state.connections):
            if conn.transport is not None:
                conn.transport.abort()

    def stop_accepting(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._resign is not None:
            self._resign.cancel()
        for tcp in self.tcp_servers:
            tcp.close()  # no new TCP connections; open ones keep being answered meanwhile

    async def drain(self) -> None:
        """Let relayed queries finish (bounded), then flush and close every connection."""
        self.stop_accepting()
        forwarder = self.forwarder
        if forwarder is not None and forwarder.tasks:
            await asyncio.wait(set(forwarder.tasks), timeout=forwarder.timeout + 1)
        for transport in self.transports:
            transport.close()
        for conn in list(self.tcp_state.connections):
            if conn.transport is not None:
                conn.transport.close()  # writes what is buffered, then closes
        for tcp in self.tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tcp.wait_closed(), 2)

    def counters(self) -> DnsCounters:
        out = DnsCounters()
        out.add_stats(self.responder.stats)
        out.errors = self.responder.errors
        cache = self.responder.index.cache
        out.reply_cache_bytes, out.reply_cache_evictions = cache.size, cache.evicted
        if self.limiter is not None:
            out.slipped, out.dropped = self.limiter.slipped, self.limiter.dropped
        if self.forwarder is not None:
            out.forwarded, out.failures = self.forwarder.forwarded, self.forwarder.failures
        budget = self.responder.budget
        out.signatures, out.signing_refused = budget.made, budget.refused
        out.signing_left_out = budget.left_out
        return out


async def _stream_server(
    factory: Callable[[], TCPProtocol],
    hp: HostPort,
    reuse_port: bool,
    context: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    if _is_wildcard6(hp.host):
        # asyncio sets IPV6_V6ONLY on the sockets it binds, so TCP on [::] would miss the IPv4
        # clients its UDP socket (bound dual-stack) answers, and the TCP retry of their
        # truncated replies: this socket is bound dual-stack too.
        return await loop.create_server(
            factory,
            sock=_dual_stack_listener(hp.port, reuse_port),
            ssl=context,
            ssl_handshake_timeout=handshake_timeout,
        )
    return await loop.create_server(
        factory,
        hp.host,
        hp.port,
        family=_family(hp),
        reuse_address=True,
        reuse_port=reuse_port or None,
        ssl=context,
        ssl_handshake_timeout=handshake_timeout,
    )


def _receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes of receive buffer: a burst of queries, or a moment when this process
    is not scheduled, then waits in the socket instead of being dropped. SO_RCVBUFFORCE (root or
    CAP_NET_ADMIN) may exceed net.core.rmem_max; SO_RCVBUF is capped by it."""
    try:
        if SO_RCVBUFFORCE is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    log.debug("UDP receive buffer on %s: asked %d bytes, have %d", sock.getsockname(), size, got)


def _family(hp: HostPort) -> int:
    return socket.AF_INET6 if ":" in hp.host else socket.AF_UNSPEC


def _is_wildcard6(host: str) -> bool:
    return ":" in host and host.strip("[]").strip(":0") == ""


def _dual_stack_listener(port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket on [::]:``port`` that accepts IPv4 clients too (as v4-mapped addresses)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
