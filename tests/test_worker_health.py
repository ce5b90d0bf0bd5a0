"""Readiness of the worker: the stall rules of streams/stage.Progress (processing and
offset commits), and the config fields."""

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


def test_processed_records_waiting_for_a_commit_that_does_not_move_stall_the_commit() -> None:
    progress = Progress()
    # Nothing processed yet, nothing committed: nothing waits for a commit.
    assert progress.commit_stalled({"p0": None, "p1": 5}, 0.0, 30.0) == []
    assert progress.commit_stalled({"p0": None, "p1": 5}, 100.0, 30.0) == []
    # p0 processed up to offset 9 (next 10); its commit has not come since the last look
    # with nothing waiting (100.0).
    progress.processed("p0", 9, 101.0)
    assert progress.commit_stalled({"p0": None, "p1": 5}, 102.0, 30.0) == []
    assert progress.commit_stalled({"p0": None, "p1": 5}, 129.0, 30.0) == []
    assert progress.commit_stalled({"p0": None, "p1": 5}, 131.0, 30.0) == ["p0"]
    # The commit moves (not yet all the way): the clock starts again.
    assert progress.commit_stalled({"p0": 4, "p1": 5}, 134.0, 30.0) == []
    assert progress.commit_stalled({"p0": 4, "p1": 5}, 160.0, 30.0) == []
    assert progress.commit_stalled({"p0": 4, "p1": 5}, 165.0, 30.0) == ["p0"]
    # Committed up to what was processed: nothing waits, however long.
    assert progress.commit_stalled({"p0": 10, "p1": 5}, 166.0, 30.0) == []
    assert progress.commit_stalled({"p0": 10, "p1": 5}, 900.0, 30.0) == []


def test_worker_config_fields() -> None:
    cfg = WorkerConfig()
    assert cfg.metrics_port == 9465 and cfg.dedupe_window_s == 7 * 24 * 3600
    assert WorkerConfig(metrics_port=None).metrics_port is None
    with pytest.raises(ValueError):
        WorkerConfig(dedupe_window_s=0)
