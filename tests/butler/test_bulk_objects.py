"""`butler.utils.bulk_objects`: no collections while a result is built, none of it rescanned after."""

from __future__ import annotations

import gc

from butler.utils import bulk_objects


def test_objects_built_are_frozen_and_the_collector_restored() -> None:
    """100,000 tracked objects: no collection meanwhile, all frozen after, the collector on."""
    gc.enable()
    gc.collect()
    frozen_before = gc.get_freeze_count()
    collections_before = sum(s["collections"] for s in gc.get_stats())
    try:
        with bulk_objects():
            assert not gc.isenabled()
            # lists: always tracked by the collector (dicts of atomic values are not)
            rows = [[i, "r"] for i in range(100_000)]
        assert gc.isenabled()
        # No collection ran while they were made, and they are out of the young generation,
        # so the next collection does not traverse them.
        assert sum(s["collections"] for s in gc.get_stats()) == collections_before
        assert gc.get_freeze_count() - frozen_before >= len(rows)
        assert gc.get_count()[0] < 1000
    finally:
        gc.unfreeze()


def test_a_paused_collector_stays_paused() -> None:
    """Inside a pause (a command's start-up) nothing is frozen and the collector stays off."""
    gc.disable()
    try:
        frozen_before = gc.get_freeze_count()
        with bulk_objects():
            rows = [{"id": i} for i in range(1000)]
        assert not gc.isenabled() and gc.get_freeze_count() == frozen_before and rows
    finally:
        gc.enable()
