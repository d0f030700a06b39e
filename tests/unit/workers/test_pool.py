"""The change feed to DNS workers, seen from the main process: what is sent, in which order, and
what a write waits for. Workers are stand-ins that record the messages sent to them; the real
processes are tested in tests/integration/test_workers.py. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest

from dnsdisc.config.load import Config
from dnsdisc.dnsserver.index import AnswerIndex
from dnsdisc.dnsserver.zone import IndexSettings
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.workers import feed, protocol
from dnsdisc.workers import pool as pool_module
from dnsdisc.workers.handle import Worker
from dnsdisc.workers.pool import WorkerPool


class Recorder:
    """The main process's end of a worker's feed: keeps every message written to it."""

    writable = True

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []
        self.in_kernel = True  # False: as if each write had to be queued in this process

    def write(self, data: bytes) -> bool:
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from("!I", data, pos)
            self.messages.append(pickle.loads(data[pos + 4 : pos + 4 + length]))
            pos += 4 + length
        return self.in_kernel

    def kinds(self) -> list[str]:
        return [m[0] for m in self.messages]


def fake_worker(number: int, fence: bool = False) -> tuple[Worker, Recorder]:
    recorder = Recorder()
    process = SimpleNamespace(pid=0)
    worker = Worker(
        number,
        process,  # type: ignore[arg-type]
        channel=recorder,  # type: ignore[arg-type]
        fence=feed.Fence.create() if fence else None,
    )
    return worker, recorder


def make_pool() -> WorkerPool:
    index = AnswerIndex(IndexSettings(domain=b"\x03svc\x08internal\x00"))
    return WorkerPool(Config().dns_settings(), 2, index, lambda: [], "asyncio")


def follow_nothing(pool: WorkerPool) -> None:
    # _enrol starts a task reading the worker's replies; the stand-ins send none.
    async def idle(worker: Worker) -> None:
        await asyncio.Event().wait()

    pool.supervisor._follow = idle  # type: ignore[method-assign]


SETTINGS = ServiceSettings.from_json("web", {})


def test_services_changed_before_the_word_to_listen_reach_the_workers_first() -> None:
    # Zone-file services are added just before the workers are told to listen; they went
    # after LISTEN, so a worker could answer NXDOMAIN for them for a moment.
    async def scenario() -> list[str]:
        pool = make_pool()
        follow_nothing(pool)
        worker, recorder = fake_worker(0)
        pool.supervisor._enrol([worker])

        async def start() -> None:  # as app.start: a last change, then at once the word
            pool.rebuild("web", SETTINGS, [])
            await pool.listen()

        starting = asyncio.ensure_future(start())
        for _ in range(3):
            await asyncio.sleep(0)
        kinds = recorder.kinds()
        worker.ack(pool.supervisor.seq, "")  # LISTENING, nothing wrong
        await starting
        return kinds

    # (SERIAL: the SOA serial of the state a new worker starts from.)
    assert asyncio.run(scenario()) == [
        protocol.INIT, protocol.SERIAL, protocol.SERVICES, protocol.LISTEN
    ]  # fmt: skip


def test_a_write_does_not_wait_for_numbers_sent_only_to_a_replacement() -> None:
    # A replacement worker's snapshot and LISTEN take numbers the other workers never get;
    # a write settling after them waited for those numbers on every worker and, after 5 s,
    # killed the healthy ones.
    async def scenario() -> bool:
        pool = make_pool()
        follow_nothing(pool)
        old, _ = fake_worker(0)
        pool.supervisor._enrol([old])
        old.answering = True
        pool.rebuild("web", SETTINGS, [])
        pool._flush()
        old.ack(old.sent)  # the old worker applied everything it was sent
        new, _ = fake_worker(1)
        pool.supervisor._enrol([new])  # a replacement: its snapshot is numbered after the change
        await asyncio.wait_for(pool.settle(), 1.0)
        return pool.supervisor.seq > old.sent

    assert asyncio.run(scenario())


def test_a_worker_replaced_while_the_store_loads_waits_for_the_word_to_listen() -> None:
    # Workers start before the store is read; one restarted then bound the port at once and
    # answered from a partial snapshot, then bound it a second time when all were told.
    async def scenario() -> tuple[list[str], list[str]]:
        pool = make_pool()
        follow_nothing(pool)
        first, _ = fake_worker(0)
        pool.supervisor._enrol([first])
        replacement, replacement_rec = fake_worker(1)

        async def spawn(number: int) -> Worker:
            return replacement

        pool.supervisor._spawn = spawn  # type: ignore[method-assign]
        await pool.supervisor._start([1])
        before = replacement_rec.kinds()
        listening = asyncio.ensure_future(pool.listen())
        await asyncio.sleep(0)
        for worker in (first, replacement):
            worker.ack(pool.supervisor.seq, "")
        await listening
        return before, replacement_rec.kinds()

    before, after = asyncio.run(scenario())
    assert protocol.LISTEN not in before
    assert after.count(protocol.LISTEN) == 1


def test_a_write_waits_only_for_the_workers_its_fence_does_not_cover() -> None:
    async def scenario() -> tuple[bool, bool, bool, bool]:
        pool = make_pool()
        follow_nothing(pool)
        covered, _ = fake_worker(0, fence=True)  # ready; its socket took every byte
        queued, queued_rec = fake_worker(1, fence=True)  # ready; its bytes wait in this process
        starting, _ = fake_worker(2, fence=True)  # told to listen, no LISTENING yet
        queued_rec.in_kernel = False
        pool.supervisor._enrol([covered, queued, starting])
        for w in (covered, queued, starting):
            w.answering = True
        covered.ready = queued.ready = True
        pool.rebuild("web", SETTINGS, [])
        settling = asyncio.ensure_future(pool.settle())
        for _ in range(5):
            await asyncio.sleep(0)
        waited_for_both = not settling.done()
        queued.ack(queued.sent)
        await asyncio.sleep(0)
        waited_for_starting = not settling.done()
        starting.ack(starting.sent)
        await asyncio.wait_for(settling, 1.0)
        assert covered.fence is not None and queued.fence is not None
        shown = covered.fence.view[0] == covered.sent and covered.acked == 0
        return waited_for_both, waited_for_starting, shown, queued.fence.view[0] == 0

    assert asyncio.run(scenario()) == (True, True, True, True)


def test_queued_bytes_reach_the_fence_once_they_are_sent() -> None:
    # A snapshot larger than the socket buffer is queued; the fence shows it once it has gone.
    async def scenario() -> tuple[bool, int, int]:
        ours, theirs = socket.socketpair()
        channel = feed.Channel(ours)
        worker = Worker(0, SimpleNamespace(pid=0), channel, feed.Fence.create())  # type: ignore[arg-type]
        big = feed.frame(protocol.SERVICES, 1, [(f"{n:0100d}", None, []) for n in range(50_000)])
        worker.send(big, 1)
        assert worker.fence is not None
        queued = worker.fence.view[0] == 0
        reader = feed.Channel(theirs)
        got: list[tuple[Any, ...]] = []
        while not got:
            await asyncio.sleep(0.001)
            got = reader.receive()
        for _ in range(10):
            await asyncio.sleep(0)
        try:
            return queued, len(got[0][2]), worker.fence.view[0]
        finally:
            worker.close()
            reader.close()

    assert asyncio.run(scenario()) == (True, 50_000, 1)


def test_only_silent_or_stalled_answering_workers_are_overdue() -> None:
    pool = make_pool()
    ready, _ = fake_worker(0)
    starting, _ = fake_worker(1)
    busy, _ = fake_worker(2)
    for w in (ready, starting, busy):
        pool.supervisor.workers[w.number] = w
        w.answering = True
        w.heard = 100.0
    ready.ready = busy.ready = True
    ready.sent = starting.sent = busy.sent = 2
    ready.owing_since = starting.owing_since = busy.owing_since = 100.0
    assert pool.supervisor.overdue(now=102.0) == []
    assert pool.supervisor.answering(102.0) == 2
    # Silent past LIVENESS_TIMEOUT: hung or stopped. A starting worker is judged by its start.
    busy.heard = 102.9  # it answers its pings while it works on change 1
    assert [w for w, _ in pool.supervisor.overdue(now=103.0)] == [ready]
    assert pool.supervisor.answering(103.0) == 1
    # Busy but answering is left alone until it has made no progress for STALL_TIMEOUT.
    busy.heard = 129.9
    assert [w for w, _ in pool.supervisor.overdue(now=130.0)] == [ready]
    busy.ack(1)  # progress: the clock starts again (at 131 s, on this test's clock)
    assert busy.owing_since is not None
    busy.owing_since, busy.heard = 131.0, 135.0
    assert busy not in [w for w, _ in pool.supervisor.overdue(now=135.0)]
    busy.heard = 131.0 + protocol.STALL_TIMEOUT
    assert [w for w, _ in pool.supervisor.overdue(now=busy.heard + 0.1)] == [ready, busy]
    ready.killed = True  # killed once, not again
    assert [w for w, _ in pool.supervisor.overdue(now=busy.heard + 0.1)] == [busy]


def test_a_starting_worker_gets_a_start_s_time_to_confirm(monkeypatch: pytest.MonkeyPatch) -> None:
    # Writes wait for the ACK of a worker told to listen but not yet LISTENING; one still building
    # a large snapshot was killed after CONFIRM_TIMEOUT, again and again. A ready one still is.
    monkeypatch.setattr(protocol, "CONFIRM_TIMEOUT", 0.05)
    monkeypatch.setattr(protocol, "START_TIMEOUT", 2.0)
    monkeypatch.setattr(protocol, "LIVENESS_TIMEOUT", 0.1)
    monkeypatch.setattr(protocol, "PING_INTERVAL", 0.02)

    async def scenario(ready: bool, pinging: bool = False) -> list[int]:
        pool = make_pool()
        follow_nothing(pool)
        killed: list[int] = []
        worker, _ = fake_worker(0)

        async def wait() -> int:
            return 0

        def kill() -> None:
            killed.append(0)
            worker.fail()

        worker.process = SimpleNamespace(pid=0, kill=kill, wait=wait)  # type: ignore[assignment]
        pool.supervisor._enrol([worker])
        worker.answering, worker.ready = True, ready
        pool.rebuild("web", SETTINGS, [])
        settling = asyncio.ensure_future(pool.settle())
        for _ in range(30):  # 0.3 s: well past CONFIRM_TIMEOUT and LIVENESS_TIMEOUT
            if pinging:  # busy with the change, but answering its pings
                worker.heard = time.monotonic()
            await asyncio.sleep(0.01)
        worker.ack(worker.sent)
        await asyncio.wait_for(settling, 3)
        return killed

    assert asyncio.run(scenario(ready=False)) == []
    assert asyncio.run(scenario(ready=True)) == [0]
    # #16 item 1: busy (it answers its pings) is not hung; the write waits for it.
    assert asyncio.run(scenario(ready=True, pinging=True)) == []


def test_a_starting_worker_acknowledging_its_snapshot_is_given_time_past_a_start_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A million instances take a worker longer than START_TIMEOUT to build: a replacement was
    # killed before it could finish, again and again. It acknowledges each SERVICES message;
    # while those come it is waited for, for LISTENING (``_listen``) and for a write's ACK
    # (``_confirm``). One that acknowledges nothing for START_TIMEOUT is still killed.
    monkeypatch.setattr(protocol, "START_TIMEOUT", 0.1)
    monkeypatch.setattr(pool_module, "SNAPSHOT_CHUNK", 1)  # a message a service

    async def scenario(progress: bool, listen: bool) -> list[float]:
        """When the worker was killed (seconds from the start), if it was."""
        index = AnswerIndex(IndexSettings(domain=b"\x03svc\x08internal\x00"))
        services = [(f"s{n}", SETTINGS, []) for n in range(12)]
        pool = WorkerPool(Config().dns_settings(), 2, index, lambda: services, "asyncio")
        follow_nothing(pool)
        killed: list[float] = []
        worker, _ = fake_worker(0)
        started = time.monotonic()

        async def wait() -> int:
            return 0

        def kill() -> None:
            killed.append(time.monotonic() - started)
            worker.fail()

        worker.process = SimpleNamespace(pid=0, kill=kill, wait=wait)  # type: ignore[assignment]
        pool.supervisor._enrol([worker])
        chunks = worker.sent  # the snapshot's messages: INIT, SERVICES..., SERIAL
        worker.acked = 0
        if listen:
            waiting = asyncio.ensure_future(pool.supervisor._listen([worker]))
        else:
            worker.answering = True
            pool.rebuild("web", SETTINGS, [])
            waiting = asyncio.ensure_future(pool.settle())
        for step in range(8):  # 0.4 s, four START_TIMEOUTs, one message acknowledged each 0.05
            await asyncio.sleep(0.05)
            if progress and not waiting.done():
                worker.ack(min(step + 1, chunks - 1))
        if not waiting.done():
            if listen:
                worker.ack(worker.sent, "")  # LISTENING, no failure
            else:
                worker.ack(worker.sent)
        with contextlib.suppress(RuntimeError):  # "did not start"
            await asyncio.wait_for(waiting, 3)
        return killed

    for listen in (True, False):
        assert asyncio.run(scenario(progress=True, listen=listen)) == []
        [killed] = asyncio.run(scenario(progress=False, listen=listen))
        assert 0.1 <= killed < 0.3  # after one START_TIMEOUT without an acknowledgement


def test_a_new_worker_is_sent_dns_settings_and_no_secret() -> None:
    """The whole Config (with the API token and the etcd password) used to be pickled into every
    worker; now INIT carries the DNS face's settings alone."""
    from dnsdisc.dnsserver.settings import DnsSettings
    from dnsdisc.store.settings import EtcdSettings

    config = Config(
        token="api-s3cret",
        etcd=EtcdSettings(username="dnsdisc", password="etcd-s3cret"),
        query_log=True,
    )
    index = AnswerIndex(IndexSettings(domain=b"\x03svc\x08internal\x00"))
    pool = WorkerPool(config.dns_settings(), 1, index, lambda: [], "asyncio")
    state = b"".join(pool.supervisor.number(m) for m in pool._state())
    assert b"s3cret" not in state
    recorder = Recorder()
    recorder.write(state)
    init = recorder.messages[0]
    assert init[0] == protocol.INIT
    settings = init[2]
    assert type(settings) is DnsSettings
    assert settings.query_log is True and settings.listen == config.dns_listen
