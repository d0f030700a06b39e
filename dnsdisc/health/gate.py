"""The budgets active checks start under: so many per second in all, so many in flight in all and
per service. A check waits its turn in the order it asked; one that has not started by the time
its next run is due is skipped (counted, not judged: a full queue says nothing about the
instance). Its timeout runs from when it starts, so waiting never turns into a failure.

Services at their cap are passed over rather than blocking the queue, so one service's slow checks
hold at most its own slots; the global budgets bound what all of them together cost the server
and their targets. Limits are read from the settings at each decision, so a reload applies them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dnsdisc.health.settings import HealthSettings


class CheckGate:
    def __init__(self, settings: Callable[[], HealthSettings]) -> None:
        self._settings = settings
        self._waiting: dict[asyncio.Future[bool], str] = {}  # in the order they asked
        self._running: dict[str, int] = {}
        self._total = 0
        self._tokens: float | None = None
        self._filled = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> int:
        return self._total

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def enter(self, service: str, deadline: float) -> bool:
        """Wait for a slot until the loop's clock reads ``deadline``; False: none came in time.
        After True, call ``leave(service)`` once the check is over."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiting[fut] = service
        self._wake()
        if fut.done():
            return fut.result()
        expiry = loop.call_at(deadline, self._expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.leave(service)
            raise
        finally:
            expiry.cancel()
            self._waiting.pop(fut, None)

    def leave(self, service: str) -> None:
        self._total -= 1
        left = self._running[service] - 1
        if left:
            self._running[service] = left
        else:
            del self._running[service]
        self._wake()

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        self._waiting.pop(fut, None)
        if not fut.done():
            fut.set_result(False)

    def _refill(self, now: float, rate: float) -> float:
        burst = max(1.0, rate)
        tokens = burst if self._tokens is None else self._tokens
        tokens = min(burst, tokens + (now - self._filled) * rate)
        self._filled = now
        return tokens

    def _wake(self) -> None:
        if not self._waiting:
            return
        cfg = self._settings()
        loop = asyncio.get_running_loop()
        tokens = self._refill(loop.time(), cfg.checks_per_second)
        try:
            for fut, service in list(self._waiting.items()):
                if fut.done():
                    self._waiting.pop(fut, None)
                    continue
                if self._total >= cfg.max_concurrent_checks:
                    break
                if self._running.get(service, 0) >= cfg.max_concurrent_checks_per_service:
                    continue
                if tokens < 1:
                    if self._timer is None:
                        self._timer = loop.call_later(
                            (1 - tokens) / cfg.checks_per_second, self._on_timer
                        )
                    break
                tokens -= 1
                self._total += 1
                self._running[service] = self._running.get(service, 0) + 1
                del self._waiting[fut]
                fut.set_result(True)
        finally:
            self._tokens = tokens

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()
