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
