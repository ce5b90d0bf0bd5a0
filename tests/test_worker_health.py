"""Readiness of the worker: the stall rules of streams/stage.Progress (processing and
offset commits), the watchdog's rules (streams/watchdog.py), and the config fields."""

from __future__ import annotations

import pytest

from hl7bus.streams.stage import Progress
from hl7bus.streams.watchdog import Watchdog
from hl7bus.streams.worker_config import WorkerConfig


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


def test_a_partition_back_from_another_worker_counts_from_its_committed_offset() -> None:
    progress = Progress()
    progress.processed("p0", 9, 0.0)  # this worker got to 10, then lost the partition
    # Back, committed at 50 by the other worker, nothing new: nothing waits.
    assert progress.stalled({"p0": 50}, {"p0": 50}, 1.0, 5.0) == []
    assert progress.stalled({"p0": 50}, {"p0": 50}, 100.0, 5.0) == []


def test_no_clock_runs_while_a_rebalance_or_recovery_holds_every_partition() -> None:
    progress = Progress()
    progress.processed("p0", 9, 0.0)
    assert progress.stalled({"p0": 20}, {"p0": 5}, 1.0, 5.0) == []
    assert progress.commit_stalled({"p0": 5}, 1.0, 5.0) == []
    progress.paused(100.0)  # a long recovery ends at 100
    assert progress.stalled({"p0": 20}, {"p0": 5}, 101.0, 5.0) == []
    assert progress.commit_stalled({"p0": 5}, 101.0, 5.0) == []
    assert progress.stalled({"p0": 20}, {"p0": 5}, 106.0, 5.0) == ["p0"]
    assert progress.commit_stalled({"p0": 5}, 106.0, 5.0) == ["p0"]


def test_the_watchdog_ends_a_rebalance_or_recovery_that_makes_no_progress() -> None:
    dog = Watchdog(60.0)
    assert dog.check(0.0, busy=False, position=(0, 0)) is None
    # A recovery that keeps reading is never stuck, however long it takes.
    for t in range(0, 600, 30):
        assert dog.check(float(t), busy=True, position=(1, t)) is None
    # It stops reading: stuck once the limit has passed.
    assert dog.check(600.0, busy=True, position=(1, 570)) is None
    assert dog.check(630.0, busy=True, position=(1, 570)) is None
    reason = dog.check(631.0, busy=True, position=(1, 570))
    assert reason is not None and "no progress for 61 s" in reason
    # Done, then busy again: the clock starts again.
    assert dog.check(700.0, busy=False, position=(1, 600)) is None
    assert dog.check(701.0, busy=True, position=(1, 600)) is None
    assert dog.check(760.0, busy=True, position=(1, 600)) is None
    # Another rebalance is progress too.
    assert dog.check(770.0, busy=True, position=(2, 600)) is None
    assert dog.check(829.0, busy=True, position=(2, 600)) is None


def test_the_watchdog_ends_stalled_partitions_and_commits() -> None:
    dog = Watchdog(60.0)
    reason = dog.check(0.0, busy=False, position=None, stalled=["hl7.raw[3]"])
    assert reason is not None and "hl7.raw[3]" in reason and "stopped fetching" in reason
    reason = dog.check(0.0, busy=False, position=None, commit_stalled=["hl7.raw[1]"])
    assert reason is not None and "offset commits of partition(s) hl7.raw[1]" in reason


def test_the_watchdog_limit_is_configurable_and_can_be_off() -> None:
    assert WorkerConfig().watchdog_s == 300.0
    assert WorkerConfig(watchdog_s=None).watchdog_s is None
    with pytest.raises(ValueError):
        WorkerConfig(watchdog_s=0)
