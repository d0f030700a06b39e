"""The change feed to DNS workers, seen from the main process: what is sent, in which order, and
what a write waits for. Workers are stand-ins that record the messages sent to them; the real
processes are tested in tests/integration/test_workers.py. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import pickle
import struct
from types import SimpleNamespace
from typing import Any

from dnsdisc import feed
from dnsdisc.config import Config
from dnsdisc.dns.index import AnswerIndex, IndexSettings
from dnsdisc.registry.model import ServiceSettings
from dnsdisc.workers import Worker, WorkerPool


class Recorder:
    """The main process's end of a worker's feed: keeps every message written to it."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from("!I", data, pos)
            self.messages.append(pickle.loads(data[pos + 4 : pos + 4 + length]))
            pos += 4 + length

    def kinds(self) -> list[str]:
        return [m[0] for m in self.messages]


def fake_worker(number: int) -> tuple[Worker, Recorder]:
    recorder = Recorder()
    process = SimpleNamespace(pid=0)
    worker = Worker(number, process, reader=None, writer=recorder)  # type: ignore[arg-type]
    return worker, recorder


def make_pool() -> WorkerPool:
    index = AnswerIndex(IndexSettings(domain=b"\x03svc\x08internal\x00"))
    return WorkerPool(Config(), 2, index, lambda: [], "asyncio")


def follow_nothing(pool: WorkerPool) -> None:
    # _enrol starts a task reading the worker's replies; the stand-ins send none.
    async def idle(worker: Worker) -> None:
        await asyncio.Event().wait()

    pool._follow = idle  # type: ignore[method-assign]


SETTINGS = ServiceSettings.from_json("web", {})


def test_services_changed_before_the_word_to_listen_reach_the_workers_first() -> None:
    # Zone-file services are added just before the workers are told to listen; they went
    # after LISTEN, so a worker could answer NXDOMAIN for them for a moment.
    async def scenario() -> list[str]:
        pool = make_pool()
        follow_nothing(pool)
        worker, recorder = fake_worker(0)
        pool._enrol([worker])

        async def start() -> None:  # as app.start: a last change, then at once the word
            pool.rebuild("web", SETTINGS, [])
            await pool.listen()

        starting = asyncio.ensure_future(start())
        for _ in range(3):
            await asyncio.sleep(0)
        kinds = recorder.kinds()
        worker.settle(pool.seq, "")  # LISTENING, nothing wrong
        await starting
        return kinds

    assert asyncio.run(scenario()) == [feed.INIT, feed.SERVICES, feed.LISTEN]


def test_a_write_does_not_wait_for_numbers_sent_only_to_a_replacement() -> None:
    # A replacement worker's snapshot and LISTEN take numbers the other workers never get;
    # a write settling after them waited for those numbers on every worker and, after 5 s,
    # killed the healthy ones.
    async def scenario() -> bool:
        pool = make_pool()
        follow_nothing(pool)
        old, _ = fake_worker(0)
        pool._enrol([old])
        old.answering = True
        pool.rebuild("web", SETTINGS, [])
        pool._flush()
        old.settle(old.sent)  # the old worker applied everything it was sent
        new, _ = fake_worker(1)
        pool._enrol([new])  # a replacement: its snapshot is numbered after the change
        await asyncio.wait_for(pool.settle(), 1.0)
        return pool.seq > old.sent

    assert asyncio.run(scenario())


def test_a_worker_replaced_while_the_store_loads_waits_for_the_word_to_listen() -> None:
    # Workers start before the store is read; one restarted then bound the port at once and
    # answered from a partial snapshot, then bound it a second time when all were told.
    async def scenario() -> tuple[list[str], list[str]]:
        pool = make_pool()
        follow_nothing(pool)
        first, _ = fake_worker(0)
        pool._enrol([first])
        replacement, replacement_rec = fake_worker(1)

        async def spawn(number: int) -> Worker:
            return replacement

        pool._spawn = spawn  # type: ignore[method-assign]
        await pool._start([1])
        before = replacement_rec.kinds()
        listening = asyncio.ensure_future(pool.listen())
        await asyncio.sleep(0)
        for worker in (first, replacement):
            worker.settle(pool.seq, "")
        await listening
        return before, replacement_rec.kinds()

    before, after = asyncio.run(scenario())
    assert feed.LISTEN not in before
    assert after.count(feed.LISTEN) == 1
