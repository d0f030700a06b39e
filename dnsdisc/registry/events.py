"""What the registry announces, synchronously, to whoever listens: which service (and, when it was
only one, which instance) changed, which instance's status changed, whose reported figures changed,
which named query changed. Listeners run inside the change, so by the time a write returns every
listener has seen it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, ParamSpec

from dnsdisc.registry.changes import ChangeLog

P = ParamSpec("P")


class Bus(Generic[P]):
    """Listeners of one kind of announcement, called in the order they were added."""

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: list[Callable[P, None]] = []

    def add(self, listener: Callable[P, None]) -> None:
        self._listeners.append(listener)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for listener in self._listeners:
            listener(*args, **kwargs)


class Events:
    """The registry's four buses, and its change index and log (``changes``)."""

    __slots__ = ("changed", "changes", "figures", "queries", "status")

    def __init__(self) -> None:
        # (service, instance id): anything about the service changed, or it is gone; rebuild
        # what derives from it. With an instance id, only that instance changed (or went):
        # what derives from each instance alone may be rebuilt for it alone.
        self.changed: Bus[[str, str | None]] = Bus()
        # (service, instance id, old effective status, new effective status)
        self.status: Bus[[str, str, str, str]] = Bus()
        # (service, instance id, load, latency in ms): reported figures changed, nothing else did
        self.figures: Bus[[str, str, float | None, float | None]] = Bus()
        # (query name): the named query's effective definition changed, or it is gone. Not in
        # the change log: its event kinds are the services' and instances'.
        self.queries: Bus[[str]] = Bus()
        # Every change with its index, for blocking queries and event streams.
        self.changes = ChangeLog()
