"""Forwarding of names outside our zones to configured upstream resolvers (``recursors``).

Off by default: without recursors such names get REFUSED. With them, dnsdisc is still no open
resolver: only clients inside ``allow`` (``recursion_allow``: loopback and private ranges by
default) asking for recursion (RD=1) are relayed; the others get REFUSED, as an authoritative
server answers names outside its zones. The query is relayed byte for byte (its id, flags and
EDNS included) over UDP for UDP clients and TCP for TCP clients, and the upstream's reply comes
back unchanged, except that a UDP reply larger than the client's size (512 bytes, or its EDNS
size up to ours) is cut to header and question with TC set: a small spoofed query must not buy a
large reply. Each upstream gets ``timeout`` seconds; when none answers the client gets SERVFAIL.

Our own replies say why to a client that sent EDNS (RFC 8914, see ede.py): REFUSED with
Prohibited, SERVFAIL with No Reachable Authority (every recursor timed out) or Network Error (one
could not be reached at all), and NSID when the query asks for it (see nsid.py). A relayed reply
is the upstream's, with its own options: nothing is added to it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable, Sequence

from dnsdisc.dnsserver import ede, wire
from dnsdisc.dnsserver.settings import DnsSettings
from dnsdisc.netaddr import HostPort, NetRules

log = logging.getLogger(__name__)

_LEN = struct.Struct("!H")


class _OneReply(asyncio.DatagramProtocol):
    """Waits for the datagram that answers our query id; ignores anything else."""

    def __init__(self, qid: bytes, done: asyncio.Future[bytes]) -> None:
        self.qid = qid
        self.done = done

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if len(data) >= 12 and data[:2] == self.qid and data[2] & 0x80 and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class Forwarder:
    def __init__(
        self,
        upstreams: Sequence[HostPort],
        timeout: float = 2.0,
        max_inflight: int = 512,
        allow: NetRules | None = None,
        nsid: bytes | None = None,
    ) -> None:
        self.upstreams = tuple(upstreams)
        self.nsid = nsid  # the NSID option for our own replies (see nsid.py); None: none
        self.allow = allow if allow is not None else DnsSettings().recursion_allow
        self.timeout = timeout
        # Each relayed query holds a socket until answered: a flood of out-of-zone names must
        # not run the process out of file descriptors. Past the cap, SERVFAIL at once.
        self.max_inflight = max_inflight
        self.tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0
        self.failures = 0
        self.refused = 0

    def allowed(self, host: str) -> bool:
        """Whether ``host`` (a v4-mapped address counts as the IPv4 one) may use recursion."""
        if self.allow.allows(host):
            return True
        self.refused += 1
        return False

    def submit(self, query: bytes, tcp: bool, send: Callable[[bytes], None]) -> None:
        """Relay ``query`` in the background and ``send`` the reply when it comes."""
        if len(self.tasks) >= self.max_inflight:
            self.failures += 1
            send(servfail(query, _BUSY, self.nsid))
            return
        task = asyncio.get_running_loop().create_task(self._relay(query, tcp, send))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, query: bytes, tcp: bool, send: Callable[[bytes], None]) -> None:
        send(await self.forward(query, tcp))

    async def forward(self, query: bytes, tcp: bool) -> bytes:
        """The first upstream reply to ``query``, or SERVFAIL when none answers in time."""
        self.forwarded += 1
        why = _TIMED_OUT
        for upstream in self.upstreams:
            try:
                ask = self._tcp if tcp else self._udp
                return await asyncio.wait_for(ask(query, upstream), self.timeout)
            except TimeoutError as exc:
                log.debug("upstream %s failed: %r", upstream, exc)
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s failed: %r", upstream, exc)
                # A refusal or an unreachable network is told apart from silence: the first
                # points at the path or the upstream's process, the second at its load.
                why = _UNREACHABLE
        self.failures += 1
        return servfail(query, why, self.nsid)

    async def _udp(self, query: bytes, upstream: HostPort) -> bytes:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()
        # A fresh socket per query: a random source port, and replies cannot cross queries.
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _OneReply(query[:2], done), remote_addr=(upstream.host, upstream.port)
        )
        try:
            transport.sendto(query)
            return await done
        finally:
            transport.close()

    async def _tcp(self, query: bytes, upstream: HostPort) -> bytes:
        reader, writer = await asyncio.open_connection(upstream.host, upstream.port)
        try:
            writer.write(_LEN.pack(len(query)) + query)
            await writer.drain()
            (length,) = _LEN.unpack(await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()


# Why no upstream answered, as the extended error of our SERVFAIL (see ede.py).
_TIMED_OUT = ede.option(ede.NO_REACHABLE_AUTHORITY, "no recursor answered in time")
_UNREACHABLE = ede.option(ede.NETWORK_ERROR, "a recursor could not be reached")
# Past ``max_inflight``: RFC 8914 has no code for a server too busy to relay, hence Other.
_BUSY = ede.option(ede.OTHER, "too many queries being relayed")


def servfail(query: bytes, why: bytes = b"", nsid: bytes | None = None) -> bytes:
    """SERVFAIL echoing the question of a query that parsed (the responder checked it); with
    EDNS, the extended error ``why`` (an ede option) and ``nsid`` if the query asks."""
    return _error(query, wire.SERVFAIL, why, nsid)


def refused(query: bytes) -> bytes:
    """REFUSED echoing the question: recursion is not offered to this client (Prohibited)."""
    return _error(query, wire.REFUSED, ede.PROHIBITED_OPTION)


def _error(query: bytes, rcode: int, why: bytes = b"", nsid: bytes | None = None) -> bytes:
    q = wire.parse_query(query)
    flags = wire.FLAG_QR | (q.flags & (wire.FLAG_RD | wire.FLAG_CD)) | rcode
    out = wire.header(q.id, flags, 1, 0, 0, 1 if q.edns else 0) + q.question
    if q.edns:
        options = why + nsid if nsid is not None and q.nsid else why
        out += wire.opt_record(wire.EDNS_SIZE, 0, False, options)
    return out


def fit_udp(query: bytes, reply: bytes) -> bytes:
    """``reply`` if it fits the UDP size of ``query``'s client, else its header and question
    with TC set (the client retries over TCP, where the whole reply goes)."""
    if len(reply) <= wire.UDP_LEGACY_SIZE:
        return reply
    q = wire.parse_query(query)
    limit = min(q.udp_size, wire.EDNS_SIZE) if q.edns else wire.UDP_LEGACY_SIZE
    if len(reply) <= limit:
        return reply
    flags = wire.HEADER.unpack_from(reply)[1]
    out = wire.header(q.id, flags | wire.FLAG_TC, 1, 0, 0, 1 if q.edns else 0) + q.question
    if q.edns:
        out += wire.opt_record(wire.EDNS_SIZE)
    return out
