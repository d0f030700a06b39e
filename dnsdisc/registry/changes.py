"""The registry's change index: a number that grows with every change (registration,
deregistration, settings, a health state transition, maintenance), the index at which each
service and instance last changed, a bounded log of the changes, and the waiters that blocking
queries and event streams park on.

Where the number comes from: with a shared store (etcd) it is the store's revision of the change
being applied (``revision``, set by the follower), so every node agrees; otherwise a counter
that starts from what the store kept (SQLite keeps a high-water mark a block ahead of the index:
``reserve`` asks for the next block before the index reaches the last, so an index never goes
back after a restart without a write per change).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Changes kept for event streams that resume (Last-Event-ID).
LOG_SIZE = 8192
# Indexes a local store reserves at once (one durable write per block).
BLOCK = 1000

REGISTER, DEREGISTER, HEALTH = "register", "deregister", "health"
SERVICE, SERVICE_DELETED, MAINTENANCE = "service", "service-deleted", "maintenance"


@dataclass(frozen=True, slots=True)
class Change:
    index: int
    kind: str
    service: str
    instance: str | None = None
    data: dict[str, Any] | None = None


class ChangeLog:
    def __init__(self, capacity: int = LOG_SIZE) -> None:
        self.index = 0
        # A shared store's revision of the change being applied (0: count locally).
        self.revision = 0
        self.reserved = 0  # a local store's high-water mark (see ``reserve``)
        self.reserve: Callable[[int], None] | None = None
        self.log: deque[Change] = deque(maxlen=capacity)
        # The log holds every change after this index (the start, or the last one dropped).
        self.floor = 0
        self.started = 0  # the index at start: what had not changed since shows this
        self._services: dict[str, int] = {}
        self._instances: dict[tuple[str, str], int] = {}
        # Parked waiters by service (None: any change), woken on each change of theirs.
        self._waiters: dict[str | None, set[asyncio.Future[None]]] = {}
        # Event streams by the service they follow (None: every change), called on each change of
        # theirs: a change reaches the streams that want it, not every stream to be filtered.
        self._streams: dict[str | None, set[Callable[[Change], None]]] = {}

    def start(self, index: int) -> None:
        """Continue from ``index`` (what the store loaded: a revision or a high-water mark)."""
        self.index = max(self.index, index)
        self.reserved = max(self.reserved, index)
        self.floor = self.started = self.index

    def record(
        self,
        kind: str,
        service: str,
        instance: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Change:
        if self.revision:
            self.index = max(self.index, self.revision)
        else:
            self.index += 1
            if self.reserve is not None and self.index + BLOCK // 2 >= self.reserved:
                self.reserved = self.index + BLOCK
                self.reserve(self.reserved)
        change = Change(self.index, kind, service, instance, data)
        if len(self.log) == self.log.maxlen:
            self.floor = self.log[0].index
        self.log.append(change)
        self._services[service] = change.index
        if instance is not None:
            self._instances[(service, instance)] = change.index
        else:
            # A service's settings or deletion: what its instances show changed too.
            for key in [k for k in self._instances if k[0] == service]:
                self._instances[key] = change.index
        self._wake(None)
        self._wake(service)
        for follows in (None, service):
            streams = self._streams.get(follows)
            if streams:
                for stream in list(streams):
                    stream(change)
        return change

    def index_of(self, service: str | None = None, instance: str | None = None) -> int:
        """The index at which what a GET shows last changed: everything (None), a service, or
        one instance (the start's index: not since the start)."""
        if service is None:
            return self.index
        of_service = self._services.get(service, self.started)
        if instance is None:
            return of_service
        return self._instances.get((service, instance), of_service)

    def since(self, after: int) -> list[Change] | None:
        """Every change after ``after`` still in the log; None when the log no longer reaches
        back that far (the reader must start over)."""
        if after >= self.index:
            return []
        if after < self.floor:
            return None
        return [c for c in self.log if c.index > after]

    async def wait(
        self, after: int, timeout: float, service: str | None = None, instance: str | None = None
    ) -> int:
        """Until what ``index_of(service, instance)`` covers changed after ``after``, or
        ``timeout`` seconds; the index then. An index ahead of ours returns at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            now = self.index_of(service, instance)
            if now > after or after > self.index:
                return now
            left = deadline - loop.time()
            if left <= 0:
                return now
            waiter = loop.create_future()
            parked = self._waiters.setdefault(service, set())
            parked.add(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                return self.index_of(service, instance)
            finally:
                parked.discard(waiter)
                if not parked:
                    self._waiters.pop(service, None)

    def subscribe(
        self, stream: Callable[[Change], None], service: str | None = None
    ) -> Callable[[], None]:
        """Call ``stream`` with every change from now on (of ``service`` only, when given);
        returns the unsubscribe."""
        self._streams.setdefault(service, set()).add(stream)

        def unsubscribe() -> None:
            streams = self._streams.get(service)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[service]

        return unsubscribe

    def _wake(self, key: str | None) -> None:
        parked = self._waiters.get(key)
        if parked:
            for waiter in parked:
                if not waiter.done():
                    waiter.set_result(None)
