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
import heapq
from collections import deque
from collections.abc import Callable

from dnsdisc.health.settings import HealthSettings


class CheckGate:
    def __init__(self, settings: Callable[[], HealthSettings]) -> None:
        self._settings = settings
        # Each service's waiters in the order they asked (seq, future); a future done meanwhile
        # (expired, cancelled) is dropped when it reaches the head. ``_ready``: the services that
        # may start one (waiters, under their own cap) by the seq of their first waiter, so the
        # earliest waiter of a service not at its cap goes first, without looking at the others
        # (a scan of every waiter on each start and end cost O(waiters) per check).
        self._queues: dict[str, deque[tuple[int, asyncio.Future[bool]]]] = {}
        self._ready: list[tuple[int, str]] = []
        self._listed: set[str] = set()
        self._seq = 0
        self._waiters = 0
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
        return self._waiters

    async def enter(self, service: str, deadline: float) -> bool:
        """Wait for a slot until the loop's clock reads ``deadline``; False: none came in time.
        After True, call ``leave(service)`` once the check is over."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._seq += 1
        queue = self._queues.get(service)
        if queue is None:
            queue = self._queues[service] = deque()
        queue.append((self._seq, fut))
        self._waiters += 1
        self._list(service)
        self._wake()
        if fut.done():
            return fut.result()
        expiry = loop.call_at(deadline, self._expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                self._waiters -= 1  # cancelled while waiting: dropped when it reaches the head
            elif fut.result():
                self.leave(service)
            raise
        finally:
            expiry.cancel()

    def leave(self, service: str) -> None:
        self._total -= 1
        left = self._running[service] - 1
        if left:
            self._running[service] = left
        else:
            del self._running[service]
        self._list(service)
        self._wake()

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            self._waiters -= 1
            fut.set_result(False)

    def _list(self, service: str) -> None:
        """Put ``service`` among those that may start a waiter (if it has one)."""
        queue = self._queues.get(service)
        if queue and service not in self._listed:
            self._listed.add(service)
            heapq.heappush(self._ready, (queue[0][0], service))

    def _refill(self, now: float, rate: float) -> float:
        burst = max(1.0, rate)
        tokens = burst if self._tokens is None else self._tokens
        tokens = min(burst, tokens + (now - self._filled) * rate)
        self._filled = now
        return tokens

    def _wake(self) -> None:
        ready = self._ready
        if not ready:
            return
        cfg = self._settings()
        loop = asyncio.get_running_loop()
        tokens = self._refill(loop.time(), cfg.checks_per_second)
        try:
            while ready:
                seq, service = ready[0]
                queue = self._queues[service]
                while queue and queue[0][1].done():
                    queue.popleft()  # expired or cancelled: already counted out
                if not queue:
                    heapq.heappop(ready)
                    self._listed.discard(service)
                    del self._queues[service]
                    continue
                if queue[0][0] != seq:
                    heapq.heapreplace(ready, (queue[0][0], service))
                    continue
                if self._running.get(service, 0) >= cfg.max_concurrent_checks_per_service:
                    # Passed over until one of its checks ends (``leave`` lists it again).
                    heapq.heappop(ready)
                    self._listed.discard(service)
                    continue
                if self._total >= cfg.max_concurrent_checks:
                    break
                if tokens < 1:
                    if self._timer is None:
                        self._timer = loop.call_later(
                            (1 - tokens) / cfg.checks_per_second, self._on_timer
                        )
                    break
                tokens -= 1
                self._total += 1
                self._running[service] = self._running.get(service, 0) + 1
                self._waiters -= 1
                queue.popleft()[1].set_result(True)
                if queue:
                    heapq.heapreplace(ready, (queue[0][0], service))
                else:
                    heapq.heappop(ready)
                    self._listed.discard(service)
                    del self._queues[service]
        finally:
            self._tokens = tokens

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()
