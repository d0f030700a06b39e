"""api.events and the change log's streams (#20, watchers): a change is handed only to the
streams that follow its service, is encoded once for all of them, and what queued while a
stream was writing goes out in one write; an idle stream still gets its keepalive."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from dnsdisc.api import events
from dnsdisc.api.http import Api, ServerState
from dnsdisc.registry.changes import Change, ChangeLog
from dnsdisc.registry.registry import Registry
from dnsdisc.store.base import MemoryStore


def test_a_change_reaches_the_streams_of_its_service_only() -> None:
    log = ChangeLog()
    web: list[Change] = []
    every: list[Change] = []
    off_web = log.subscribe(web.append, "web")
    off_every = log.subscribe(every.append)
    log.record("register", "web", "a")
    log.record("register", "db", "x")
    assert [c.service for c in web] == ["web"]  # db's change never called it
    assert [c.service for c in every] == ["web", "db"]
    off_web()
    off_every()
    log.record("register", "web", "b")
    assert len(web) == 1 and len(every) == 2
    assert log._streams == {}  # nothing left behind per service


def test_an_event_is_encoded_once_for_every_stream_and_the_cache_is_bounded() -> None:
    change = Change(7, "register", "web", "a", {"address": "10.0.0.1"})
    text = events._event(change)
    assert events._event(change) is text
    assert text.startswith(b"id: 7\nevent: register\ndata: ")
    same = Change(7, "register", "web", "a", {"address": "10.0.0.2"})  # another change object
    assert b"10.0.0.2" in events._event(same)
    for n in range(events.ENCODED + 10):
        events._event(Change(n, "health", "web", "a"))
    assert len(events._encoded) <= events.ENCODED


async def _read_until(resp: ClientResponse, wanted: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    async with asyncio.timeout(timeout):
        while wanted not in got:
            got += await resp.content.readany()
    return got


def test_streams_get_their_changes_and_a_keepalive_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(events, "KEEPALIVE", 0.2)

    async def main() -> None:
        registry = Registry(MemoryStore())
        api = Api(registry, ServerState(store_open=True, listeners_up=True))
        async with TestClient(TestServer(api.app())) as client:
            web = await client.get("/v1/events?service=web")
            every = await client.get("/v1/events")
            await _read_until(web, b": connected")
            await _read_until(every, b": connected")
            for service in ("db", "web"):
                resp = await client.put(
                    f"/v1/services/{service}/instances/i1",
                    json={"address": "10.0.0.1", "port": 80},
                )
                assert resp.status in (200, 201)
            got_every = await _read_until(every, b'"service": "web"')
            assert got_every.index(b'"service": "db"') < got_every.index(b'"service": "web"')
            got_web = await _read_until(web, b'"service": "web"')
            assert b'"service": "db"' not in got_web
            # Nothing more happens: a keepalive comment within about KEEPALIVE.
            assert b": keepalive" in await _read_until(web, b": keepalive", timeout=2.0)
            web.close()
            every.close()

    asyncio.run(main())
