"""The DNS worker processes as the server sees them: ``WorkerPool``, an ``AnswerSink`` that sends
every change to every worker, and the stats RPC that sums the workers' counters.

The main process owns the store, the HTTP API and the health checks; it starts N workers
(``python -m dnsdisc.workers``, see ``replica``) that each bind the DNS port with SO_REUSEPORT and
answer from their own answer index. ``WorkerPool`` stands where the answer index stands in a
single process: the registry's listener calls ``rebuild`` and the pool sends that service, as
health hands it out, to every worker. A write is acknowledged to its client only after ``settle``
(``barrier``). The processes themselves are the supervisor's (``supervisor``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from dnsdisc.dnsserver.dnssec import ZoneKey
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.settings import DnsSettings
from dnsdisc.dnsserver.stats import DnsCounters
from dnsdisc.dnsserver.view import MemberView, ServiceView
from dnsdisc.dnsserver.zone import IndexSettings, StaticRecord
from dnsdisc.workers import protocol
from dnsdisc.workers.barrier import WriteBarrier
from dnsdisc.workers.protocol import Message, member_frames
from dnsdisc.workers.supervisor import Supervisor

# (service, settings, members): every service as health hands it out, for a new worker.
Snapshot = Callable[[], Iterable[tuple[str, ServiceView, Sequence[MemberView]]]]

# Services per feed message: in the snapshot a new worker starts from and in a change's deltas;
# services sent whole in a change (a reload sends every one) go fewer at a time.
SNAPSHOT_CHUNK = 256
CHANGE_CHUNK = 32


class WorkerPool:
    def __init__(
        self,
        settings: DnsSettings,
        count: int,
        index: AnswerIndex,
        snapshot: Snapshot,
        loop_kind: str,
    ) -> None:
        # All of the config a worker gets: no API token, no store credentials.
        self.settings = settings
        self.index = index  # zone data and settings a new worker builds its index from
        self.snapshot = snapshot
        self.supervisor = Supervisor(
            settings.listen + settings.tls_listen, count, loop_kind, self._state, self._flush
        )
        self.barrier = WriteBarrier(self.supervisor)
        # Services changed in this turn of the event loop, not sent yet (see ``rebuild``), and
        # what ``settle`` waits on until they are: whole (members by id), or only the members
        # changed (None: removed) of a service the workers hold.
        self._dirty: dict[str, tuple[ServiceView | None, dict[str, MemberView]]] = {}
        self._patches: dict[str, dict[str, MemberView | None]] = {}
        self._flushed: asyncio.Future[None] | None = None
        self.sent = protocol.SentServices()
        self.changes = 0  # the registry's change index last sent (SERIAL)

    async def spawn(self) -> None:
        await self.supervisor.spawn()

    async def listen(self) -> None:
        await self.supervisor.listen()

    async def stop(self) -> None:
        await self.supervisor.stop()

    def _state(self) -> list[Message]:
        """INIT and every service as health hands it out: all a new worker needs."""
        # Pending changes go to the running workers first, so that the record of what was sent
        # matches the snapshot: a later DELTA then never names a service the new worker lacks.
        self._flush()
        parts: list[Message] = [
            (
                protocol.INIT,
                self.settings,
                self.index.settings,
                self.index.static_records,
                self.supervisor.count,
            )
        ]
        services = [(name, s, member_frames(members)) for name, s, members in self.snapshot()]
        for first in range(0, len(services), SNAPSHOT_CHUNK):
            parts.append((protocol.SERVICES, services[first : first + SNAPSHOT_CHUNK]))
        parts.append((protocol.SERIAL, self.changes))
        return parts

    # -- the answer sink ---------------------------------------------------------------------

    def rebuild(
        self, service: str, settings: ServiceView | None, members: Sequence[MemberView]
    ) -> None:
        """Like ``AnswerIndex.rebuild``, in every worker. Sent at the end of this turn of the
        event loop, in one message with the other services changed in it; a service changed
        several times meanwhile is sent once, as it is last. The writes of one group commit
        complete together, often to the same service, and each would otherwise have every worker
        rebuild that service again."""
        self._pending()
        self._patches.pop(service, None)
        self._dirty[service] = (settings, {m.instance.id: m for m in members})

    def patch(self, service: str, changed: Sequence[MemberView], removed: Sequence[str]) -> bool:
        """Like ``AnswerIndex.patch``, in every worker, sent as ``rebuild`` is; it costs the
        members named. False when the workers were never sent ``service`` (send it whole)."""
        whole = self._dirty.get(service)
        if whole is not None:
            if whole[0] is None:
                return False
            members = whole[1]
            for m in changed:
                members[m.instance.id] = m
            for iid in removed:
                members.pop(iid, None)
            return True
        if not self.sent.holds(service):
            return False
        self._pending()
        patches = self._patches.setdefault(service, {})
        for m in changed:
            patches[m.instance.id] = m
        for iid in removed:
            patches[iid] = None
        return True

    def _pending(self) -> None:
        if self._flushed is None:
            loop = asyncio.get_running_loop()
            self._flushed = loop.create_future()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        patches, self._patches = self._patches, {}
        flushed, self._flushed = self._flushed, None
        try:
            # Recorded as sent even with no worker: a new worker starts from a snapshot at
            # least as new, and a delta's members replace theirs whatever they were.
            whole: list[protocol.ServiceFrame] = []
            deltas: list[protocol.DeltaFrame] = []
            for name, (settings, members) in dirty.items():
                frame, delta = self.sent.diff(name, settings, members.values())
                if frame is not None:
                    whole.append(frame)
                if delta is not None:
                    deltas.append(delta)
            for name, change in patches.items():
                delta = self.sent.patch(name, change)
                if delta is not None:
                    deltas.append(delta)
            if self.supervisor.workers:
                # In chunks: a worker acknowledges each, so one applying a reload's every
                # service is heard from (not taken for hung) and its fence advances meanwhile.
                # Small ones: a worker answers queries between messages (``replica.SLICE``).
                n = CHANGE_CHUNK
                for first in range(0, len(whole), n):
                    self.supervisor.send_all(protocol.SERVICES, whole[first : first + n])
                n = SNAPSHOT_CHUNK
                for first in range(0, len(deltas), n):
                    self.supervisor.send_all(protocol.DELTA, deltas[first : first + n])
        finally:
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    def _broadcast(self, *message: object) -> None:
        self._flush()  # what changed before this message goes before it
        self.supervisor.send_all(*message)

    def set_changes(self, changes: int) -> None:
        """Like ``AnswerIndex.set_changes``, in every worker, after the changes pending."""
        if changes != self.changes:
            self.changes = changes
            self._broadcast(protocol.SERIAL, changes)

    def sign(self, keys: tuple[ZoneKey, ...]) -> None:
        """Like ``DnsFace.sign``, in every worker; a worker started later gets them in INIT."""
        self.settings = replace(self.settings, dnssec_keys=keys)
        self._broadcast(protocol.KEYS, keys)

    def figures(self, service: str, iid: str, load: float | None, latency: float | None) -> None:
        self._broadcast(protocol.FIGURES, service, iid, load, latency)

    def new_index(self, index: AnswerIndex) -> None:
        """A reload: the services that follow go into a new index, answered from at ``swap``."""
        self.index = index
        self._broadcast(protocol.INDEX, index.settings, index.static_records)
        self._broadcast(protocol.SERIAL, self.changes)
        self.sent.forget()  # the new index starts empty

    def restatic(self, settings: IndexSettings, records: Sequence[StaticRecord]) -> None:
        """A reload that changed only zone records: every worker replaces them in place
        (``AnswerIndex.restatic``), keeping the services' names it holds."""
        self.index.restatic(settings, records)
        self._broadcast(protocol.ZONE, settings, tuple(records))

    def swap(self) -> None:
        self._broadcast(protocol.SWAP)

    async def settle(self) -> None:
        """Return once no worker can answer from a view older than every change made so far
        (``barrier``), those still pending in this turn included."""
        await self.barrier.wait(self._flushed)

    # -- the stats RPC -----------------------------------------------------------------------

    async def counters(self, service: str | None) -> tuple[DnsCounters, Counter[tuple[str, str]]]:
        """The DNS counters summed over the workers, and the answers each instance led (of
        ``service``, or of all)."""
        self._broadcast(protocol.STATS, service)
        seq = self.supervisor.seq
        asks = [w.wait_for(seq) for w in self.supervisor.workers.values()]
        total, answers = DnsCounters(), Counter[tuple[str, str]]()
        if not asks:
            return total, answers
        done, _ = await asyncio.wait(asks, timeout=protocol.CONFIRM_TIMEOUT)
        for fut in done:
            reply = fut.result()
            if reply:  # None: that worker went away meanwhile
                counters, led = reply
                total += counters
                answers.update(led)
        return total, answers
