"""A DNS worker process (started as ``python -m dnsdisc.workers``, see ``__main__``).

It answers DNS on the shared port (SO_REUSEPORT) from its own answer index, which it keeps
current from the change feed on the socket FEED_FD and the fence in the memfd FENCE_FD ("-": none;
see ``feed``). It owns no store, no HTTP and no health checks: the main process does, and sends it
every service as health hands it out. It exits when the main process says STOP or goes away (the
feed ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from dnsdisc import heap, logs
from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.settings import DnsSettings
from dnsdisc.dnsserver.view import ServiceView
from dnsdisc.workers import feed, protocol
from dnsdisc.workers.protocol import MemberFrame

log = logging.getLogger("dnsdisc.workers.replica")

# Seconds of queued feed work applied per turn of the event loop when no answer waits on it:
# queries read meanwhile are answered between slices (a reload's thousands of services, a burst
# of registrations), instead of after all of it.
SLICE = 0.005
# Members in one DELTA or SERVICES message from which it is applied as a batch (``heap.batch``):
# a bulk registration's objects live as long as their instances, and with the collector running
# each full collection walks all of them again; with 20,000 instances registered in batches of
# 128, that was about a third of a worker's time applying them. New services come as SERVICES:
# registering 100,000 services of 10, nothing a worker built was frozen, and its full
# collections, every time the heap had grown by a quarter, took it 2.5-3 s at 100,000-700,000
# instances; both workers at once, as their heaps grow alike, each killed for not answering.
BULK_MEMBERS = 64
# What goes into the index being built (see ``Follower._unseen``).
_BUILDING = frozenset((protocol.SERVICES, protocol.DELTA, protocol.FIGURES))


class RemoteMember:
    """An instance as the main process's health view hands it out (a ``MemberView``)."""

    __slots__ = ("instance", "latency_ms", "load", "priority", "role", "tally", "weight")

    def __init__(self, view: MemberFrame, tally: list[int]) -> None:
        self.instance, self.weight, self.priority, self.role, self.load, self.latency_ms = view
        self.tally = tally

    def handed_out(self) -> None:
        self.tally[0] += 1


class Replica:
    """The worker's copy of the DNS view: the index being answered from, the one being built
    (the same object except during a reload), and per-instance answer tallies."""

    def __init__(self, index: AnswerIndex) -> None:
        self.building = index
        # While a whole index is being built (from INIT until LISTEN, from INDEX until SWAP)
        # the cyclic collector is paused: see ``heap``. None when it is not paused by us.
        self.collector_was: bool | None = None
        # Answers led per instance; they outlive rebuilds, and go when the instance goes.
        self.tallies: dict[str, dict[str, list[int]]] = {}

    def service(
        self, name: str, settings: ServiceView | None, views: Sequence[MemberFrame]
    ) -> None:
        """The whole service (SERVICES); only the members that differ are encoded again."""
        tallies = self.tallies.get(name, {})
        members = [RemoteMember(v, tallies.get(v[0].id) or [0]) for v in views]
        self.building.rebuild(name, settings, members)
        if settings is None:
            self.tallies.pop(name, None)
        else:
            self.tallies[name] = {
                iid: m.tally
                for iid, m in self.building.members_of(name).items()
                if isinstance(m, RemoteMember)
            }

    def delta(self, name: str, views: Sequence[MemberFrame], removed: Sequence[str]) -> None:
        """What changed of a service (DELTA): the members named, nothing else."""
        tallies = self.tallies.setdefault(name, {})
        members = [RemoteMember(v, tallies.get(v[0].id) or [0]) for v in views]
        if not self.building.patch(name, members, removed):
            raise ValueError(f"a change to {name!r}, which the index does not hold")
        for member in members:
            tallies[member.instance.id] = member.tally
        for iid in removed:
            tallies.pop(iid, None)

    def figures(self, name: str, iid: str, load: float | None, latency: float | None) -> None:
        member = self.building.members_of(name).get(iid)
        if isinstance(member, RemoteMember):
            member.load, member.latency_ms = load, latency

    def answers(self, service: str | None) -> dict[tuple[str, str], int]:
        names = self.tallies if service is None else [service]
        return {
            (name, iid): n[0]
            for name in names
            for iid, n in self.tallies.get(name, {}).items()
            if n[0]
        }


class Follower:
    """The worker's end of the feed: applies each message as it arrives, and at once, from the
    DNS path, when the fence shows the main process has sent more than was applied (see
    ``feed``)."""

    def __init__(
        self,
        channel: feed.Channel,
        fence: feed.Fence | None,
        replica: Replica,
        face: DnsFace,
        done: asyncio.Future[None],
    ) -> None:
        self.channel = channel
        self.fence = fence.view if fence is not None else None
        self.replica = replica
        self.face = face
        self.done = done
        self.applied = 0
        self.queue: deque[tuple[Any, ...]] = deque()
        # While LISTEN is being carried out (it awaits the bind) nothing after it is applied, so
        # that LISTENING is sent before their ACKs. The main process does not count on the fence
        # until it has LISTENING.
        self.paused = False
        # The feed can no longer be applied: nothing is read from it, nothing is answered.
        self.failed = False
        self.swaps = 0  # SWAP messages queued
        self._more: asyncio.Handle | None = None  # the next slice of queued work, if due

    def start(self, messages: list[tuple[Any, ...]]) -> None:
        self._take(messages)
        self._watch(True)
        self.pump()

    def _watch(self, on: bool) -> None:
        self.channel.watch(self.pump if on and not self.failed and not self.channel.eof else None)

    def catch_up(self) -> None:
        """Called before answering what was just read: a few loads when nothing is new."""
        fence = self.fence
        if fence is not None and fence[0] > self.applied and not self.paused:
            self.pump(fence[0])

    def pump(self, until: int | None = None) -> None:
        """Read what arrived and apply it: up to message ``until`` and what the answers need
        at once (the fence), else for SLICE seconds and the rest in later turns of the loop,
        so that queries are answered in between."""
        if self.failed:
            return
        try:
            self._take(self.channel.receive())
            self._apply_queued(until)
        except Exception as exc:
            self._fail(exc)
            return
        if self.channel.eof and not self.queue and not self.paused:
            self._watch(False)  # the main process is gone: nothing more will come
            self.finish()

    def _take(self, messages: list[tuple[Any, ...]]) -> None:
        """Queue what arrived; a PING is answered at once, ahead of the queue, so a worker busy
        with a large change still shows the supervisor it is alive."""
        for message in messages:
            if message[0] == protocol.PING:
                self.channel.write(feed.frame(protocol.PONG, message[1], self.applied))
            else:
                if message[0] == protocol.SWAP:
                    self.swaps += 1
                self.queue.append(message)

    def _apply_queued(self, until: int | None) -> None:
        queue, replica, face = self.queue, self.replica, self.face
        deadline = time.monotonic() + SLICE
        while queue and not self.paused:
            if (
                self.applied >= until or self._unseen()  # no answer can show the rest yet
                if until is not None
                else time.monotonic() > deadline
            ):
                if self._more is None:  # the rest in a later turn
                    self._more = asyncio.get_running_loop().call_soon(self._go_on)
                return
            message = queue.popleft()
            kind, seq = message[0], message[1]
            if kind == protocol.STOP:
                self.finish()
                return
            if kind == protocol.LISTEN:
                self.paused = True
                self._watch(False)
                listening = asyncio.ensure_future(self._listen(seq))
                listening.add_done_callback(self._listened)
                return
            if kind == protocol.SWAP:
                self.swaps -= 1
            reply = _apply(message, replica, face)
            self.applied = seq
            self.channel.write(reply)

    def _go_on(self) -> None:
        self._more = None
        self.pump()

    def _unseen(self) -> bool:
        """Whether the next message only goes into an index being built beside the one
        answering (a reload), with no SWAP to it queued: no answer can show it yet."""
        return (
            not self.swaps
            and self.replica.building is not self.face.responder.index
            and self.queue[0][0] in _BUILDING
        )

    async def _listen(self, seq: int) -> None:
        _built(self.replica)
        try:
            await self.face.listen(reuse_port=True)
            failure = ""
        except OSError as exc:
            failure = f"cannot listen for DNS: {exc}"
        # Reading resumes before LISTENING goes: once the main process has it, a write may count
        # on this worker's fence, so catch_up must not be paused by then.
        self.paused = False
        self.applied = seq
        self._watch(True)
        self.channel.write(feed.frame(protocol.LISTENING, seq, failure))
        self.pump()

    def _listened(self, task: asyncio.Future[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        # A worker that cannot apply the feed would answer from a view the main process believes
        # replaced: it stops answering at once, and exits with the error (it is replaced).
        self.failed = True
        self._watch(False)
        self.face.stop_answering()
        self.finish(exc)

    def finish(self, exc: BaseException | None = None) -> None:
        """End ``serve``: it drains and exits. Until then the feed is still read and applied, as
        a draining worker answers what it has read, and a write may count on its fence."""
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)


async def serve(fd: int, fence_fd: int | None) -> None:
    loop = asyncio.get_running_loop()
    channel = feed.Channel(socket.socket(fileno=fd))
    messages = channel.wait()
    if not messages or messages[0][0] != protocol.INIT:
        raise SystemExit("dnsdisc worker: expected the feed to start with INIT")
    _, seq, settings, index_settings, records, processes = messages.pop(0)
    assert isinstance(settings, DnsSettings)
    logs.setup(settings.log_level, settings.log_format)
    index = AnswerIndex(index_settings, records)
    face = DnsFace.create(settings, index, processes)
    replica = Replica(index)
    replica.collector_was = heap.pause()
    done: asyncio.Future[None] = loop.create_future()
    follower = Follower(
        channel, feed.Fence(fence_fd) if fence_fd is not None else None, replica, face, done
    )
    face.catch_up = follower.catch_up
    follower.applied = seq
    channel.write(feed.frame(protocol.ACK, seq))
    # The main process handles ^C for the whole process group and then says STOP; a TERM sent
    # to a worker alone ends it gracefully (the main process starts a new one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, follower.finish)
    follower.start(messages)
    try:
        await done  # a broken feed is raised, not ignored
    finally:
        await face.drain()
        channel.close()


def _bulk(members: int) -> contextlib.AbstractContextManager[None]:
    """Around applying ``members`` members: ``heap.batch`` from BULK_MEMBERS on (see there)."""
    return heap.batch() if members >= BULK_MEMBERS else contextlib.nullcontext()


def _apply(message: tuple[Any, ...], replica: Replica, face: DnsFace) -> bytes:
    """Apply one message other than LISTEN and STOP; the reply to send."""
    kind, seq = message[0], message[1]
    if kind == protocol.SERVICES:
        services = message[2]
        with _bulk(sum(len(views) for _, _, views in services)):
            for name, settings, views in services:
                replica.service(name, settings, views)
    elif kind == protocol.DELTA:
        deltas = message[2]
        with _bulk(sum(len(views) + len(removed) for _, views, removed in deltas)):
            for name, views, removed in deltas:
                replica.delta(name, views, removed)
    elif kind == protocol.FIGURES:
        replica.figures(*message[2:6])
    elif kind == protocol.INDEX:
        replica.building = AnswerIndex(message[2], message[3])
        if replica.collector_was is None:
            replica.collector_was = heap.pause()
    elif kind == protocol.ZONE:
        replica.building.restatic(message[2], message[3])
    elif kind == protocol.SERIAL:
        replica.building.set_changes(message[2])  # the index the changes went into
    elif kind == protocol.SWAP:
        face.responder.index = replica.building
        # IXFR differences start from what is answered now (after the swap's DNSKEY too).
        replica.building.start_journal()
        _built(replica)
    elif kind == protocol.STALE:
        face.responder.stale = message[2]
    elif kind == protocol.KEYS:
        face.sign(message[2])
    elif kind == protocol.STATS:
        return feed.frame(protocol.STATS, seq, face.counters(), replica.answers(message[2]))
    else:
        raise ValueError(f"unknown feed message {kind!r}")
    return feed.frame(protocol.ACK, seq)


def _built(replica: Replica) -> None:
    if replica.collector_was is not None:
        heap.settle(replica.collector_was)
        replica.collector_was = None
