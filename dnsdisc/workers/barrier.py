"""The write barrier: what a registry write waits for before it is acknowledged to its client.

Invariant: once a write is acknowledged, no worker answers from a view older than it. A worker
holds to that when it has applied every change sent to it (its ACKs say so), or when they are all
in its socket buffer and its fence says so: it applies them before answering anything it reads
after that (see ``feed``). A write waits for the ACKs of the workers its fences do not cover, and
a worker that does not send them in time is killed rather than left answering from an old view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from dnsdisc.dnsserver.stats import Histogram
from dnsdisc.workers import protocol
from dnsdisc.workers.handle import Worker
from dnsdisc.workers.supervisor import Supervisor

log = logging.getLogger("dnsdisc.workers.barrier")

# Upper bounds (seconds) of the histogram of confirmation waits.
CONFIRM_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip


def covered(worker: Worker) -> bool:
    """Whether the worker answers nothing from a view older than what it was sent."""
    if worker.acked >= worker.sent:
        return True
    # The fence holds the number of the last message wholly in its socket buffer.
    fence = worker.fence
    return worker.ready and fence is not None and fence.view[0] >= worker.sent


class WriteBarrier:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        # How long writes waited for the workers (their fences, or their confirmation).
        self.confirm = Histogram(CONFIRM_BUCKETS)
        # Writes that waited for a worker's acknowledgement because its fence did not cover them.
        self.ack_waits = 0

    async def wait(self, sending: Awaitable[None] | None = None) -> None:
        """Return once no worker can answer from a view older than every change made so far:
        each has applied them, or holds them in its socket buffer with its fence saying so (it
        applies them before answering anything it reads after this; see ``feed``). ``sending``:
        done once the changes still pending in this turn of the event loop are sent."""
        started = time.perf_counter()
        if sending is not None:
            await asyncio.shield(sending)
        # Each worker was sent every change (or a snapshot holding it), and perhaps more since:
        # wait for what was sent to it, not for the feed's last number, which may belong to a
        # replacement worker's snapshot that the others never get. A worker not yet told to
        # listen answers nobody, and applies all this before it does: no need to wait for it
        # (a replacement building a large snapshot would be killed for being slow).
        answering = [w for w in self.supervisor.workers.values() if w.answering]
        pending = [(w, w.wait_for(w.sent)) for w in answering if not covered(w)]
        if pending:
            self.ack_waits += 1
            await self._confirm(pending)
        if answering:
            self.confirm.observe(time.perf_counter() - started)

    async def _busy(
        self,
        pending: list[tuple[Worker, asyncio.Future[Any]]],
        late: set[asyncio.Future[Any]],
        until: float,
    ) -> set[asyncio.Future[Any]]:
        """Of the late workers, those that still answer their pings are busy with a large change,
        not hung: they get until ``until`` (killing one would only have its replacement build
        everything again). The futures of the workers still late, to be killed."""
        while late:
            now = time.monotonic()
            busy = {f for w, f in pending if f in late and w.alive(now)}
            if not busy or now >= until:
                break
            _, still = await asyncio.wait(busy, timeout=min(protocol.PING_INTERVAL, until - now))
            late = (late - busy) | still
        return late

    async def _confirm(self, pending: list[tuple[Worker, asyncio.Future[Any]]]) -> None:
        """Wait for these acknowledgements; kill the workers that do not send them in time."""
        # A worker that has not said LISTENING yet may still be building its index from a large
        # snapshot (it answers nothing before the change is applied): it gets as long as a start
        # (``Worker.building``). A ready worker still answering pings gets STALL_TIMEOUT more to
        # make progress (``_busy``); one that hangs is found by the liveness watchdog.
        ready = all(w.ready for w, _ in pending)
        if ready:
            _, late = await asyncio.wait([f for _, f in pending], timeout=protocol.CONFIRM_TIMEOUT)
            if late:
                late = await self._busy(pending, late, time.monotonic() + protocol.STALL_TIMEOUT)
        else:
            came = await asyncio.gather(*(w.building(f) for w, f in pending))
            late = {f for (_, f), ok in zip(pending, came, strict=True) if not ok}
        killed = []
        for w, fut in pending:
            if fut in late:
                # A worker that cannot confirm must not answer from an old view: it goes, and
                # the write is acknowledged once it is gone (its socket closes with it).
                self.supervisor.kill(w, f"did not confirm change {w.sent} in time")
                killed.append(w.process.wait())
        if killed:
            try:
                await asyncio.wait_for(asyncio.gather(*killed), 30)
            except TimeoutError:  # SIGKILLed but not gone: the kernel is slow; it answers nobody
                log.error("a killed DNS worker has not exited after 30 s")
