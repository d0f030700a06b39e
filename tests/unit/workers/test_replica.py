"""A DNS worker's fence, in process, on real sockets: once the main process has put a change in
the worker's feed socket and advanced the fence, the worker answers a query it reads afterwards
from the new state, even though it has not read its feed yet (nothing here lets the event loop
call the feed's reader). Without the fence advanced, the same bytes wait, unapplied: that is what
makes these tests show the fence at work rather than the feed's reader."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
from typing import Any

import dns.message
import dns.rcode
import pytest

from dnsdisc.config import zones
from dnsdisc.config.load import Config
from dnsdisc.dnsserver.face import DnsFace
from dnsdisc.netaddr import HostPort
from dnsdisc.policies.roles import IN
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.server.parts import build_index
from dnsdisc.workers import feed, protocol
from dnsdisc.workers.replica import Follower, Replica
from tests.support.world import texts

NAME = "web.svc.internal."


def services(seq: int, address: str) -> bytes:
    instance = Instance.from_json("web", "web-1", {"address": address, "port": 80})
    view = (instance, instance.weight, instance.priority, IN, None, None)
    return feed.frame(
        protocol.SERVICES, seq, [("web", ServiceSettings.from_json("web", {}), [view])]
    )


async def ask_udp(port: int) -> dns.message.Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(dns.message.make_query(NAME, "A").to_wire(), ("127.0.0.1", port))
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
    return dns.message.from_wire(data)


async def ask_tcp(port: int) -> dns.message.Message:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        query = dns.message.make_query(NAME, "A").to_wire()
        writer.write(len(query).to_bytes(2, "big") + query)
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 2), "big")
        return dns.message.from_wire(await reader.readexactly(length))
    finally:
        writer.close()


class Worker:
    """One worker's DNS face and follower, with the main process's ends of its feed and fence."""

    def __init__(self, udp_batch: bool) -> None:
        config = Config(dns_listen=(HostPort("127.0.0.1", 0),), udp_batch=udp_batch)
        index = build_index(config, zones.ZoneData())
        self.face = DnsFace.create(config.dns_settings(), index)
        self.main_sock, theirs = socket.socketpair()
        main_fence = feed.Fence.create()
        assert main_fence is not None, "memfd_create is available on Linux"
        self.fence = main_fence
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.follower = Follower(
            feed.Channel(theirs),
            feed.Fence(os.dup(main_fence.fd)),  # a second mapping, as in the worker process
            Replica(index),
            self.face,
            self.done,
        )
        self.face.catch_up = self.follower.catch_up

    async def listen(self) -> tuple[int, int]:
        await self.face.listen()
        udp = self.face.transports[0].get_extra_info("sockname")[1]
        tcp = self.face.tcp_servers[0].sockets[0].getsockname()[1]
        return udp, tcp

    def send(self, data: bytes, fence: int | None) -> None:
        self.main_sock.sendall(data)  # in the worker's socket buffer once this returns
        if fence is not None:
            self.fence.view[0] = fence

    def replies(self) -> list[tuple[Any, ...]]:
        channel = feed.Channel(self.main_sock.dup())
        try:
            return channel.receive()
        finally:
            channel.close()

    async def close(self) -> None:
        self.follower.finish()
        await self.face.drain()
        self.follower.channel.close()
        self.main_sock.close()
        self.fence.close()


@pytest.mark.parametrize("udp_batch", [True, False], ids=["batched", "unbatched"])
def test_a_query_read_after_the_fence_is_answered_from_the_change(udp_batch: bool) -> None:
    async def scenario() -> list[Any]:
        worker = Worker(udp_batch)
        udp, tcp = await worker.listen()
        try:
            seen: list[Any] = []
            worker.send(services(1, "10.0.0.1"), fence=None)  # sent, but not fenced yet
            seen.append(dns.rcode.to_text((await ask_udp(udp)).rcode()))
            worker.send(b"", fence=1)
            seen.append(texts(await ask_udp(udp)))
            worker.send(services(2, "10.0.0.2"), fence=2)
            seen.append(texts(await ask_tcp(tcp)))
            seen.append([m[:2] for m in worker.replies()])
            return seen
        finally:
            await worker.close()

    assert asyncio.run(scenario()) == [
        "NXDOMAIN",  # the change waits in the socket: only the fence makes it urgent
        ["10.0.0.1"],
        ["10.0.0.2"],
        [(protocol.ACK, 1), (protocol.ACK, 2)],
    ]


def test_a_feed_it_cannot_apply_stops_the_worker_answering() -> None:
    async def scenario() -> tuple[str, BaseException | None, bool]:
        worker = Worker(udp_batch=True)
        udp, _ = await worker.listen()
        try:
            worker.send(services(1, "10.0.0.1"), fence=1)
            first = texts(await ask_udp(udp))[0]
            worker.send(feed.frame("no-such-kind", 2), fence=2)
            try:
                await ask_udp(udp)
                answered = True
            except TimeoutError:
                answered = False
            await asyncio.sleep(0)
            return first, worker.done.exception(), answered
        finally:
            await worker.close()

    first, error, answered = asyncio.run(scenario())
    assert first == "10.0.0.1"
    assert isinstance(error, ValueError) and "no-such-kind" in str(error)
    assert not answered  # it closed its sockets rather than answer from a view it cannot keep


def test_a_worker_reads_its_feed_again_before_it_says_it_listens() -> None:
    # Once the main process has LISTENING it counts on this worker's fence: had the worker still
    # been paused (reading nothing while it binds), a query then would be answered from before.
    async def scenario() -> tuple[list[bool], list[tuple[Any, ...]], list[str]]:
        worker = Worker(udp_batch=True)
        paused_when_said: list[bool] = []
        write = worker.follower.channel.write

        def spy(data: bytes) -> bool:
            if pickle.loads(data[4:])[0] == protocol.LISTENING:
                paused_when_said.append(worker.follower.paused)
            return write(data)

        worker.follower.channel.write = spy  # type: ignore[method-assign]
        try:
            worker.send(feed.frame(protocol.LISTEN, 1) + services(2, "10.0.0.1"), fence=2)
            worker.follower.start([])
            replies: list[tuple[Any, ...]] = []
            for _ in range(200):
                await asyncio.sleep(0.01)
                replies += worker.replies()
                if len(replies) >= 2:
                    break
            udp = worker.face.transports[0].get_extra_info("sockname")[1]
            return paused_when_said, replies, texts(await ask_udp(udp))
        finally:
            await worker.close()

    paused, replies, answer = asyncio.run(scenario())
    assert paused == [False]
    assert replies == [(protocol.LISTENING, 1, ""), (protocol.ACK, 2)]  # in order, nothing lost
    assert answer == ["10.0.0.1"]


def test_a_worker_told_to_stop_still_catches_up_while_it_drains() -> None:
    # A TERM ends ``serve``, which drains (forwarded queries may take seconds) while the sockets
    # still answer; the main process still counts on the fence meanwhile.
    async def scenario() -> list[str]:
        worker = Worker(udp_batch=True)
        udp, _ = await worker.listen()
        try:
            worker.follower.finish()  # what SIGTERM does
            assert worker.follower.done.done()
            worker.send(services(1, "10.0.0.3"), fence=1)
            return texts(await ask_udp(udp))
        finally:
            await worker.close()

    assert asyncio.run(scenario()) == ["10.0.0.3"]


def heavy(seq: int, name: str, size: int = 300) -> bytes:
    """A SERVICES message with one service of ``size`` instances: milliseconds to apply."""
    views = []
    for n in range(size):
        inst = Instance.from_json(
            name, f"i{n}", {"address": f"10.1.{n // 250}.{n % 250}", "port": 80}
        )
        views.append((inst, inst.weight, inst.priority, IN, None, None))
    return feed.frame(protocol.SERVICES, seq, [(name, ServiceSettings.from_json(name, {}), views)])


def test_queued_work_is_applied_in_slices_with_the_loop_running_between() -> None:
    async def scenario() -> tuple[int, int, int]:
        worker = Worker(udp_batch=True)
        await worker.listen()
        try:
            last = 12  # all in the socket buffer at once (about 17 KB each)
            worker.send(b"".join(heavy(seq, f"s{seq}") for seq in range(1, last + 1)), None)
            worker.follower.pump()
            first = worker.follower.applied
            for _ in range(2000):  # bounded: each turn applies a slice
                if worker.follower.applied == last:
                    break
                await asyncio.sleep(0.001)
            return first, worker.follower.applied, last
        finally:
            await worker.close()

    first, applied, last = asyncio.run(scenario())
    assert 0 < first < last  # one pump did a slice, not all of it (before: all 12)
    assert applied == last  # and the rest followed without any new bytes or fence


def test_a_reload_being_built_does_not_hold_up_answers_from_the_current_index() -> None:
    # A reload sends a new index (INDEX), every service into it, then SWAP. Until SWAP no
    # answer can show what is built, so a query read meanwhile is answered at once from the
    # index in use, not after the whole build (before: the fence made it apply everything).
    async def scenario() -> tuple[list[str], int, list[str]]:
        worker = Worker(udp_batch=True)
        seen: list[int] = []
        follower = worker.follower

        def catch_up() -> None:
            follower.catch_up()
            seen.append(follower.applied)

        worker.face.catch_up = catch_up  # what the transports call before answering
        udp, _ = await worker.listen()
        try:
            worker.send(services(1, "10.0.0.1"), fence=1)
            assert texts(await ask_udp(udp)) == ["10.0.0.1"]
            index = follower.replica.building
            reload = [feed.frame(protocol.INDEX, 2, index.settings, index.static_records)]
            reload += [heavy(seq, f"s{seq}") for seq in range(3, 13)]
            reload.append(services(13, "10.0.0.9"))
            worker.send(b"".join(reload), fence=13)
            before = texts(await ask_udp(udp))
            held = min(seen[1:])  # what the catch-ups applied up to before answering
            worker.send(feed.frame(protocol.SWAP, 14), fence=14)
            after = texts(await ask_udp(udp))
            return before, held, after
        finally:
            await worker.close()

    before, held, after = asyncio.run(scenario())
    assert before == ["10.0.0.1"]
    assert held < 13  # the build was left to the feed's own turns
    assert after == ["10.0.0.9"]  # SWAP fenced: everything before it applied first
