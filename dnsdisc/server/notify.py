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

import dns.asyncquery
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
                reply = await dns.asyncquery.udp(
                    query, secondary.host, timeout=wait, port=secondary.port
                )
            except (dns.exception.Timeout, OSError, dns.exception.DNSException) as exc:
                log.debug("NOTIFY %s to %s: try %d: %s", zone, secondary, attempt + 1, exc)
                wait *= 2
                continue
            if reply.rcode() == dns.rcode.NOERROR:
                self.acknowledged += 1
                return
            log.warning("NOTIFY %s to %s: %s", zone, secondary, dns.rcode.to_text(reply.rcode()))
            self.failed += 1
            return  # refused or not authoritative: retrying says the same
        self.failed += 1
        log.warning("NOTIFY %s to %s: no answer after %d tries", zone, secondary, TRIES)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._rounds) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
