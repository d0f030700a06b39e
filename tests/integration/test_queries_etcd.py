"""Named queries on a real 3-member etcd cluster (loopback): two registries in this process, each
on its own EtcdStore under one prefix, as two dnsdisc nodes are. A query defined on one is in the
other's memory (and its listeners told) through the watch; replaced and deleted too; a node that
starts later loads them; the config's static queries stay each node's own; a watch that fell
behind a compaction resynchronises its queries; a key that does not validate is skipped. And
end to end: two dnsdisc processes, a query PUT over HTTP on one answering in DNS on the other."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnsdisc.registry.queries import QueryDef
from dnsdisc.registry.registry import Registry
from dnsdisc.registry.replication import Follower
from dnsdisc.store.etcd.store import EtcdStore
from dnsdisc.store.settings import EtcdSettings
from tests.support.etcdcluster import EtcdCluster, etcd_node, etcd_post
from tests.support.helpers import wait_for

PREFIX = "/dnsdisc-queries"


def q(name: str, service: str = "web", static: bool = False, **body: Any) -> QueryDef:
    return QueryDef.from_json(name, {"service": service, **body}, static=static)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def until(what: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``what()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = what()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s (last: {last!r})")
        await asyncio.sleep(0.01)


async def node(cluster: EtcdCluster, name: str) -> tuple[Registry, list[str]]:
    settings = EtcdSettings(endpoints=tuple(cluster.endpoints.split(",")), prefix=PREFIX)
    reg = Registry(EtcdStore(settings, node=name))
    heard: list[str] = []
    reg.subscribe_queries(heard.append)
    await reg.load()
    return reg, heard


def test_queries_replicate_between_two_nodes_on_etcd(etcd: EtcdCluster) -> None:
    url = etcd.members[0].client_url

    async def main() -> None:
        a, _ = await node(etcd, "a")
        b, heard_b = await node(etcd, "b")
        c: Registry | None = None
        try:
            # Defined on A: in A's memory before put_query returns, and then in B's.
            chained = q("web-q", tags=["v2", "!canary"], meta={"env": "prod"}, failover=["dr"])
            assert await a.put_query(chained) is True
            assert a.query("web-q") == chained
            await until(lambda: "web-q" in b.queries)
            assert b.query("web-q") == chained and not b.query("web-q").static
            assert heard_b == ["web-q"]
            stored = etcd_post(url, "/v3/kv/range", {"key": b64(f"{PREFIX}/queries/web-q")})
            value = json.loads(base64.b64decode(stored["kvs"][0]["value"]))
            assert value == chained.definition()

            # Replaced on B, seen on A; a template too.
            assert await b.put_query(q("web-q", service="api", only_passing=True)) is False
            await until(lambda: a.query("web-q").services == ("api",))
            template = q("near-", service="${match}-web", template="prefix")
            await b.put_query(template)
            await until(lambda: "near-" in a.queries)
            assert a.query("near-") == template

            # The config's queries are each node's own: B's hides the shared one on B only,
            # and a write of that name on B is refused, while A may still change it.
            b.replace_static_queries([q("web-q", service="db", static=True)])
            assert b.query("web-q").services == ("db",) and b.query("web-q").static
            heard_b.clear()
            await a.put_query(q("web-q", service="api2"))
            await until(lambda: b.memory.stored_queries["web-q"].services == ("api2",))
            assert b.query("web-q").services == ("db",) and heard_b == []
            b.replace_static_queries([])
            assert b.query("web-q").services == ("api2",) and heard_b == ["web-q"]

            # A node that starts later loads them.
            c, heard_c = await node(etcd, "c")
            assert set(c.queries) == {"web-q", "near-"} and sorted(heard_c) == ["near-", "web-q"]

            # Deleted on A: gone on B and C.
            await a.delete_query("near-")
            assert "near-" not in a.queries
            await until(lambda: "near-" not in b.queries and "near-" not in c.queries)

            # B's watch stops; meanwhile A defines, replaces and deletes, and etcd compacts the
            # history away: B's new watch cannot resume, reloads, and converges.
            store_b = b.store
            assert isinstance(store_b, EtcdStore)
            for task in store_b._tasks:
                task.cancel()
            await asyncio.gather(*store_b._tasks, return_exceptions=True)
            store_b._tasks.clear()
            store_b._watch.watching = False
            await a.put_query(q("later", service="late"))
            await a.put_query(q("web-q", service="api3"))
            await a.delete_query("web-q")
            rev = int(etcd_post(url, "/v3/kv/range", {"key": b64("x")})["header"]["revision"])
            etcd_post(url, "/v3/kv/compaction", {"revision": str(rev), "physical": True})
            assert set(b.queries) == {"web-q"}  # B has not seen any of it yet
            heard_b.clear()
            store_b.follow(Follower(b.memory))
            await until(lambda: set(b.queries) == {"later"})
            assert sorted(heard_b) == ["later", "web-q"]

            # A key written by hand (or by another version) that does not validate is skipped,
            # on a node's watch as at its start; the rest keeps arriving.
            skipped = c.skipped_keys
            bad = json.dumps({"service": "web", "policy": "no-such-policy"})
            etcd_post(url, "/v3/kv/put", {"key": b64(f"{PREFIX}/queries/bad"), "value": b64(bad)})
            await a.put_query(q("after-bad"))
            await until(lambda: "after-bad" in c.queries)
            assert "bad" not in c.queries and c.skipped_keys == skipped + 1
            d, _ = await node(etcd, "d")
            try:
                assert "bad" not in d.queries and "after-bad" in d.queries
                assert d.skipped_keys == 1
            finally:
                await d.close()
        finally:
            for reg in (a, b, c):
                if reg is not None:
                    await reg.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_query_defined_over_http_on_one_node_answers_in_dns_on_the_other(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    a = etcd_node(tmp_path, "a", etcd).start()
    try:
        b = etcd_node(tmp_path, "b", etcd).start()
    except BaseException:
        a.stop()
        raise
    try:
        a.register("web", "web-1", address="10.7.0.1", port=80, tags=["v2"])
        a.register("web", "web-2", address="10.7.0.2", port=80)
        put = a.http("PUT", "/v1/queries/web-q", {"service": "web", "tags": ["v2"]})
        assert put.status == 201, put.body
        name = "web-q.query.svc.internal"
        wait_for(lambda: b.http("GET", "/v1/queries/web-q").status == 200)
        wait_for(lambda: sorted(b.addresses(name, timeout=1.0)) == ["10.7.0.1"])
        assert b.http("DELETE", "/v1/queries/web-q").status == 204
        wait_for(lambda: a.http("GET", "/v1/queries/web-q").status == 404)
        wait_for(lambda: a.query(name).rcode() == 3)  # NXDOMAIN
    finally:
        a.stop()
        b.stop()
