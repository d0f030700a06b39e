"""The HTTP connection caps' bookkeeping, and the limits chosen under the descriptor limit."""

from __future__ import annotations

import resource

import pytest

from dnsdisc.api.guard import HttpGuard, HttpLimits
from dnsdisc.config.load import Config
from dnsdisc.server import limits


def test_the_caps_count_per_client_and_in_all() -> None:
    guard = HttpGuard(HttpLimits(max_connections=3, max_connections_per_client=2))
    assert guard.admit("10.0.0.1") and guard.admit("10.0.0.1")
    assert not guard.admit("10.0.0.1")  # its own cap
    assert guard.admit("10.0.0.2")
    assert not guard.admit("10.0.0.3")  # the global cap
    assert guard.refused == {"per_client": 1, "global": 1}
    guard.release("10.0.0.1")
    assert guard.admit("10.0.0.3") and guard.open == 3
    for client in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        guard.release(client)
    assert guard.open == 0 and not guard.per_client


def test_the_connection_cap_fits_under_the_descriptor_limit() -> None:
    config = Config(http_max_connections=5000, http_max_connections_per_client=4000)
    fitted = limits.http_limits(config, nofile=1024)
    assert fitted.max_connections == 1024 - limits.RESERVED
    assert fitted.max_connections_per_client == fitted.max_connections
    roomy = limits.http_limits(Config(), nofile=65536)
    assert (roomy.max_connections, roomy.max_connections_per_client) == (4096, 200)
    assert (roomy.header_timeout, roomy.body_timeout, roomy.keepalive_timeout) == (10, 30, 75)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_to: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 65536))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: set_to.append(value))
    assert limits.raise_nofile() == 65536
    assert set_to == [(65536, 65536)]


def test_a_blocking_query_whose_client_hangs_up_is_not_left_parked() -> None:
    """aiohttp does not cancel a handler whose client left: the guard's ``disconnected`` ends
    a parked blocking query then, instead of after its wait (up to 10 minutes)."""
    import asyncio

    from aiohttp import web

    from dnsdisc.api.guard import GuardedRunner
    from dnsdisc.api.http import Api, ServerState
    from dnsdisc.registry.registry import Registry

    async def run() -> tuple[int, int]:
        registry = Registry()
        await registry.load()
        guard = HttpGuard(HttpLimits())
        api = Api(registry, ServerState(), guard=guard)
        runner = GuardedRunner(api.app(), guard, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        changes = registry.events.changes
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /v1/services?index={changes.index}&wait=60s HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n\r\n".encode()
            )
            await writer.drain()
            async with asyncio.timeout(5):
                while not changes._waiters:
                    await asyncio.sleep(0.01)
            parked = sum(len(w) for w in changes._waiters.values())
            writer.close()
            async with asyncio.timeout(5):  # well before the 60 s wait
                while changes._waiters:
                    await asyncio.sleep(0.01)
            return parked, guard.open
        finally:
            await runner.cleanup()

    parked, still_open = asyncio.run(run())
    assert parked == 1 and still_open == 0
