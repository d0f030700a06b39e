"""server.reload.Reloader: one reload at a time; requests while one runs are coalesced into one
more, which every one of them waits for (and whose error each gets)."""

from __future__ import annotations

import asyncio

import pytest

from dnsdisc.errors import ConfigError
from dnsdisc.server import reload as reload_module
from dnsdisc.server.reload import Reloader


def test_a_burst_runs_as_two_reloads_and_errors_reach_their_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[int] = []
    fail = {"on": 0}

    async def slow_reload(server: object) -> None:
        started.append(len(started) + 1)
        await asyncio.sleep(0.05)
        if fail["on"] == len(started):
            raise ConfigError("x.yaml", "ttl", "a number")

    monkeypatch.setattr(reload_module, "reload", slow_reload)

    async def main() -> None:
        reloader = Reloader(object())  # type: ignore[arg-type]
        await asyncio.gather(*(reloader() for _ in range(8)))
        assert started == [1, 2] and reloader.runs == 2
        # A request while the queued one already runs queues one more.
        first = asyncio.ensure_future(reloader())
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(reloader())
        await asyncio.sleep(0.06)  # the second reload is running now
        third = asyncio.ensure_future(reloader())
        await asyncio.gather(first, second, third)
        assert reloader.runs == 5
        # The callers of a failing reload get its error; a later one is not affected.
        fail["on"] = 6
        results = await asyncio.gather(reloader(), reloader(), return_exceptions=True)
        assert isinstance(results[0], ConfigError) and results[1] is None
        await reloader()

    asyncio.run(main())
