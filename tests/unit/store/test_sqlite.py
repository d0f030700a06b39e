"""store.sqlite, written and read back through a registry: committed means durable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from dnsdisc.registry.model import Instance, ServiceSettings
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
