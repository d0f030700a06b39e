"""heap: the collector is paused around a bulk build and what was built is frozen; a serving
process's writes are frozen every so many changes (Settler)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from dnsdisc import heap


def test_bulk_pauses_then_freezes_and_restores() -> None:
    assert gc.isenabled()
    before = gc.get_freeze_count()
    try:
        with heap.bulk():
            assert not gc.isenabled()
            built = [[n] for n in range(1000)]  # tracked containers, as an index build makes
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(built)
    finally:
        gc.unfreeze()


def test_bulk_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with heap.bulk():
            pass
        assert not gc.isenabled()
        assert heap.pause() is False
        heap.settle(False)
        assert not gc.isenabled()
    finally:
        gc.unfreeze()
        gc.enable()


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_settler_freezes_after_step_changes_and_not_before() -> None:
    async def go() -> None:
        settler = heap.Settler(step=3, every=0.01)
        before = gc.get_freeze_count()
        settler.changed("web", None)
        settler.changed("web", "a")
        await asyncio.sleep(0.05)
        assert settler.freezes == 0  # 2 changes of 3
        assert gc.get_freeze_count() <= before
        kept = [[n] for n in range(1000)]  # what the changes wrote
        settler.changed("web", "b")
        await asyncio.sleep(0.05)
        assert settler.freezes == 1
        assert gc.get_freeze_count() >= before + len(kept)
        frozen = gc.get_freeze_count()
        settler.changed("web", "c")  # counted from the freeze on
        await asyncio.sleep(0.05)
        assert settler.freezes == 1
        assert gc.get_freeze_count() <= frozen  # (frozen objects freed meanwhile leave it)

    try:
        asyncio.run(go())
    finally:
        gc.unfreeze()


def test_settler_does_not_freeze_cyclic_garbage_of_the_old_generation() -> None:
    async def go() -> weakref.ref[_Cyclic]:
        settler = heap.Settler(step=1, every=0.01)
        garbage = _Cyclic()
        gone = weakref.ref(garbage)
        gc.collect(1)
        gc.collect(1)  # survived the young collections: in the old generation
        assert any(o is garbage for o in gc.get_objects(2))
        del garbage  # cyclic garbage there until a full collection
        settler.changed("web", None)
        await asyncio.sleep(0.05)
        assert settler.freezes == 1
        return gone

    try:
        gone = asyncio.run(go())
        gc.collect()
        assert gone() is None  # frozen, it would have been kept for the life of the process
    finally:
        gc.unfreeze()
