"""registry: errors, listeners and static services; over a shared store (etcd's contract, without
etcd) memory changes only through ``apply_change``/``resync``, every change notifies, verdicts are
published rather than applied; over SQLite, what memory holds is what a restart reads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dnsdisc.config import zones
from dnsdisc.errors import ConflictError, NotFoundError
from dnsdisc.registry.model import CRITICAL, PASSING, HeartbeatReport, Instance, ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.replication import Follower
from dnsdisc.store.base import ChangeSink, Op, Snapshot
from dnsdisc.store.sqlite import SqliteStore
from tests.support.helpers import ROOT


class FakeShared:
    """Applies each commit through the sink, as the etcd store's watch does."""

    name = "fake"
    shared = True
    stale = False

    def __init__(self, snap: Snapshot | None = None) -> None:
        self.snap = snap or Snapshot()
        self.sink: ChangeSink | None = None
        self.statuses: list[tuple[str, str, dict[str, Any]]] = []
        self.renewed: list[tuple[str, str]] = []

    async def open(self) -> Snapshot:
        return self.snap

    async def commit(self, ops: Sequence[Op]) -> None:
        assert self.sink is not None
        for op in ops:
            self.sink.apply_change(
                Op("put_service", op.service, data=op.data) if op.kind == "ensure_service" else op
            )

    async def close(self) -> None:
        return None

    def follow(self, sink: ChangeSink) -> None:
        self.sink = sink

    async def renew(self, service: str, instance: str) -> None:
        self.renewed.append((service, instance))

    async def put_status(self, service: str, instance: str, data: dict[str, Any]) -> None:
        self.statuses.append((service, instance, data))


def definition(address: str = "10.0.0.1", **kw: Any) -> dict[str, Any]:
    return Instance.from_json("web", "x", {"address": address, "port": 80, **kw}).definition()


def test_remote_changes_reach_memory_and_listeners() -> None:
    async def run() -> None:
        store = FakeShared(
            Snapshot(
                services={"web": {"ttl": 30}},
                instances={("web", "a"): definition()},
                statuses={("web", "a"): {"status": "critical", "output": "down"}},
            )
        )
        reg = Registry(store)
        changed: list[str] = []
        reg.subscribe(changed.append)
        await reg.load()
        sink = store.sink
        assert isinstance(sink, Follower)  # the registry follows the store after loading it
        assert reg.instance("web", "a").status == CRITICAL
        assert reg.service("web").settings.ttl == 30
        changed.clear()
        sink.apply_change(Op("put_instance", "web", "b", definition("10.0.0.2")))
        assert changed == ["web"] and reg.instance("web", "b").instance.address == "10.0.0.2"
        sink.apply_change(Op("put_status", "web", "b", {"status": "critical", "output": "x"}))
        assert reg.instance("web", "b").status == CRITICAL
        sink.apply_change(Op("put_status", "web", "b", {"status": "bogus"}))  # skipped, logged
        sink.apply_change(Op("put_instance", "web", "c", {"address": "nope", "port": 80}))
        assert reg.instance("web", "b").status == CRITICAL
        assert "c" not in reg.service("web").instances
        sink.apply_change(Op("del_instance", "web", "b"))
        assert "b" not in reg.service("web").instances
        sink.apply_change(Op("del_service", "web"))
        assert reg.get("web") is None and changed[-1] == "web"

    asyncio.run(run())


def test_local_writes_go_through_the_store_and_verdicts_are_published() -> None:
    async def run() -> None:
        store = FakeShared()
        reg = Registry(store)
        await reg.load()
        inst = Instance.from_json("web", "a", {"address": "10.0.0.1", "port": 80, "ttl": 5})
        assert await reg.put_instance(inst) is True
        assert reg.instance("web", "a").status == PASSING
        await reg.renew("web", "a")
        assert store.renewed == [("web", "a")]
        # A verdict is published, and memory changes only when it comes back.
        assert reg.set_status("web", "a", CRITICAL, "no answer") is True
        await asyncio.sleep(0)
        assert store.statuses == [
            ("web", "a", {"status": CRITICAL, "output": "no answer", "maintenance": None})
        ]
        assert reg.instance("web", "a").status == PASSING
        await reg.maintenance("web", "a", "patching")
        assert store.statuses[-1][2]["maintenance"] == "patching"
        await reg.put_service(ServiceSettings.from_json("web", {"ttl": 9}))
        assert reg.service("web").settings.ttl == 9

    asyncio.run(run())


def test_resync_drops_the_gone_applies_the_new_and_keeps_the_same() -> None:
    async def run() -> None:
        store = FakeShared(
            Snapshot(
                services={"web": {}, "old": {}},
                instances={("web", "a"): definition(), ("web", "b"): definition("10.0.0.2")},
            )
        )
        reg = Registry(store, configured={"kept": ServiceSettings("kept")})
        await reg.load()
        sink = store.sink
        assert sink is not None
        sink.apply_change(Op("put_status", "web", "a", {"status": "critical", "output": "x"}))
        before = reg.instance("web", "a")
        changed: list[str] = []
        reg.subscribe(changed.append)
        sink.resync(
            Snapshot(
                services={"web": {}, "new": {"ttl": 7}},
                instances={("web", "a"): definition(), ("web", "c"): definition("10.0.0.3")},
            )
        )
        assert sorted(reg.service("web").instances) == ["a", "c"]
        assert reg.instance("web", "a") is before  # unchanged: same state, health kept
        assert reg.instance("web", "a").status == CRITICAL
        assert reg.get("old") is None and reg.get("kept") is not None
        assert reg.service("new").settings.ttl == 7
        assert {"web", "old", "new"} <= set(changed)

    asyncio.run(run())


def inst(iid: str, **kw: object) -> Instance:
    return Instance.from_json("web", iid, {"address": "10.0.0.1", "port": 80, **kw})


def test_registry_errors_and_listeners() -> None:
    seen: list[str] = []

    async def main() -> None:
        reg = Registry(reserved={"ns"})
        reg.subscribe(seen.append)
        await reg.put_instance(inst("a"))
        with pytest.raises(NotFoundError):
            await reg.delete_instance("web", "zz")
        with pytest.raises(NotFoundError):
            reg.heartbeat("nope", "a")
        with pytest.raises(ConflictError):
            await reg.put_instance(
                Instance.from_json("ns", "a", {"address": "10.0.0.1", "port": 1})
            )
        reg.add_static(
            ServiceSettings("db"),
            [Instance.from_json("db", "d", {"address": "10.0.0.2", "port": 1}, static=True)],
        )
        with pytest.raises(ConflictError):
            await reg.delete_instance("db", "d")
        with pytest.raises(ConflictError):
            await reg.put_service(ServiceSettings("db"))
        state = reg.heartbeat("web", "a", HeartbeatReport(load=0.5))
        assert state.load == 0.5

    asyncio.run(main())
    assert seen == ["web", "db"]


def test_service_settings_and_first_instance_race_agree_after_restart(tmp_path: Path) -> None:
    # Found in review: the implicit creation of the service overwrote concurrently PUT settings
    # in the store while memory kept them.
    path = tmp_path / "r.sqlite3"

    async def race() -> tuple[str, int]:
        reg = Registry(SqliteStore(path))
        await reg.load()
        await asyncio.gather(
            reg.put_service(ServiceSettings.from_json("web", {"policy": "round_robin", "ttl": 60})),
            reg.put_instance(inst("a")),
        )
        settings = reg.service("web").settings
        await reg.close()
        return settings.policy, settings.ttl

    async def reload() -> tuple[str, int]:
        reg = Registry(SqliteStore(path))
        await reg.load()
        settings = reg.service("web").settings
        await reg.close()
        return settings.policy, settings.ttl

    in_memory = asyncio.run(race())
    assert in_memory == ("round_robin", 60)
    assert asyncio.run(reload()) == in_memory


# -- found in review: each of these failed before its fix --------------------------------------


def test_static_services_and_shadowed_names_refuse_writes() -> None:
    data = zones.load_dir(ROOT / "zones", "svc.internal.", ServiceSettings("default"))
    taken = zones.taken_service_names(data.records, "svc.internal.")
    assert {"mail", "www", "docs", "ldap"} <= set(taken)

    async def main() -> None:
        reg = Registry(reserved=taken)
        for settings, instances in data.services:
            reg.add_static(settings, instances)
        with pytest.raises(ConflictError):  # a new id in a zone-file service
            await reg.put_instance(
                Instance.from_json("postgres", "pg-9", {"address": "10.0.0.9", "port": 5432})
            )
        with pytest.raises(ConflictError, match="zone file"):  # mail.svc.internal is a static A
            await reg.put_instance(
                Instance.from_json("mail", "m-1", {"address": "10.0.0.9", "port": 25})
            )

    asyncio.run(main())


def test_invalid_stored_rows_are_skipped_and_counted() -> None:
    class BadStore:
        name = "bad"

        async def open(self) -> Snapshot:
            snap = Snapshot()
            snap.instances[("web", "w-1")] = {"address": "not-an-ip", "port": 80}
            return snap

        async def commit(self, op: object) -> None:
            return None

        async def close(self) -> None:
            return None

    # One bad row must not keep the node from starting: it is logged, counted and skipped.
    reg = Registry(BadStore())  # type: ignore[arg-type]
    asyncio.run(reg.load())
    assert reg.get("web") is None and reg.skipped_keys == 1


def test_a_write_is_acknowledged_only_once_the_barrier_returns() -> None:
    async def main() -> None:
        reg = Registry()
        released = asyncio.Event()
        calls = 0

        async def barrier() -> None:
            nonlocal calls
            calls += 1
            await released.wait()

        reg.set_barrier(barrier)
        write = asyncio.ensure_future(reg.put_instance(inst("a")))
        await asyncio.sleep(0.01)
        assert not write.done()  # in memory, not yet acknowledged
        assert reg.instance("web", "a").instance.address == "10.0.0.1"
        released.set()
        assert await write is True and calls == 1
        await reg.settled()
        assert calls == 2

    asyncio.run(main())
