"""The monitor's check runs against its lifecycle: nothing runs once it has stopped."""

from __future__ import annotations

import asyncio

from dnsdisc.health.monitor import HealthMonitor
from dnsdisc.registry.model import Instance
from dnsdisc.registry.registry import Registry


def test_no_check_starts_once_the_monitor_stopped() -> None:
    async def go() -> None:
        registry = Registry()
        await registry.load()
        health = HealthMonitor(registry)
        health.start()
        await health.stop()
        # A write after the stop (a store's watch runs until the registry closes).
        check = {"type": "tcp", "interval": 1, "timeout": 1}
        await registry.put_instance(
            Instance.from_json("web", "a", {"address": "127.0.0.1", "port": 9, "check": check})
        )
        await asyncio.sleep(0.2)
        assert not health.check_results  # no run, against a prober already closed
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(go())
