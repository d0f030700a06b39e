"""NOTIFY (RFC 1996): telling the secondaries in ``transfer.notify`` that our zones changed, so
they transfer now rather than at their next SOA refresh.

Every zone shares one SOA serial (see ``AnswerIndex.serial``), so a change notifies every zone.
Changes are coalesced: at most one round per ``EVERY`` seconds, each round a NOTIFY per zone per
secondary. A NOTIFY is sent again until the secondary answers it (``TRIES`` times, doubling the
wait), unless a newer round replaces it. Signed with the first ``transfer.tsig_keys`` key when
there is one (a secondary that checks NOTIFY's signature then knows it is ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.tsig

from dnsdisc.dnsserver.settings import TransferSettings
from dnsdisc.netaddr import HostPort

log = logging.getLogger(__name__)

EVERY = 1.0  # s between rounds at most (one NOTIFY per zone per second per secondary)
TRIES = 5
FIRST_WAIT = 1.0  # s for an answer to the first try; doubled on each next one


class Notifier:
    def __init__(self, settings: TransferSettings, zones: Callable[[], Sequence[str]]) -> None:
        self.secondaries = settings.notify
        self.zones = zones  # the apexes as text, asked each round (a reload may change them)
        key = settings.tsig_keys[0] if settings.tsig_keys else None
        self.key = dns.tsig.Key(key.name, key.secret, key.algorithm) if key else None
        self.sent = 0
        self.acknowledged = 0
        self.failed = 0
        self._due = False
        self._task: asyncio.Task[None] | None = None
        self._rounds: set[asyncio.Task[None]] = set()
        self._round: dict[tuple[str, HostPort], asyncio.Task[None]] = {}
        self._said: set[tuple[str, HostPort, int]] = set()

    def changed(self, *_: object) -> None:
        """A zone's content changed: a round goes out within ``EVERY`` s."""
        if not self.secondaries or self._due:
            return
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        while self._due:
            self._due = False
            self._send_round()
            await asyncio.sleep(EVERY)

    def _send_round(self) -> None:
        loop = asyncio.get_running_loop()
        for zone in self.zones():
            for secondary in self.secondaries:
                held = self._round.pop((zone, secondary), None)
                if held is not None:
                    held.cancel()  # a newer round says more than its retries would
                task = loop.create_task(self._notify(zone, secondary))
                self._round[(zone, secondary)] = task
                self._rounds.add(task)
                task.add_done_callback(self._rounds.discard)

    async def _notify(self, zone: str, secondary: HostPort) -> None:
        wait = FIRST_WAIT
        for attempt in range(TRIES):
            query = dns.message.make_query(zone, "SOA")
            query.flags = dns.flags.AA  # RFC 1996 3.7: AA set, RD clear (the opcode after)
            query.set_opcode(dns.opcode.NOTIFY)
            if self.key is not None:
                query.use_tsig(self.key)
            self.sent += 1
            try:
                data = await _exchange(query.to_wire(), secondary, wait)
            except (TimeoutError, OSError) as exc:
                # Refused at once (ICMP: the secondary is restarting) waits as long as a lost
                # datagram does: five tries in a few ms would miss a restart of a second.
                log.debug("NOTIFY %s to %s: try %d: %r", zone, secondary, attempt + 1, exc)
                if not isinstance(exc, TimeoutError):
                    await asyncio.sleep(wait)
                wait *= 2
                continue
            self._answered(zone, secondary, query, data)
            return
        self.failed += 1
        log.warning("NOTIFY %s to %s: no answer after %d tries", zone, secondary, TRIES)

    def _answered(
        self, zone: str, secondary: HostPort, query: dns.message.Message, data: bytes
    ) -> None:
        """Count (and log) the reply to a NOTIFY; no more tries follow, whatever it says. It is
        read before its signature is checked: a secondary that does not serve the zone (the
        catalog zone to a secondary of the members only, say) answers NOTAUTH, NXDOMAIN or
        REFUSED unsigned, which is worth saying as such, not as a bad or missing answer."""
        try:
            reply = dns.message.from_wire(data, keyring=False)  # read, not checked yet
            if self.key is not None and reply.rcode() == dns.rcode.NOERROR:
                dns.message.from_wire(
                    data, keyring={self.key.name: self.key}, request_mac=query.mac
                )
        except dns.exception.DNSException as exc:
            self.failed += 1
            log.warning("NOTIFY %s to %s: a reply we cannot accept: %s", zone, secondary, exc)
            return
        rcode = reply.rcode()
        if rcode == dns.rcode.NOERROR:
            self.acknowledged += 1
            return
        self.failed += 1
        # Each change would say it again (once a second under churn): once per secondary, zone
        # and answer at warning, then at debug.
        said = (zone, secondary, rcode)
        level = logging.DEBUG if said in self._said else logging.WARNING
        self._said.add(said)
        log.log(level, "NOTIFY %s to %s: %s (it does not serve the zone, or not from us)", zone,
                secondary, dns.rcode.to_text(rcode))  # fmt: skip

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Reply(asyncio.DatagramProtocol):
    """The first datagram with the query's ID, on a socket connected to the secondary."""

    def __init__(self, qid: bytes, got: asyncio.Future[bytes]) -> None:
        self.qid = qid
        self.got = got

    def datagram_received(self, data: bytes, addr: object) -> None:
        if data[:2] == self.qid and len(data) >= 12 and data[2] & 0x80 and not self.got.done():
            self.got.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.got.done():
            self.got.set_exception(exc)


async def _exchange(wire: bytes, secondary: HostPort, timeout: float) -> bytes:
    """The reply to ``wire`` sent over UDP to ``secondary``, as bytes: read once before its
    signature is checked (see ``Notifier._answered``). Raises TimeoutError or OSError."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Reply(wire[:2], got), remote_addr=(secondary.host, secondary.port)
    )
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(got, timeout)
    finally:
        transport.close()
