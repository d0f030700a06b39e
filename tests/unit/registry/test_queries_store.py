"""registry: named queries kept, stored and replicated. Put, replace and delete through the
store; the config's (static) queries read-only over the API and shadowing an API-defined one of
the same name while they exist; the listeners told each name whose effective query changed; the
cap; SQLite keeping them across a restart (and an older database upgraded in place); a stored
definition that does not validate skipped; a shared store's changes applied by the follower."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from dnsdisc.errors import ConflictError, LimitError, NotFoundError
from dnsdisc.registry import limits
from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.registry import Registry
from dnsdisc.store.base import ChangeSink, Op, Snapshot
from dnsdisc.store.etcd.keys import Keys
from dnsdisc.store.sqlite import SqliteStore


def q(name: str, service: str = "web", static: bool = False, **body: Any) -> QueryDef:
    return QueryDef.from_json(name, {"service": service, **body}, static=static)


class Recorder:
    """A store that keeps every commit (and, as the memory store, nothing else)."""

    name = "recorder"

    def __init__(self, snap: Snapshot | None = None) -> None:
        self.snap = snap or Snapshot()
        self.ops: list[Op] = []

    async def open(self) -> Snapshot:
        return self.snap

    async def commit(self, ops: Sequence[Op]) -> None:
        self.ops.extend(ops)

    async def close(self) -> None:
        return None


class FakeShared(Recorder):
    """Applies each commit through the sink, as the etcd store's watch does."""

    shared = True
    stale = False

    def __init__(self, snap: Snapshot | None = None) -> None:
        super().__init__(snap)
        self.sink: ChangeSink | None = None

    async def commit(self, ops: Sequence[Op]) -> None:
        await super().commit(ops)
        assert self.sink is not None
        for op in ops:
            self.sink.apply_change(op)

    def follow(self, sink: ChangeSink) -> None:
        self.sink = sink

    async def renew(self, service: str, instance: str) -> None:
        return None

    async def put_status(self, service: str, instance: str, data: dict[str, Any]) -> None:
        return None


async def loaded(store: Any = None) -> tuple[Registry, list[str]]:
    reg = Registry(store or Recorder())
    heard: list[str] = []
    reg.subscribe_queries(heard.append)
    await reg.load()
    return reg, heard


def test_put_replace_and_delete_go_through_the_store_and_tell_the_listeners() -> None:
    async def main() -> None:
        store = Recorder()
        reg, heard = await loaded(store)
        assert dict(reg.queries) == {}
        with pytest.raises(NotFoundError) as nf:
            reg.query("web-q")
        assert nf.value.field == "name"

        first = q("web-q", tags=["v2", "!canary"], failover=["web-dr"])
        assert await reg.put_query(first) is True
        assert reg.query("web-q") == first and reg.query("WEB-Q") == first
        assert not reg.query("web-q").static
        assert store.ops == [Op("put_query", "web-q", data=first.definition())]
        assert heard == ["web-q"]

        second = q("web-q", only_passing=True)
        assert await reg.put_query(second) is False
        assert reg.queries["web-q"] == second
        assert heard == ["web-q", "web-q"]

        await reg.put_query(q("near-", service="${match}-web", template="prefix"))
        assert set(reg.queries) == {"web-q", "near-"}
        assert store.ops[-1].service == "near-"
        assert store.ops[-1].data == {"service": "${match}-web", "template": "prefix"}

        await reg.delete_query("web-q")
        assert store.ops[-1] == Op("del_query", "web-q")
        assert "web-q" not in reg.queries and heard[-1] == "web-q"
        with pytest.raises(NotFoundError) as nf:
            await reg.delete_query("web-q")
        assert nf.value.field == "name"
        assert reg.writes["put_query"] == 3 and reg.writes["del_query"] == 1

    asyncio.run(main())


def test_static_queries_are_read_only_and_shadow_an_api_defined_one_while_they_exist() -> None:
    async def main() -> None:
        store = Recorder()
        reg, heard = await loaded(store)
        await reg.put_query(q("shared", service="api"))
        heard.clear()

        static = q("shared", service="db", static=True)
        reg.replace_static_queries([static, q("only-static", static=True)])
        assert store.ops == [
            Op("put_query", "shared", data=q("shared", service="api").definition())
        ]
        assert reg.query("shared") == static and reg.query("shared").static
        assert reg.query("only-static").static
        assert sorted(heard) == ["only-static", "shared"]

        for write in (reg.put_query(q("shared")), reg.delete_query("shared")):
            with pytest.raises(ConflictError) as conflict:
                await write
            assert conflict.value.field == "name"
        with pytest.raises(ConflictError):
            await reg.put_query(q("only-static"))
        assert len(store.ops) == 1

        # The same config again (a reload that changed nothing): nobody is told anything.
        heard.clear()
        reg.replace_static_queries(
            [q("shared", service="db", static=True), q("only-static", static=True)]
        )
        assert heard == []

        # A changed static query is announced; one the config no longer holds goes, and the
        # API-defined one it hid is back.
        reg.replace_static_queries([q("only-static", service="api", static=True)])
        assert sorted(heard) == ["only-static", "shared"]
        assert reg.query("shared") == q("shared", service="api") and not reg.query("shared").static
        heard.clear()
        reg.replace_static_queries([])
        assert heard == ["only-static"] and set(reg.queries) == {"shared"}

        # A static query given without its flag is made static all the same.
        reg.replace_static_queries([q("late")])
        assert reg.query("late").static

    asyncio.run(main())


def test_an_api_defined_query_hidden_by_a_static_one_is_not_announced_until_it_shows() -> None:
    async def main() -> None:
        shared = FakeShared()
        reg, heard = await loaded(shared)
        reg.replace_static_queries([q("web-q", service="db", static=True)])
        heard.clear()
        # Another node defines the name this node's config holds: kept, not in effect.
        assert shared.sink is not None
        shared.sink.apply_change(Op("put_query", "web-q", data={"service": "api"}, revision=5))
        assert heard == [] and reg.query("web-q").services == ("db",)
        reg.replace_static_queries([])
        assert heard == ["web-q"] and reg.query("web-q").services == ("api",)
        # ... and deleted there: gone here too.
        shared.sink.apply_change(Op("del_query", "web-q", revision=6))
        assert heard == ["web-q", "web-q"] and "web-q" not in reg.queries
        # Query changes are not in the change log (its event kinds are services' and
        # instances').
        assert reg.events.changes.index == 0

    asyncio.run(main())


def test_the_number_of_api_defined_queries_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LimitError) as err:
        limits.check_new_query(limits.MAX_QUERIES)
    assert err.value.field == "queries" and limits.MAX_QUERIES == 10_000
    limits.check_new_query(limits.MAX_QUERIES - 1)
    monkeypatch.setattr(limits, "MAX_QUERIES", 3)

    async def main() -> None:
        reg, _ = await loaded()
        reg.replace_static_queries([q(f"static-{n}", static=True) for n in range(5)])
        for n in range(3):
            await reg.put_query(q(f"q-{n}"))
        with pytest.raises(LimitError) as err:
            await reg.put_query(q("q-3"))
        assert err.value.field == "queries" and err.value.http_status == 409
        await reg.put_query(q("q-1", service="api"))  # a replacement is not a new one
        await reg.delete_query("q-0")
        await reg.put_query(q("q-3"))
        assert len(reg.queries) == 8

    asyncio.run(main())


def test_sqlite_keeps_queries_across_a_restart_and_upgrades_an_older_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.sqlite3"
    # A database made before named queries: no queries table.
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE services (name TEXT PRIMARY KEY, settings TEXT NOT NULL);"
            "CREATE TABLE instances (service TEXT NOT NULL, id TEXT NOT NULL, "
            "definition TEXT NOT NULL, PRIMARY KEY (service, id));"
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        )
        conn.execute("INSERT INTO services VALUES ('web', ?)", (json.dumps({"ttl": 9}),))
    template = q("near-", service="${match}-web", template="prefix", failover=["web"])
    chained = q("web-q", tags=["v2", "!canary"], meta={"env": "prod"}, ttl=3, failover=["dr"])

    async def write() -> None:
        reg = Registry(SqliteStore(path))
        await reg.load()
        assert reg.service("web").settings.ttl == 9
        await reg.put_query(chained)
        await reg.put_query(template)
        await reg.put_query(q("gone"))
        await reg.delete_query("gone")
        await reg.close()

    async def read() -> tuple[Registry, list[str]]:
        reg, heard = await loaded(SqliteStore(path))
        reg.replace_static_queries([q("web-q", service="db", static=True)])
        await reg.close()
        return reg, heard

    asyncio.run(write())
    reg, heard = asyncio.run(read())
    assert sorted(heard) == ["near-", "web-q", "web-q"]
    assert reg.query("near-") == template and reg.query("near-").to_json() == template.to_json()
    # The stored one is there, hidden by the config's of its name; it shows once that goes.
    assert reg.query("web-q").static
    reg.replace_static_queries([])
    assert reg.query("web-q") == chained and not reg.query("web-q").static
    assert reg.service("web").settings.ttl == 9
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT name, data FROM queries"))
    assert set(rows) == {"near-", "web-q"}
    assert json.loads(rows["web-q"]) == chained.definition()


def test_a_stored_query_that_does_not_validate_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"

    async def first() -> None:
        reg = Registry(SqliteStore(path))
        await reg.load()
        await reg.put_query(q("ok"))
        await reg.close()

    asyncio.run(first())
    with sqlite3.connect(path) as conn:
        for name, data in (
            ("bad-policy", {"service": "web", "policy": "no-such-policy"}),
            ("no-service", {"tags": ["x"]}),
            ("not-an-object", ["web"]),
            ("Bad_Name", {"service": "web"}),
            # A newer version's field is dropped (as for services), the rest is used; in a
            # failover step too.
            ("newer", {"service": "web", "jitter": 3, "failover": [{"service": "dr", "w": 1}]}),
        ):
            conn.execute("INSERT INTO queries VALUES (?, ?)", (name, json.dumps(data)))

    async def second() -> Registry:
        reg, _ = await loaded(SqliteStore(path))
        await reg.close()
        return reg

    reg = asyncio.run(second())
    assert set(reg.queries) == {"ok", "newer"}
    assert reg.query("newer").services == ("web", "dr")
    assert reg.skipped_keys == 4


def test_a_shared_store_s_queries_are_loaded_followed_and_resynchronised() -> None:
    async def main() -> None:
        snap = Snapshot(
            queries={"a": {"service": "web"}, "b": {"service": "api"}, "bad": {"ttl": -1}},
            index=10,
        )
        shared = FakeShared(snap)
        reg, heard = await loaded(shared)
        assert set(reg.queries) == {"a", "b"} and sorted(heard) == ["a", "b"]
        assert reg.memory.skipped == 1
        heard.clear()

        # This node's write comes back through the sink (the follower applies it).
        assert await reg.put_query(q("c", service="db")) is True
        assert await reg.put_query(q("c", service="db2")) is False
        assert reg.query("c").services == ("db2",) and heard == ["c", "c"]
        # A change from another node that does not validate keeps what this node knew.
        assert shared.sink is not None
        shared.sink.apply_change(Op("put_query", "a", data={"service": "web", "ttl": "x"}))
        assert reg.query("a").services == ("web",) and reg.memory.skipped == 2

        # The watch lost its place: the store's whole view is applied, and only the names that
        # changed are announced.
        heard.clear()
        shared.sink.resync(
            Snapshot(
                queries={
                    "a": {"service": "web"},  # unchanged
                    "b": {"service": "api", "only_passing": True},  # changed
                    "c": {"policy": "nope"},  # does not validate: kept as it was
                    "d": {"service": "new"},  # new
                },  # and "bad" is gone
                index=20,
            )
        )
        assert sorted(heard) == ["b", "d"]
        assert set(reg.queries) == {"a", "b", "c", "d"}
        assert reg.query("b").only_passing and reg.query("c").services == ("db2",)
        shared.sink.resync(Snapshot(queries={"d": {"service": "new"}}, index=30))
        assert set(reg.queries) == {"d"}

    asyncio.run(main())


def test_the_etcd_key_of_a_query_parses_and_only_a_valid_name_does() -> None:
    keys = Keys("/dnsdisc")
    assert keys.query("web-q") == "/dnsdisc/queries/web-q"
    assert keys.parse(keys.query("web-q")) == ("queries", "web-q", "")
    assert keys.parse(keys.query("near-")) == ("queries", "near-", "")  # a template's prefix
    for bad in ("/dnsdisc/queries/Bad_Name", "/dnsdisc/queries/a/b", "/dnsdisc/queries/-x"):
        assert keys.parse(bad) is None
    assert keys.skipped == 2  # the names; a deeper key is nothing of ours
