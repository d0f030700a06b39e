"""Building large, long-lived structures without the cyclic garbage collector in the way.

Loading 100k instances creates millions of objects that live as long as the process. Each of
CPython's full collections walks every tracked object, and the collector starts one whenever
the survivors have grown by a quarter, so a cold build spent more than half its time there
(4.7 s of 7.9 s for 10k services in a worker). Around such a build the collector is paused, and
what was built is then moved to the permanent generation (``gc.freeze``), so later collections
no longer walk it. The index and registry hold no reference cycles; a build leaves a handful of
cyclic objects (10 at 10k services), which freezing keeps for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    was_enabled = pause()
    try:
        yield
    finally:
        settle(was_enabled)


def pause() -> bool:
    """Pause the collector until ``settle``; returns whether it was running."""
    was_enabled = gc.isenabled()
    gc.disable()
    return was_enabled


def settle(was_enabled: bool) -> None:
    gc.freeze()
    if was_enabled:
        gc.enable()


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """Around a batch of long-lived objects added while the process serves (a bulk
    registration reaching a DNS worker): as ``bulk``, but the young generations are collected
    before the freeze. A running process has short-lived cycles of its own (a connection's,
    an exception's) at any moment; collected now, they are not frozen for good, which repeated
    batches would otherwise make a slow leak. Inside a paused build it does nothing: the
    build freezes at its end."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.collect(1)
        gc.freeze()
        gc.enable()


class Settler:
    """Freezes what a serving process wrote into its long-lived structures (the main process's
    registry, filled and rewritten over the API after start-up), as ``bulk`` does for what it
    loads at start.

    Unfrozen, 10,000 instances registered over the API kept the main process's full collections
    at 100-350 ms every few seconds with checks running (bench/checks.py), stalling every check
    due meanwhile. After every ``step`` changes, looked at no more than once every ``every`` s
    while changes come, every generation is collected and everything is frozen. Changes, not the
    registry's size: re-registering every instance (to add a check) replaces as many objects as
    registering them did. A full collection, not only the young generations: cyclic garbage that
    reached the old one since the last freeze would otherwise be frozen for good, at every
    freeze; it walks only what is not frozen yet (what came since the last freeze), about what
    the freeze then moves. What freezing keeps for good is then what is alive at that moment
    and becomes cyclic garbage later (a request in flight's): bounded by one freeze per
    ``step`` changes."""

    def __init__(self, step: int = 1000, every: float = 1.0) -> None:
        self._step = step
        self._every = every
        self._changes = 0
        self._armed = False
        self.freezes = 0

    def changed(self, *_: object) -> None:
        """Something was written: look within ``every`` s."""
        self._changes += 1
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_later(self._every, self._look)

    def _look(self) -> None:
        self._armed = False
        if self._changes >= self._step and gc.isenabled():
            gc.collect()
            gc.freeze()
            self._changes = 0
            self.freezes += 1
