"""A DNS worker process: ``python -m dnsdisc.worker FD``.

It answers DNS on the shared port (SO_REUSEPORT) from its own answer index, which it keeps
current from the change feed on the socket FD (see ``feed``). It owns no store, no HTTP and no
health checks: the main process does, and sends it every service as health hands it out. It
exits when the main process says STOP or goes away (the feed ends).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from dnsdisc import feed, heap, logs
from dnsdisc.config import Config
from dnsdisc.dns.face import DnsFace
from dnsdisc.dns.index import AnswerIndex
from dnsdisc.registry.model import Instance, ServiceSettings

log = logging.getLogger("dnsdisc.worker")

# What the main process sends per instance: (instance, weight, priority, role, load, latency).
MemberView = tuple[Instance, int, int, int, float | None, float | None]


class RemoteMember:
    """An instance as the main process's health view hands it out (the index's ``Live``)."""

    __slots__ = ("instance", "latency_ms", "load", "priority", "role", "tally", "weight")

    def __init__(self, view: MemberView, tally: list[int]) -> None:
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
        self.members: dict[str, dict[str, RemoteMember]] = {}
        # Answers led per instance; they outlive rebuilds, and go when the instance goes.
        self.tallies: dict[str, dict[str, list[int]]] = {}

    def service(
        self, name: str, settings: ServiceSettings | None, views: Sequence[MemberView]
    ) -> None:
        old = self.tallies.get(name, {})
        tallies = {v[0].id: old.get(v[0].id) or [0] for v in views}
        members = [RemoteMember(v, tallies[v[0].id]) for v in views]
        self.building.rebuild(name, settings, members)
        if settings is None:
            self.members.pop(name, None)
            self.tallies.pop(name, None)
        else:
            self.members[name] = {m.instance.id: m for m in members}
            self.tallies[name] = tallies

    def figures(self, name: str, iid: str, load: float | None, latency: float | None) -> None:
        member = self.members.get(name, {}).get(iid)
        if member is not None:
            member.load, member.latency_ms = load, latency

    def answers(self, service: str | None) -> dict[tuple[str, str], int]:
        names = self.tallies if service is None else [service]
        return {
            (name, iid): n[0]
            for name in names
            for iid, n in self.tallies.get(name, {}).items()
            if n[0]
        }


async def serve(fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    first = await feed.read(reader)
    if first is None or first[0] != feed.INIT:
        raise SystemExit("dnsdisc worker: expected the feed to start with INIT")
    _, seq, config, index_settings, records, processes = first
    assert isinstance(config, Config)
    logs.setup(config.log_level, config.log_format)
    index = AnswerIndex(index_settings, records)
    face = DnsFace.create(config, index, processes)
    replica = Replica(index)
    replica.collector_was = heap.pause()
    writer.write(feed.frame(feed.ACK, seq))
    stopping = asyncio.Event()
    # The main process handles ^C for the whole process group and then says STOP; a TERM sent
    # to a worker alone ends it gracefully (the main process starts a new one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    async def follow() -> None:
        while True:
            message = await feed.read(reader)
            if message is None or message[0] == feed.STOP:
                return
            reply = await _apply(message, replica, face)
            writer.write(reply)

    follower = asyncio.ensure_future(follow())
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if follower.done():
            follower.result()  # a broken feed is raised, not ignored
    finally:
        follower.cancel()
        stopper.cancel()
        await face.drain()
        writer.close()


async def _apply(message: tuple[Any, ...], replica: Replica, face: DnsFace) -> bytes:
    kind, seq = message[0], message[1]
    if kind == feed.SERVICES:
        for name, settings, views in message[2]:
            replica.service(name, settings, views)
    elif kind == feed.FIGURES:
        replica.figures(*message[2:6])
    elif kind == feed.INDEX:
        replica.building = AnswerIndex(message[2], message[3])
        if replica.collector_was is None:
            replica.collector_was = heap.pause()
    elif kind == feed.SWAP:
        face.responder.index = replica.building
        _built(replica)
    elif kind == feed.LISTEN:
        _built(replica)
        try:
            await face.listen(reuse_port=True)
        except OSError as exc:
            return feed.frame(feed.LISTENING, seq, f"cannot listen for DNS: {exc}")
        return feed.frame(feed.LISTENING, seq, "")
    elif kind == feed.STATS:
        return feed.frame(feed.STATS, seq, face.counters(), replica.answers(message[2]))
    else:
        raise ValueError(f"unknown feed message {kind!r}")
    return feed.frame(feed.ACK, seq)


def _built(replica: Replica) -> None:
    if replica.collector_was is not None:
        heap.settle(replica.collector_was)
        replica.collector_was = None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[0].isdigit() or args[1] not in ("asyncio", "uvloop"):
        raise SystemExit("usage: python -m dnsdisc.worker FD asyncio|uvloop (started by dnsdisc)")
    fd = int(args[0])
    if args[1] == "uvloop":
        import uvloop

        uvloop.run(serve(fd))
    else:
        asyncio.run(serve(fd))


if __name__ == "__main__":
    main()
