"""The DNS worker processes, seen from the main process.

The main process owns the store, the HTTP API and the health checks; it starts N workers
(``dnsdisc.workers.replica``) that each bind the DNS port with SO_REUSEPORT and answer from their
own answer index. ``WorkerPool`` stands where the answer index stands in a single process: the
registry's listener calls ``rebuild`` and the pool sends that service, as health hands it out,
to every worker. A write is acknowledged to its client only after ``settle``: every worker has
applied every change sent so far, or has it in its socket buffer and will apply it before
answering (the fence, see ``feed``), so no worker answers from a view older than the last
acknowledged write. A worker that does not confirm in time is killed (its socket closes with
it, so it answers nobody) and replaced from a full snapshot; so is one that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.settings import DnsSettings
from dnsdisc.dnsserver.stats import DnsCounters, Histogram
from dnsdisc.dnsserver.view import MemberView
from dnsdisc.netaddr import HostPort
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.workers import feed

log = logging.getLogger("dnsdisc.workers.pool")

# (service, settings, members): every service as health hands it out, for a new worker.
Snapshot = Callable[[], Iterable[tuple[str, ServiceSettings, Sequence[MemberView]]]]

# How long a worker may take to confirm a change, to start, or to send its counters.
CONFIRM_TIMEOUT = 5.0
START_TIMEOUT = 30.0
# How often to look for a worker that has stopped acknowledging its feed.
WATCH_INTERVAL = 1.0
# Upper bounds (seconds) of the histogram of confirmation waits.
CONFIRM_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip
# A worker that keeps dying is restarted at most this often.
RESTART_DELAY = 1.0
# Services per feed message in the snapshot a new worker starts from.
SNAPSHOT_CHUNK = 256


def _views(members: Sequence[MemberView]) -> list[tuple[Any, ...]]:
    return [(m.instance, m.weight, m.priority, m.role, m.load, m.latency_ms) for m in members]


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

    def covered(self) -> bool:
        """Whether the worker answers nothing from a view older than what it was sent."""
        if self.acked >= self.sent:
            return True
        # The fence holds the number of the last message wholly in its socket buffer.
        return self.ready and self.fence is not None and self.fence.view[0] >= self.sent

    def wait_for(self, seq: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append((seq, fut))
        return fut

    def settle(self, seq: int, reply: Any = None) -> None:
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
                for message in channel.receive():
                    kind, seq = message[0], message[1]
                    if kind == feed.STATS:
                        self.settle(seq, message[2:])
                    elif kind == feed.LISTENING:
                        self.ready = not message[2]
                        self.settle(seq, message[2])  # "" or why it could not listen
                    else:
                        self.settle(seq, True)
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
        self.count = count
        self.index = index  # zone data and settings a new worker builds its index from
        self.snapshot = snapshot
        self.loop_kind = loop_kind
        self.workers: dict[int, Worker] = {}
        self.seq = 0
        self.stopping = False
        self.restarts = 0
        # How long writes waited for the workers (their fences, or their confirmation).
        self.confirm = Histogram(CONFIRM_BUCKETS)
        # Writes that waited for a worker's acknowledgement because its fence did not cover them.
        self.ack_waits = 0
        self._restart_tasks: set[asyncio.Task[None]] = set()
        # Services changed in this turn of the event loop, not sent yet (see ``rebuild``), and
        # what ``settle`` waits on until they are.
        self._dirty: dict[str, tuple[ServiceSettings | None, Sequence[MemberView]]] = {}
        self._flushed: asyncio.Future[None] | None = None
        # Set once the workers started with the server have been told to listen: a worker
        # restarted before that (while the store loads) must wait for the same word.
        self.listening = False
        self._watcher: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def spawn(self) -> None:
        """Start the workers, before the registry loads: they build their indexes from the
        feed while this process is still reading the store. ``listen`` then binds the port."""
        await _check_free(self.settings.listen)
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
        state = self._state()
        for worker in spawned:
            worker.send(state, self.seq)
            self.workers[worker.number] = worker
            worker.task = asyncio.ensure_future(self._follow(worker))

    async def _listen(self, workers: Sequence[Worker]) -> None:
        self._flush()  # the services changed in this turn go before the word to listen
        seq = self.seq = self.seq + 1
        listen = feed.frame(feed.LISTEN, seq)
        waits = []
        for worker in workers:
            waits.append(worker.wait_for(seq))
            worker.send(listen, seq)
            worker.answering = True
        for worker, listening in zip(workers, waits, strict=True):
            try:
                await asyncio.wait_for(asyncio.shield(listening), START_TIMEOUT)
            except TimeoutError:
                self._kill(worker, "did not start in time")
                raise RuntimeError(f"DNS worker {worker.number} did not start") from None
            failure = listening.result()
            if failure is None:
                raise RuntimeError(
                    f"DNS worker {worker.number} exited while starting (see the log above)"
                )
            if failure:
                self._kill(worker, "could not listen")
                raise OSError(failure)
            log.debug("DNS worker %d (pid %d) is answering", worker.number, worker.process.pid)

    def _state(self) -> bytes:
        """INIT and every service as health hands it out: all a new worker needs."""
        self.seq += 1
        parts = [
            feed.frame(
                feed.INIT,
                self.seq,
                self.settings,
                self.index.settings,
                self.index.static_records,
                self.count,
            )
        ]
        services = [(name, s, _views(members)) for name, s, members in self.snapshot()]
        for first in range(0, len(services), SNAPSHOT_CHUNK):
            self.seq += 1
            chunk = services[first : first + SNAPSHOT_CHUNK]
            parts.append(feed.frame(feed.SERVICES, self.seq, chunk))
        return b"".join(parts)

    async def _spawn(self, number: int) -> Worker:
        ours, theirs = socket.socketpair()
        fence = None
        try:
            fence = feed.Fence.create()
            fds = (theirs.fileno(),) if fence is None else (theirs.fileno(), fence.fd)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dnsdisc.workers.replica",
                str(theirs.fileno()),
                "-" if fence is None else str(fence.fd),
                self.loop_kind,
                pass_fds=fds,
                stdin=asyncio.subprocess.DEVNULL,
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
                log.error(
                    "DNS worker %d (pid %d) exited with status %s; starting a new one",
                    worker.number,
                    worker.process.pid,
                    code,
                )
                task = asyncio.ensure_future(self._restart(worker.number))
                self._restart_tasks.add(task)
                task.add_done_callback(self._restart_tasks.discard)

    async def _restart(self, number: int) -> None:
        await asyncio.sleep(RESTART_DELAY)
        if self.stopping:
            return
        try:
            await self._start([number])
            self.restarts += 1
        except Exception as exc:  # retried when this one, too, goes away
            log.error("could not start DNS worker %d: %s", number, exc)

    def _kill(self, worker: Worker, why: str) -> None:
        log.error("DNS worker %d (pid %d) %s; killing it", worker.number, worker.process.pid, why)
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
        self.seq += 1
        for w in workers:
            w.send(feed.frame(feed.STOP, self.seq), self.seq)
        for w in workers:
            try:
                await asyncio.wait_for(w.process.wait(), CONFIRM_TIMEOUT)
            except TimeoutError:
                self._kill(w, "did not stop in time")
                await w.process.wait()
        tasks = [w.task for w in workers if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CONFIRM_TIMEOUT)

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers.values()]

    # -- the feed ----------------------------------------------------------------------------

    def _broadcast(self, *message: Any) -> None:
        self._flush()  # what changed before this message goes before it
        self._send_all(*message)

    def _send_all(self, *message: Any) -> None:
        seq = self.seq + 1
        data = feed.frame(message[0], seq, *message[1:])
        self.seq = seq  # numbered once it can be sent: a settle waits for what was sent
        for w in self.workers.values():
            w.send(data, seq)

    def rebuild(
        self, service: str, settings: ServiceSettings | None, members: Sequence[MemberView]
    ) -> None:
        """Like ``AnswerIndex.rebuild``, in every worker. Sent at the end of this turn of the
        event loop, in one message with the other services changed in it; a service changed
        several times meanwhile is sent once, as it is last. The writes of one group commit
        complete together, often to the same service, and each would otherwise have every worker
        rebuild that service again."""
        if self._flushed is None:
            loop = asyncio.get_running_loop()
            self._flushed = loop.create_future()
            loop.call_soon(self._flush)
        self._dirty[service] = (settings, members)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        flushed, self._flushed = self._flushed, None
        try:
            if dirty and self.workers:  # else new workers start from a snapshot
                changed = [(name, s, _views(members)) for name, (s, members) in dirty.items()]
                self._send_all(feed.SERVICES, changed)
        finally:
            if flushed is not None and not flushed.done():
                flushed.set_result(None)

    def figures(self, service: str, iid: str, load: float | None, latency: float | None) -> None:
        self._broadcast(feed.FIGURES, service, iid, load, latency)

    def new_index(self, index: AnswerIndex) -> None:
        """A reload: the services that follow go into a new index, answered from at ``swap``."""
        self.index = index
        self._broadcast(feed.INDEX, index.settings, index.static_records)

    def swap(self) -> None:
        self._broadcast(feed.SWAP)

    async def settle(self) -> None:
        """Return once no worker can answer from a view older than every change made so far:
        each has applied them, or holds them in its socket buffer with its fence saying so (it
        applies them before answering anything it reads after this; see ``feed``)."""
        started = time.perf_counter()
        if self._flushed is not None:
            await asyncio.shield(self._flushed)  # sent at the end of this turn
        # Each worker was sent every change (or a snapshot holding it), and perhaps more since:
        # wait for what was sent to it, not for the pool's last number, which may belong to a
        # replacement worker's snapshot that the others never get. A worker not yet told to
        # listen answers nobody, and applies all this before it does: no need to wait for it
        # (a replacement building a large snapshot would be killed for being slow).
        answering = [w for w in self.workers.values() if w.answering]
        pending = [(w, w.wait_for(w.sent)) for w in answering if not w.covered()]
        if pending:
            self.ack_waits += 1
            await self._confirm(pending)
        if answering:
            self.confirm.observe(time.perf_counter() - started)

    async def _confirm(self, pending: list[tuple[Worker, asyncio.Future[Any]]]) -> None:
        """Wait for these acknowledgements; kill the workers that do not send them in time."""
        # A worker that has not said LISTENING yet may still be building its index from a large
        # snapshot (it answers nothing before the change is applied): it gets as long as a start.
        # A ready worker that hangs is also found by ``_watch`` after CONFIRM_TIMEOUT.
        timeout = CONFIRM_TIMEOUT if all(w.ready for w, _ in pending) else START_TIMEOUT
        _, late = await asyncio.wait([f for _, f in pending], timeout=timeout)
        killed = []
        for w, fut in pending:
            if fut in late:
                # A worker that cannot confirm must not answer from an old view: it goes, and
                # the write is acknowledged once it is gone (its socket closes with it).
                self._kill(w, f"did not confirm change {w.sent} in {timeout:g} s")
                killed.append(w.process.wait())
        if killed:
            try:
                await asyncio.wait_for(asyncio.gather(*killed), 30)
            except TimeoutError:  # SIGKILLed but not gone: the kernel is slow; it answers nobody
                log.error("a killed DNS worker has not exited after 30 s")

    async def _watch(self) -> None:
        """Kill a worker that has owed an acknowledgement for CONFIRM_TIMEOUT. Writes covered by
        the fence do not wait for acknowledgements, so a worker that stopped reading its feed
        (hung, or stopped) is found here; it answers nothing stale meanwhile, since it would catch
        up before answering, but its share of the queries goes unanswered until it is gone."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            stalled, last = now - last > 2 * WATCH_INTERVAL, now
            if stalled:
                # This process was busy (a reload, a large snapshot): acknowledgements may be
                # waiting unread (uvloop runs timers before it polls), so judge on the next round.
                continue
            for w in self.overdue(now):
                w.owing_since = None  # killed once; its exit is handled by ``_follow``
                self._kill(w, f"did not confirm change {w.acked + 1} in {CONFIRM_TIMEOUT:g} s")

    def overdue(self, now: float) -> list[Worker]:
        """The answering workers that have owed an acknowledgement for over CONFIRM_TIMEOUT."""
        return [
            w
            for w in self.workers.values()
            if w.ready and w.owing_since is not None and now - w.owing_since > CONFIRM_TIMEOUT
        ]

    async def counters(self, service: str | None) -> tuple[DnsCounters, Counter[tuple[str, str]]]:
        """The DNS counters summed over the workers, and the answers each instance led (of
        ``service``, or of all)."""
        self._broadcast(feed.STATS, service)
        seq = self.seq
        asks = [w.wait_for(seq) for w in self.workers.values()]
        total, answers = DnsCounters(), Counter[tuple[str, str]]()
        if not asks:
            return total, answers
        done, _ = await asyncio.wait(asks, timeout=CONFIRM_TIMEOUT)
        for fut in done:
            reply = fut.result()
            if reply:  # None: that worker went away meanwhile
                counters, led = reply
                total += counters
                answers.update(led)
        return total, answers


async def _check_free(listen: Sequence[HostPort], patience: float = 3.0) -> None:
    """Fail if another server holds a DNS port. The workers bind with SO_REUSEPORT, which would
    let them share a port with another dnsdisc of the same user, silently splitting its queries;
    a plain bind first makes that an error. Workers of a server that was just killed may hold the
    port for a moment while they notice, so a refusal is retried for ``patience`` seconds."""
    deadline = asyncio.get_running_loop().time() + patience
    for hp in listen:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            while True:
                try:
                    _probe(hp, kind)
                    break
                except OSError:
                    if asyncio.get_running_loop().time() >= deadline:
                        raise
                    await asyncio.sleep(0.1)


def _probe(hp: HostPort, kind: int) -> None:
    family = socket.AF_INET6 if ":" in hp.host else socket.AF_INET
    for info in socket.getaddrinfo(hp.host, hp.port, family, kind):
        with socket.socket(info[0], kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
