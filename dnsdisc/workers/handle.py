"""``Worker``, the main process's handle on one DNS worker process: its process, its end of the
feed and its fence; what was sent to it, what it acknowledged, who waits for that, and when it
was last heard from. The supervisor decides what to do with a worker; the handle only keeps
count."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from dnsdisc.workers import feed, protocol


@dataclass(eq=False)
class Worker:
    number: int
    process: asyncio.subprocess.Process
    channel: feed.Channel
    fence: feed.Fence | None = None
    acked: int = 0
    sent: int = 0  # the number of the last message sent to it
    # Told to bind the DNS port: from then on it may be answering, and writes wait for it.
    answering: bool = False
    # It has bound the port and reads its feed again: from then on it checks the fence.
    ready: bool = False
    # Since when it has had a message to acknowledge and acknowledged none (monotonic seconds).
    owing_since: float | None = None
    waiters: list[tuple[int, asyncio.Future[Any]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    # When it last said anything (monotonic seconds): the pings make a live worker speak.
    heard: float = field(default_factory=time.monotonic)
    born: float = field(default_factory=time.monotonic)
    killed: bool = False  # killed once; its exit is handled by ``Supervisor._follow``

    def __post_init__(self) -> None:
        self.channel.on_drained = self._publish

    def send(self, data: bytes, seq: int) -> None:
        """``data``: messages up to number ``seq``."""
        if not self.channel.writable:
            return
        if self.owing_since is None:
            self.owing_since = time.monotonic()
        self.sent = seq
        if self.channel.write(data):
            self._publish()

    def _publish(self) -> None:
        """Everything sent is in the worker's socket buffer: let its fence say so."""
        if self.fence is not None:
            self.fence.view[0] = self.sent

    def ping(self, n: int) -> None:
        """Ask for a PONG; not numbered, so a write never waits for it."""
        if self.channel.writable and self.channel.write(feed.frame(protocol.PING, n)):
            self._publish()

    def alive(self, now: float) -> bool:
        """Ready, and heard from within LIVENESS_TIMEOUT: it answers its share of the queries."""
        return self.ready and not self.killed and now - self.heard <= protocol.LIVENESS_TIMEOUT

    async def building(self, fut: asyncio.Future[Any]) -> bool:
        """Wait for ``fut`` (an acknowledgement, LISTENING) from a worker building its index
        from a snapshot: START_TIMEOUT, and as long again each time it acknowledged more of the
        snapshot meanwhile (it acknowledges each SERVICES message). Whether ``fut`` came. A
        million instances take a worker longer than START_TIMEOUT to build; a replacement was
        killed for it before it could finish, again and again, each time the main process
        sending the whole snapshot again."""
        while True:
            mark = self.acked
            try:
                await asyncio.wait_for(asyncio.shield(fut), protocol.START_TIMEOUT)
                return True
            except TimeoutError:
                if self.acked <= mark:
                    return False

    def wait_for(self, seq: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append((seq, fut))
        return fut

    def ack(self, seq: int, reply: Any = None) -> None:
        """Everything up to ``seq`` is applied; wake whoever waited for that."""
        self.acked = max(self.acked, seq)
        # Any acknowledgement shows it is reading; it owes nothing more, or owes from now.
        self.owing_since = None if self.acked >= self.sent else time.monotonic()
        keep = []
        for want, fut in self.waiters:
            if want <= seq:
                if not fut.done():
                    fut.set_result(reply if want == seq else None)
            else:
                keep.append((want, fut))
        self.waiters = keep

    def fail(self) -> None:
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(None)
        self.waiters = []

    def follow(self) -> asyncio.Future[None]:
        """Read the worker's replies as they come; the future ends with the feed."""
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        channel = self.channel

        def stop(exc: Exception | None) -> None:
            channel.watch(None)
            if ended.done():
                return
            if exc is None:
                ended.set_result(None)
            else:
                ended.set_exception(exc)

        def readable() -> None:
            try:
                messages = channel.receive()
                if messages:
                    self.heard = time.monotonic()
                for message in messages:
                    kind, seq = message[0], message[1]
                    if kind == protocol.PONG:
                        continue  # alive is all it says; ACKs say what is applied
                    if kind == protocol.STATS:
                        self.ack(seq, message[2:])
                    elif kind == protocol.LISTENING:
                        self.ready = not message[2]
                        self.ack(seq, message[2])  # "" or why it could not listen
                    else:
                        self.ack(seq, True)
            except Exception as exc:  # a broken or garbled feed: this worker is replaced
                stop(exc)
                return
            if channel.eof:
                stop(None)

        channel.watch(readable)
        return ended

    def close(self) -> None:
        self.channel.close()
        if self.fence is not None:
            self.fence.close()
            self.fence = None
