"""The check gate: budgets per second, in flight and per service; a check that cannot start in
time is refused (skipped), never left to eat its own timeout."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dnsdisc.health.gate import CheckGate
from dnsdisc.health.settings import HealthSettings


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_per_service_cap_passes_over_a_full_service() -> None:
    cfg = replace(HealthSettings(), max_concurrent_checks_per_service=2, checks_per_second=1000)

    async def main() -> tuple[list[bool], bool]:
        gate = CheckGate(lambda: cfg)
        loop = asyncio.get_running_loop()
        spam = [await gate.enter("spam", loop.time() + 0.05) for _ in range(2)]
        third = asyncio.ensure_future(gate.enter("spam", loop.time() + 0.2))
        await asyncio.sleep(0)
        other = await gate.enter("payments", loop.time() + 0.05)  # not queued behind spam
        spam.append(await third)  # spam's cap held until its deadline: skipped
        return spam, other

    spam, other = _run(main())  # type: ignore[misc]
    assert spam == [True, True, False] and other is True


def test_a_slot_freed_goes_to_the_first_waiter() -> None:
    cfg = replace(HealthSettings(), max_concurrent_checks=1, checks_per_second=1000)

    async def main() -> list[str]:
        gate = CheckGate(lambda: cfg)
        loop = asyncio.get_running_loop()
        order: list[str] = []
        assert await gate.enter("a", loop.time() + 1)

        async def wait(name: str) -> None:
            if await gate.enter(name, loop.time() + 1):
                order.append(name)
                gate.leave(name)

        tasks = [asyncio.ensure_future(wait(n)) for n in ("b", "c")]
        await asyncio.sleep(0.01)
        gate.leave("a")
        await asyncio.gather(*tasks)
        assert gate.running == 0 and gate.waiting == 0
        return order

    assert _run(main()) == ["b", "c"]


def test_the_rate_budget_bounds_starts_and_refuses_past_the_deadline() -> None:
    cfg = replace(HealthSettings(), checks_per_second=20)

    async def main() -> tuple[int, float]:
        gate = CheckGate(lambda: cfg)
        loop = asyncio.get_running_loop()
        start = loop.time()
        granted = 0
        for _ in range(40):  # 20 at once (a second's burst), then one per 50 ms
            if await gate.enter("svc", start + 0.5):
                granted += 1
                gate.leave("svc")
        return granted, loop.time() - start

    granted, took = _run(main())  # type: ignore[misc]
    assert 25 <= granted <= 32, granted  # 20 + ~10 in the half second; the rest refused
    assert took < 1.5


def test_a_cancelled_waiter_gives_back_its_slot() -> None:
    cfg = replace(HealthSettings(), max_concurrent_checks=1)

    async def main() -> int:
        gate = CheckGate(lambda: cfg)
        loop = asyncio.get_running_loop()
        assert await gate.enter("a", loop.time() + 1)
        waiter = asyncio.ensure_future(gate.enter("b", loop.time() + 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        gate.leave("a")
        await asyncio.gather(waiter, return_exceptions=True)
        return gate.running

    assert _run(main()) == 0


def test_waiters_go_in_the_order_they_asked_across_services_and_are_counted_out() -> None:
    cfg = replace(
        HealthSettings(),
        max_concurrent_checks=1,
        max_concurrent_checks_per_service=1,
        checks_per_second=1000,
    )

    async def main() -> tuple[list[str], int, int]:
        gate = CheckGate(lambda: cfg)
        loop = asyncio.get_running_loop()
        order: list[str] = []
        assert await gate.enter("a", loop.time() + 1)

        async def wait(name: str, deadline: float) -> None:
            if await gate.enter(name, loop.time() + deadline):
                order.append(name)
                await asyncio.sleep(0.01)
                gate.leave(name)

        # b1 expires, c is cancelled, the rest start one at a time in the order they asked.
        tasks = [
            asyncio.ensure_future(wait(name, deadline))
            for name, deadline in (("b", 0.02), ("c", 1), ("a", 1), ("b", 1), ("d", 1))
        ]
        await asyncio.sleep(0.005)
        assert gate.waiting == 5
        tasks[1].cancel()
        await asyncio.sleep(0.05)
        assert gate.waiting == 3  # b1 expired, c cancelled
        gate.leave("a")
        await asyncio.gather(*tasks, return_exceptions=True)
        return order, gate.waiting, gate.running

    assert _run(main()) == (["a", "b", "d"], 0, 0)
