"""SQLite store and registry: committed means durable; memory follows the store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dnsdisc.errors import ConflictError, NotFoundError
from dnsdisc.registry.model import HeartbeatReport, Instance, ServiceSettings
from dnsdisc.registry.registry import Registry
from dnsdisc.store.sqlite import SqliteStore


def inst(iid: str, **kw: object) -> Instance:
    return Instance.from_json("web", iid, {"address": "10.0.0.1", "port": 80, **kw})


def test_sqlite_round_trip_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"

    async def write() -> None:
        reg = Registry(SqliteStore(path))
        await reg.load()
        assert await reg.put_instance(inst("a", tags=["x"], meta={"k": "v"}, ttl=10))
        assert not await reg.put_instance(inst("a", port=81))
        await reg.put_instance(inst("b"))
        await reg.delete_instance("web", "b")
        await reg.put_service(ServiceSettings.from_json("api", {"policy": "random", "ttl": 0}))
        await reg.close()

    async def read() -> Registry:
        reg = Registry(SqliteStore(path))
        await reg.load()
        await reg.close()
        return reg

    asyncio.run(write())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reg = asyncio.run(read())
    assert set(reg.service("web").instances) == {"a"}
    assert reg.instance("web", "a").instance.port == 81
    assert reg.service("api").settings.policy == "random"
    assert reg.service("api").settings.ttl == 0


def test_concurrent_writes_are_group_committed_and_all_durable(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"

    async def main() -> None:
        reg = Registry(SqliteStore(path))
        await reg.load()
        await asyncio.gather(*(reg.put_instance(inst(f"i-{n}")) for n in range(300)))
        await reg.close()

    asyncio.run(main())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM instances").fetchone()[0] == 300


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
