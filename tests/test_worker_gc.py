"""The long-running processes' garbage-collection settings (schemas/gc_settings.py), set by
the worker once its app is built (runtime.run) and by the listener once it listens; their
effect on CPU is measured by `hl7bus bench stream` and `hl7bus bench mllp`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hl7bus.schemas.gc_settings import settle_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_gc_freezes_what_start_up_made_and_collects_the_young_less_often() -> None:
    made_at_start_up = [object() for _ in range(10)], {"a": [1]}
    assert gc.is_tracked(made_at_start_up)
    tracked_before = len(gc.get_objects())

    settle_gc()

    assert gc.get_threshold() == (20_000, 20, 20)
    assert gc.get_freeze_count() >= tracked_before // 2
    assert not any(o is made_at_start_up for o in gc.get_objects())  # frozen: never collected
