"""Append files and compaction (connectors/lake/store.py, compaction.py): corrections, deletes
and merges applied; every subject in one shard, sorted by time; files published atomically, also
when the compacting process is killed with SIGKILL mid-pass and run again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import warehouse_events as ev
from lake_helpers import LAYOUT, append, open_lake, shard_rows, subject_rows

from hl7bus.connectors.lake.check import check_lake
from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.layout import Layout
from hl7bus.connectors.lake.store import DATA_SCHEMA, LakeError, LakeStore

TESTS = Path(__file__).parent
LOCAL_T0 = datetime(2025, 3, 4, 9, 30)  # ev.T0 at the events' +0900


def assert_shards_valid(root: Path, layout: Layout = LAYOUT) -> None:
    """Each subject in exactly one shard, the shard its layout names, its rows contiguous and
    sorted by time (static rows first); every shard has the data schema."""
    seen: dict[int, str] = {}
    for name, rows in shard_rows(root).items():
        assert pq.read_schema(root / name).remove_metadata() == DATA_SCHEMA
        previous: tuple[int, Any] | None = None
        for row in rows:
            subject = row["subject_id"]
            if previous is None or previous[0] != subject:
                assert subject not in seen, f"subject in {seen.get(subject)} and {name}"
                seen[subject] = name
                assert layout.shard_path(subject) == name
            elif row["time"] is not None:
                assert previous[1] is None or previous[1] <= row["time"]
            previous = (subject, row["time"])


def test_rows_land_in_one_shard_per_subject_sorted_by_time(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    later = ev.T0 + timedelta(hours=1)
    append(store, [(subject, ev.observation(event_time=later)) for subject in range(1, 40)])
    append(store, [(subject, ev.patient()) for subject in range(1, 40)])
    append(store, [(7, ev.diagnosis(diagnosis_time=ev.T0 - timedelta(days=1)))])
    done = compact(store)
    assert done.files == 3 and store.pending_files() == []
    assert_shards_valid(tmp_path)
    rows = subject_rows(tmp_path)
    assert len(rows) == 39
    # Static sex first, then birth (1980), the diagnosis, the result.
    assert [code for _, code, _, _ in rows[7]] == [
        "GENDER/M",
        "MEDS_BIRTH",
        "KCD8/J18.9",
        "LOINC/2160-0",
    ]
    assert {name.split("/")[1] for name in shard_rows(tmp_path)} == {"train", "tuning", "held_out"}


def test_corrections_deletes_and_cancels_are_applied_not_appended(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    result_b = ev.pseudonym("result-2")
    append(store, [(1, ev.observation()), (1, ev.observation(result_key=result_b))])
    append(store, [(1, ev.encounter()), (2, ev.observation(result_key=ev.pseudonym("r-2")))])
    compact(store)
    # In one batch: the first result corrected twice; the second deleted; the visit cancelled.
    append(
        store,
        [
            (1, ev.observation(result_status="C", value_numeric_ucum=2.0)),
            (1, ev.observation(result_status="C", value_numeric_ucum=3.0)),
            (1, ev.observation(result_key=result_b, result_status="D")),
            (1, ev.encounter("cancel_admit")),
        ],
    )
    compact(store)
    rows = subject_rows(tmp_path)
    assert rows[1] == [(LOCAL_T0, "LOINC/2160-0", 3.0, None)]
    assert rows[2] == [(LOCAL_T0, "LOINC/2160-0", pytest.approx(1.17), None)]  # float32


def test_a_subject_left_without_rows_leaves_no_shard(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    append(store, [(5, ev.observation())])
    compact(store)
    assert len(shard_rows(tmp_path)) == 1
    append(store, [(5, ev.observation(result_status="D"))])
    done = compact(store)
    assert shard_rows(tmp_path) == {} and len(done.shards) == 1


def test_merge_moves_the_retired_subjects_rows_to_the_survivor(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    retired, survivor = 11, 12
    assert LAYOUT.shard_path(retired) != LAYOUT.shard_path(survivor)
    append(
        store,
        [
            (retired, ev.observation(result_key=ev.pseudonym("r-old"))),
            (survivor, ev.observation()),
        ],
    )
    compact(store)
    append(store, [(survivor, ev.patient())], merged_from={0: retired})
    compact(store)
    rows = subject_rows(tmp_path)
    assert retired not in rows
    assert [code for _, code, _, _ in rows[survivor]].count("LOINC/2160-0") == 2
    assert_shards_valid(tmp_path)


def test_compacting_the_same_append_files_again_changes_nothing(tmp_path: Path) -> None:
    store = open_lake(tmp_path / "lake")
    append(store, [(s, ev.observation()) for s in range(1, 9)])
    compact(store)
    append(store, [(s, ev.observation(result_status="C", value_numeric_ucum=9.0)) for s in (2, 3)])
    append(store, [(4, ev.observation(result_status="X"))])
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "lake" / "_hl7bus" / "pending", saved)
    compact(store)
    once = shard_rows(tmp_path / "lake")
    # As if killed after publishing the shards but before removing the append files.
    for path in saved.iterdir():
        shutil.copy(path, tmp_path / "lake" / "_hl7bus" / "pending" / path.name)
    compact(open_lake(tmp_path / "lake"))
    assert shard_rows(tmp_path / "lake") == once


def test_a_lake_folder_that_is_not_writable_is_refused_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LakeError, match=r"lake folder .*file/lake is not writable"):
        LakeStore(blocker / "lake", LAYOUT).open()


def test_a_lake_keeps_the_layout_it_was_made_with(tmp_path: Path) -> None:
    open_lake(tmp_path)
    other = Layout(LAYOUT.split_key, LAYOUT.ratios, 8)
    with pytest.raises(LakeError, match="shards_per_split"):
        LakeStore(tmp_path, other).open()


# The child compacts the lake and stops for good at its first step of kind STOP_AT (a shard's
# temporary file written, or a shard published): the parent kills it there with SIGKILL.
_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hl7bus.connectors.lake.compaction import compact
    from lake_helpers import open_lake

    root, stop_at = Path(sys.argv[1]), sys.argv[2]

    def progress(step, path):
        if step == stop_at and "/data/" in path:
            print("stopped", flush=True)
            sys.stdin.readline()  # never answered: the parent kills us here

    compact(open_lake(root), progress)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("stop_at", ["written", "published"])
def test_compaction_killed_mid_pass_leaves_a_valid_lake_and_finishes_on_restart(
    tmp_path: Path, stop_at: str
) -> None:
    root = tmp_path / "lake"
    store = open_lake(root)
    append(store, [(s, ev.observation()) for s in range(1, 60)])
    compact(store)
    before = shard_rows(root)
    append(
        store,
        [(s, ev.observation(result_status="C", value_numeric_ucum=7.5)) for s in range(1, 60)],
    )
    append(store, [(s, ev.patient()) for s in range(1, 60, 2)])
    expected_root = tmp_path / "expected"
    shutil.copytree(root, expected_root)
    compact(LakeStore(expected_root, LAYOUT))
    expected = shard_rows(expected_root)

    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), stop_at],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"stopped\n"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()

    # Killed: every shard is the old or the new one, readable, valid; the append files stay.
    after_kill = shard_rows(root)
    assert after_kill != expected or stop_at == "published"
    for name, rows in after_kill.items():
        assert rows in (before.get(name), expected.get(name)), name
    assert_shards_valid(root)
    assert len(LakeStore(root, LAYOUT).pending_files()) == 2
    assert bool(list(root.rglob(".*.tmp"))) == (stop_at == "written")
    assert ds.dataset(root / "data", format="parquet").to_table().num_rows == sum(
        len(rows) for rows in after_kill.values()
    )
    # Restarted: the stale temporary file goes, the pass is redone, the result is the same.
    restarted = open_lake(root)
    assert not list(root.rglob(".*.tmp"))
    compact(restarted)
    assert shard_rows(root) == expected
    assert_shards_valid(root)
    assert check_lake(root).problems == []  # `hl7bus lake check`
