"""The DNS worker processes' lifecycle, seen from the main process (like uvicorn's supervisors):
start them, tell them to bind the DNS port, replace one that dies or hangs, stop them all. Each
is held by a ``handle.Worker``.

The supervisor also numbers the feed: every message to any worker takes the next number, and a
worker's acknowledgements say how far it has applied. What is sent, and when, is the pool's
(``pool``); what a write waits for is the barrier's (``barrier``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dnsdisc.netaddr import HostPort
from dnsdisc.workers import feed, protocol
from dnsdisc.workers.handle import Worker
from dnsdisc.workers.ports import check_free
from dnsdisc.workers.protocol import Message

log = logging.getLogger("dnsdisc.workers.supervisor")

# How often the watchdog looks for a worker that has stopped answering (seconds).
WATCH_INTERVAL = 0.5
# A replacement is started this long after its predecessor exits; the delay doubles, up to
# RESTART_MAX_DELAY, for each start that fails (no descriptors, no memory) and for each worker
# that dies within STABLE seconds of starting, so a worker that keeps dying is not a busy loop.
RESTART_DELAY = 0.2
RESTART_MAX_DELAY = 10.0
STABLE = 10.0


def worker_environment() -> dict[str, str]:
    """This process's environment without dnsdisc's own variables: a worker is told what it
    needs over its feed, and must not hold the API token (DNSDISC_TOKEN) or any other secret
    an operator passed this way."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DNSDISC_")}


class Supervisor:
    def __init__(
        self,
        addresses: Sequence[HostPort],
        count: int,
        loop_kind: str,
        start_state: Callable[[], Iterable[Message]],
        flush: Callable[[], None],
    ) -> None:
        self.addresses = addresses  # where the workers answer DNS
        self.count = count
        self.loop_kind = loop_kind
        # What a new worker starts from: messages ``(kind, *fields)``, numbered here.
        self.start_state = start_state
        # Sends the changes still pending in this turn, which must go before the word to listen.
        self.flush = flush
        self.workers: dict[int, Worker] = {}
        self.seq = 0
        self.stopping = False
        self.restarts = 0
        self.spawn_failures = 0  # starts that failed (and were retried)
        self._streak: dict[int, int] = {}  # per worker number: failed or short-lived starts
        self._pings = 0
        self._restart_tasks: set[asyncio.Task[None]] = set()
        # Set once the workers started with the server have been told to listen: a worker
        # restarted before that (while the store loads) must wait for the same word.
        self.listening = False
        self._watcher: asyncio.Task[None] | None = None

    # -- the feed ----------------------------------------------------------------------------

    def number(self, message: Message) -> bytes:
        """``message`` (kind, *fields) framed with the next number, which becomes ``seq``."""
        seq = self.seq + 1
        data = feed.frame(message[0], seq, *message[1:])
        self.seq = seq  # numbered once it can be sent: a settle waits for what was sent
        return data

    def send_all(self, *message: Any) -> None:
        """Send ``message`` (kind, *fields) to every worker, numbered."""
        data = self.number(message)
        seq = self.seq
        for w in self.workers.values():
            w.send(data, seq)

    # -- lifecycle ---------------------------------------------------------------------------

    async def spawn(self) -> None:
        """Start the workers, before the registry loads: they build their indexes from the
        feed while this process is still reading the store. ``listen`` then binds the port."""
        await check_free(self.addresses)
        self._enrol(await asyncio.gather(*(self._spawn(n) for n in range(self.count))))

    async def listen(self) -> None:
        """Have every worker bind the DNS port, once it has applied everything sent so far."""
        self.listening = True
        await self._listen(list(self.workers.values()))
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _start(self, numbers: Iterable[int]) -> None:
        spawned = await asyncio.gather(*(self._spawn(n) for n in numbers))
        self._enrol(spawned)
        if self.listening:  # else ``listen`` will tell it, with the others
            await self._listen(spawned)

    def _enrol(self, spawned: Sequence[Worker]) -> None:
        # No await in here: the snapshot the workers start from and the changes broadcast
        # after it form one ordered feed, nothing in between. It is encoded once for all.
        state = b"".join(self.number(message) for message in self.start_state())
        for worker in spawned:
            worker.send(state, self.seq)
            self.workers[worker.number] = worker
            worker.task = asyncio.ensure_future(self._follow(worker))

    async def _listen(self, workers: Sequence[Worker]) -> None:
        self.flush()  # the services changed in this turn go before the word to listen
        listen = self.number((protocol.LISTEN,))
        seq = self.seq
        waits = []
        for worker in workers:
            waits.append(worker.wait_for(seq))
            worker.send(listen, seq)
            worker.answering = True
        for worker, listening in zip(workers, waits, strict=True):
            if not await worker.building(listening):
                self.kill(worker, "did not start in time")
                raise RuntimeError(f"DNS worker {worker.number} did not start") from None
            failure = listening.result()
            if failure is None:
                raise RuntimeError(
                    f"DNS worker {worker.number} exited while starting (see the log above)"
                )
            if failure:
                self.kill(worker, "could not listen")
                raise OSError(failure)
            log.debug("DNS worker %d (pid %d) is answering", worker.number, worker.process.pid)

    async def _spawn(self, number: int) -> Worker:
        ours, theirs = socket.socketpair()
        fence = None
        try:
            fence = feed.Fence.create()
            fds = (theirs.fileno(),) if fence is None else (theirs.fileno(), fence.fd)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dnsdisc.workers",
                str(theirs.fileno()),
                "-" if fence is None else str(fence.fd),
                self.loop_kind,
                str(number),
                pass_fds=fds,
                stdin=asyncio.subprocess.DEVNULL,
                env=worker_environment(),
            )
        except BaseException:
            ours.close()
            if fence is not None:
                fence.close()
            raise
        finally:
            theirs.close()
        return Worker(number, process, feed.Channel(ours), fence)

    async def _follow(self, worker: Worker) -> None:
        """Read the worker's replies until it goes away; then replace it."""
        try:
            await worker.follow()
        except Exception as exc:
            # While stopping, a worker that exits first breaks the feed under a late write.
            report = log.debug if self.stopping else log.error
            report("DNS worker %d: broken feed: %s", worker.number, exc)
        finally:
            worker.fail()
            self.workers.pop(worker.number, None)
            worker.close()
            code = await worker.process.wait()
            if not self.stopping:
                number = worker.number
                short = time.monotonic() - worker.born < STABLE
                self._streak[number] = self._streak.get(number, 0) + 1 if short else 0
                delay = self._delay(number)
                log.error(
                    "DNS worker %d (pid %d) exited with status %s; starting a new one in %g s",
                    number,
                    worker.process.pid,
                    code,
                    delay,
                )
                task = asyncio.ensure_future(self._restart(number, delay))
                self._restart_tasks.add(task)
                task.add_done_callback(self._restart_tasks.discard)

    def _delay(self, number: int) -> float:
        return min(RESTART_MAX_DELAY, RESTART_DELAY * 2.0 ** min(self._streak.get(number, 0), 16))

    async def _restart(self, number: int, delay: float) -> None:
        """Start worker ``number`` again, retrying a start that fails for ever: a server whose
        workers could not start while its descriptors were exhausted must recover once they are
        free again, not stay dark."""
        while True:
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                worker = await self._spawn(number)
            except Exception as exc:
                self.spawn_failures += 1
                self._streak[number] = self._streak.get(number, 0) + 1
                delay = self._delay(number)
                log.error("could not start DNS worker %d: %s; retrying in %g s", number, exc, delay)
                continue
            break
        self._enrol([worker])
        self.restarts += 1
        if self.listening:  # else ``listen`` will tell it, with the others
            try:
                await self._listen([worker])
            except Exception as exc:  # it is killed; its exit starts the next attempt
                log.error("could not start DNS worker %d: %s", number, exc)

    def kill(self, worker: Worker, why: str) -> None:
        """Its socket closes with it, so it answers nobody; ``_follow`` then replaces it."""
        log.error("DNS worker %d (pid %d) %s; killing it", worker.number, worker.process.pid, why)
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()

    async def stop(self) -> None:
        """Tell every worker to drain and exit; kill those that do not in time."""
        self.stopping = True
        for task in list(self._restart_tasks):
            task.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        workers = list(self.workers.values())
        stop = self.number((protocol.STOP,))
        for w in workers:
            w.send(stop, self.seq)
        for w in workers:
            try:
                await asyncio.wait_for(w.process.wait(), protocol.CONFIRM_TIMEOUT)
            except TimeoutError:
                self.kill(w, "did not stop in time")
                await w.process.wait()
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=protocol.CONFIRM_TIMEOUT)

    # -- the watchdog ------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Ping every worker each PING_INTERVAL; kill a ready one that is hung or stopped (it
        says nothing for LIVENESS_TIMEOUT) or that answers but makes no progress (``overdue``).
        Writes covered by the fence do not wait for acknowledgements, and a stopped worker owes
        none while nothing is written, so the pings are what find it; it answers nothing stale
        meanwhile (it would catch up first), but its share of the queries goes unanswered."""
        last = time.monotonic()
        next_ping = last
        while True:
            now = time.monotonic()
            if now >= next_ping:
                self._pings += 1
                for w in list(self.workers.values()):
                    w.ping(self._pings)
                next_ping = now + protocol.PING_INTERVAL
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            stalled, last = now - last > 2 * WATCH_INTERVAL, now
            if stalled:
                # This process was busy (a reload, a large snapshot): replies may be waiting
                # unread (uvloop runs timers before it polls), and no pings went out meanwhile,
                # so silence so far proves nothing: every worker's clock starts again.
                for w in self.workers.values():
                    w.heard = max(w.heard, now)
                continue
            for w, why in self.overdue(now):
                self.kill(w, why)

    def overdue(self, now: float) -> list[tuple[Worker, str]]:
        """The answering workers to kill, and why: silent for LIVENESS_TIMEOUT (hung, stopped),
        or answering pings while owing an acknowledgement with no progress for STALL_TIMEOUT. A
        worker busy with a large change keeps answering pings between its chunks of work and
        its acknowledgements keep coming: it is left alone."""
        found = []
        for w in self.workers.values():
            if not w.ready or w.killed:
                continue  # a starting worker is judged by its start (START_TIMEOUT)
            if now - w.heard > protocol.LIVENESS_TIMEOUT:
                found.append((w, f"has not answered for {now - w.heard:.1f} s"))
            elif w.owing_since is not None and now - w.owing_since > protocol.STALL_TIMEOUT:
                found.append((w, f"made no progress on change {w.acked + 1} for "
                                 f"{protocol.STALL_TIMEOUT:g} s"))  # fmt: skip
        return found

    def answering(self, now: float) -> int:
        """How many workers answer DNS now (ready, and not silent)."""
        return sum(1 for w in self.workers.values() if w.alive(now))
