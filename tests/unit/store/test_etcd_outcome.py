"""store.etcd: a stale node sends no write; a write that got no answer says its outcome is
unknown, one that never connected does not; a batch over etcd's transaction cap is the client's
to change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dnsdisc.errors import (
    StoreOutcomeUnknownError,
    StoreStaleError,
    StoreUnavailableError,
    ValidationError,
    http_status_of,
)
from dnsdisc.store.base import Op
from dnsdisc.store.etcd.gateway import EtcdRequestError, Gateway
from dnsdisc.store.etcd.store import EtcdStore
from dnsdisc.store.settings import EtcdSettings
from tests.support.helpers import free_port


def test_a_stale_store_refuses_every_write_before_sending() -> None:
    async def main() -> None:
        store = EtcdStore(EtcdSettings(endpoints=("http://127.0.0.1:9",)))
        sent: list[str] = []

        async def call(path: str, *args: object, **kw: object) -> dict[str, object]:
            sent.append(path)
            return {}

        store._gateway.call = call  # type: ignore[method-assign]
        store._election.reachable = False  # the quorum probe failed
        assert store.stale
        op = Op("put_instance", "web", "a", {"address": "10.0.0.1", "port": 80, "ttl": 5})
        for attempt in (
            store.commit([op]),
            store.put_status("web", "a", {"status": "passing"}),
        ):
            with pytest.raises(StoreStaleError):
                await attempt
        store._watch._leases[("web", "a")] = (7, 5.0)
        with pytest.raises(StoreStaleError):
            await store.renew("web", "a")
        assert sent == []
        assert StoreStaleError.outcome == "not_applied"

    asyncio.run(main())


def test_an_unanswered_write_is_unknown_and_an_unconnected_one_is_not() -> None:
    async def main() -> None:
        # A server that accepts and never answers: a frozen member, as the client sees it.
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)
            writer.close()

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        silent = Gateway(EtcdSettings(endpoints=(f"http://127.0.0.1:{port}",), timeout=0.3))
        closed = Gateway(EtcdSettings(endpoints=(f"http://127.0.0.1:{free_port()}",), timeout=0.3))
        silent.open()
        closed.open()
        try:
            with pytest.raises(StoreOutcomeUnknownError, match="may still be applied"):
                await silent.call("/v3/kv/txn", {}, write=True)
            with pytest.raises(StoreUnavailableError) as refused:
                await closed.call("/v3/kv/txn", {}, write=True)
            assert not isinstance(refused.value, StoreOutcomeUnknownError)
            # A read that times out is just unavailable.
            with pytest.raises(StoreUnavailableError) as read:
                await silent.call("/v3/kv/range", {})
            assert not isinstance(read.value, StoreOutcomeUnknownError)
        finally:
            await silent.close()
            await closed.close()
            server.close()

    asyncio.run(main())


def test_a_batch_over_etcds_transaction_cap_is_a_client_error_naming_the_cap() -> None:
    async def main() -> None:
        store = EtcdStore(EtcdSettings(endpoints=("http://127.0.0.1:9",)))
        sent: list[int] = []

        async def call(path: str, body: dict[str, Any], *args: object, **kw: object) -> Any:
            sent.append(len(body["success"]))
            raise EtcdRequestError(
                "etcd refused /v3/kv/txn: etcdserver: too many operations in txn request"
            )

        store._gateway.call = call  # type: ignore[method-assign]
        ops = [Op("ensure_service", "web", data={})] + [
            Op("put_instance", "web", f"i{n}", {"address": "10.0.0.1", "port": 80})
            for n in range(128)
        ]
        with pytest.raises(ValidationError, match=r"129 operations.*--max-txn-ops") as refused:
            await store.commit(ops)
        assert refused.value.field == "ops" and sent == [129]
        assert http_status_of(refused.value) == 400

        async def other(path: str, body: dict[str, Any], *args: object, **kw: object) -> Any:
            raise EtcdRequestError("etcd refused /v3/kv/txn: etcdserver: permission denied")

        store._gateway.call = other  # type: ignore[method-assign]
        with pytest.raises(EtcdRequestError):  # any other refusal stays the store's trouble
            await store.commit(ops[1:2])

    asyncio.run(main())
