"""heap: the collector is paused around a bulk build and what was built is frozen."""

from __future__ import annotations

import gc

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
