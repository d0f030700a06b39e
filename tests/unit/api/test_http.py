"""api.http: an error raised under a request becomes its HTTP status and a JSON body."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiohttp.test_utils import TestClient, TestServer

from dnsdisc.api.http import Api, ServerState
from dnsdisc.registry.registry import Registry
from dnsdisc.store.base import MemoryStore, Op
from dnsdisc.store.etcd.gateway import EtcdRequestError


class _RefusingStore(MemoryStore):
    """A store whose every write is refused the way etcd refuses one (a StoreError subclass)."""

    async def commit(self, ops: Sequence[Op]) -> None:
        raise EtcdRequestError("etcdserver: permission denied")


def test_a_refused_write_is_503_with_a_json_error_and_changes_nothing() -> None:
    async def main() -> None:
        registry = Registry(_RefusingStore())
        api = Api(registry, ServerState(store_open=True, listeners_up=True))
        async with TestClient(TestServer(api.app())) as client:
            resp = await client.put(
                "/v1/services/web/instances/web-1", json={"address": "10.0.0.1", "port": 80}
            )
            assert resp.status == 503
            body = await resp.json()
            assert "permission denied" in body["error"]
            assert registry.get("web") is None

    asyncio.run(main())
