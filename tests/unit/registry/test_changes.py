"""registry.changes: the change index, per service and instance, the bounded log, the waiters;
and how the registry records each kind of change."""

from __future__ import annotations

import asyncio
import time

import pytest

from dnsdisc.api.blocking import blocking
from dnsdisc.errors import ValidationError
from dnsdisc.registry.changes import BLOCK, ChangeLog
from dnsdisc.registry.model import Instance, ServiceSettings
from dnsdisc.registry.registry import Registry


def test_indexes_per_service_and_instance() -> None:
    log = ChangeLog()
    log.start(10)
    assert log.index_of() == 10 and log.index_of("web") == 10 and log.index_of("web", "a") == 10
    log.record("register", "web", "a")
    log.record("register", "db", "x")
    assert (log.index_of(), log.index_of("web"), log.index_of("web", "a")) == (12, 11, 11)
    assert log.index_of("db", "x") == 12
    log.record("service", "web")  # settings: every instance of web shows it
    assert log.index_of("web", "a") == 13 and log.index_of("db", "x") == 12


def test_the_log_says_when_it_no_longer_reaches_back() -> None:
    log = ChangeLog(capacity=3)
    log.start(5)
    assert log.since(4) is None  # before the start: re-list
    for n in range(5):
        log.record("register", "web", f"i{n}")
    assert [c.index for c in log.since(7) or []] == [8, 9, 10]
    assert log.since(6) is None and log.since(10) == [] and log.since(99) == []


def test_a_shared_store_counts_by_its_revision() -> None:
    log = ChangeLog()
    log.revision = 120
    assert log.record("register", "web", "a").index == 120
    log.revision = 0
    reserved = []
    log.reserve = reserved.append
    assert log.record("health", "web", "a").index == 121
    assert reserved == [121 + BLOCK]  # reserved a block ahead at once


def test_waiters_wake_for_their_changes_only_and_time_out() -> None:
    async def run() -> None:
        log = ChangeLog()
        log.record("register", "web", "a")
        mine = asyncio.ensure_future(log.wait(1, 5.0, "web"))
        other = asyncio.ensure_future(log.wait(1, 0.3, "db"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        log.record("register", "web", "b")
        assert await mine == 2 and time.monotonic() - started < 0.05
        assert await other == 0  # timed out: db never changed (its index is the start's)
        assert await log.wait(7, 5.0) == 2  # ahead of ours: at once

    asyncio.run(run())


def test_blocking_parameters() -> None:
    assert blocking({}) is None
    index, wait = blocking({"index": "5", "wait": "120000ms"}) or (0, 0.0)
    assert index == 5 and 120 <= wait <= 120 * 17 / 16
    assert 600 <= (blocking({"index": "0", "wait": "1h"}) or (0, 0.0))[1] <= 600 * 17 / 16
    for query, field in (({"index": "-1"}, "index"), ({"index": "x"}, "index"),
                         ({"index": "1", "wait": "abc"}, "wait"), ({"wait": "5d"}, "wait")):  # fmt: skip
        with pytest.raises(ValidationError) as info:
            blocking(query)
        assert info.value.field == field


def test_the_registry_records_each_kind_of_change() -> None:
    async def run() -> list[str]:
        reg = Registry()
        await reg.load()
        await reg.put_instance(Instance.from_json("web", "a", {"address": "10.0.0.1", "port": 1}))
        await reg.put_service(ServiceSettings.from_json("web", {"ttl": 9}))
        await reg.maintenance("web", "a", "x")
        reg.set_status("web", "a", "critical", "down")
        reg.heartbeat("web", "a")  # no change: not a change
        await reg.delete_instance("web", "a")
        await reg.delete_service("web")
        return [c.kind for c in reg.events.changes.log]

    kinds = asyncio.run(run())
    assert kinds == [
        "register", "service", "maintenance", "health", "deregister", "service-deleted",
    ]  # fmt: skip
