"""Readiness of the worker: the stall rule of streams/stage.Progress, and the config fields."""

from __future__ import annotations

import pytest

from hl7bus.streams.runtime import WorkerConfig
from hl7bus.streams.stage import Progress


def test_a_partition_with_waiting_records_that_does_not_move_is_stalled() -> None:
    progress = Progress()
    committed = {"p0": 10, "p1": 0}
    # Nothing waiting: never stalled, however long.
    assert progress.stalled({"p0": 10, "p1": 0}, committed, 0.0, 5.0) == []
    assert progress.stalled({"p0": 10, "p1": 0}, committed, 100.0, 5.0) == []
    # Records arrive in p0; the clock starts now.
    assert progress.stalled({"p0": 12, "p1": 0}, committed, 101.0, 5.0) == []
    assert progress.stalled({"p0": 12, "p1": 0}, committed, 105.0, 5.0) == []
    assert progress.stalled({"p0": 12, "p1": 0}, committed, 107.0, 5.0) == ["p0"]
    # Processing moves it again; caught up it is idle.
    progress.processed("p0", 10, 108.0)
    assert progress.stalled({"p0": 12, "p1": 0}, committed, 110.0, 5.0) == []
    progress.processed("p0", 11, 111.0)
    assert progress.stalled({"p0": 12, "p1": 0}, committed, 200.0, 5.0) == []
    # An unknown high watermark (nothing fetched yet) is not a stall.
    assert progress.stalled({"p1": None}, committed, 300.0, 5.0) == []


def test_worker_config_fields() -> None:
    cfg = WorkerConfig()
    assert cfg.metrics_port == 9465 and cfg.dedupe_window_s == 7 * 24 * 3600
    assert WorkerConfig(metrics_port=None).metrics_port is None
    with pytest.raises(ValueError):
        WorkerConfig(dedupe_window_s=0)
