"""A lake on a pyarrow filesystem other than a plain folder (connectors/lake/store.py): a
file:// URI, a SubTreeFileSystem (the generic, non-local publication: a temporary object moved
over the old one) and pyarrow's in-memory mock filesystem. No object store runs here; these
are the filesystems pyarrow offers without one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
import warehouse_events as ev
from lake_helpers import LAYOUT, append, shard_rows

from hl7bus.connectors.lake.check import check_lake
from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.config import LakeConfig
from hl7bus.connectors.lake.store import LakeError, LakeStore, redacted


def _fill(store: LakeStore) -> None:
    """Two passes over the same subjects: a result, a correction of it, patients, a delete."""
    store.open()
    later = ev.T0 + timedelta(hours=1)
    append(store, [(subject, ev.observation(event_time=later)) for subject in range(1, 25)])
    append(store, [(subject, ev.patient()) for subject in range(1, 25)])
    compact(store)
    append(store, [(3, ev.observation(value="9.9", result_status="C", event_time=later))])
    append(store, [(5, ev.observation(result_status="D", event_time=later))])
    compact(store)


def _rows(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every shard's rows but their event ids (each run of the builders makes new ones)."""
    return {
        name: [{k: v for k, v in row.items() if k != "event_id"} for row in rows]
        for name, rows in shard_rows(root).items()
    }


def _expected(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """The same lake in a plain folder: the reference."""
    root = tmp_path / "reference"
    _fill(LakeStore(root, LAYOUT))
    return _rows(root)


def test_a_file_uri_is_the_local_folder(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    store = LakeStore(f"file://{root}", LAYOUT)
    assert store.local and store.base == str(root)
    _fill(store)
    assert _rows(root) == _expected(tmp_path)
    assert check_lake(f"file://{root}").problems == []
    assert store.pending_files() == []


def test_a_lake_through_the_generic_filesystem_path_matches_the_local_one(
    tmp_path: Path,
) -> None:
    # A SubTreeFileSystem is not a LocalFileSystem: writes go through open_output_stream and
    # move, as on an object store, onto a real folder the test can read back directly.
    subtree = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = LakeStore("lake", LAYOUT, filesystem=subtree)
    assert not store.local
    _fill(store)
    root = tmp_path / "lake"
    assert _rows(root) == _expected(tmp_path)
    assert not list(root.rglob(".*.tmp"))
    assert check_lake(root).problems == []  # read as a plain folder
    report = check_lake("lake", filesystem=subtree)  # and through the filesystem
    assert report.problems == [] and report.subjects == 24 and report.shards > 1
    table = ds.dataset("lake/data", filesystem=subtree, format="parquet").to_table()
    assert table.num_rows == report.rows


def test_a_lake_on_the_mock_filesystem_is_valid_and_reopens(tmp_path: Path) -> None:
    mock = pafs._MockFileSystem()
    store = LakeStore("bucket/lake", LAYOUT, filesystem=mock)
    _fill(store)
    report = check_lake("bucket/lake", filesystem=mock)
    assert report.problems == [] and report.subjects == 24
    names = {
        info.path.removeprefix("bucket/lake/")
        for info in mock.get_file_info(pafs.FileSelector("bucket/lake/data", recursive=True))
        if info.type == pafs.FileType.File
    }
    assert names == set(_expected(tmp_path))
    # Reopened with another layout: refused, as a folder would be.
    other = LakeStore("bucket/lake", LAYOUT.__class__(b"another key", (0.6, 0.2, 0.2), 4), mock)
    with pytest.raises(LakeError, match="another split key"):
        other.open()


def test_a_pass_that_fails_mid_publication_leaves_old_shards_and_is_redone(
    tmp_path: Path,
) -> None:
    """On the generic path, a pass stopped after a temporary object was written and before it
    was moved: every shard is still the old one, readable and valid; the next pass finishes."""
    subtree = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    store = LakeStore("lake", LAYOUT, filesystem=subtree)
    store.open()
    later = ev.T0 + timedelta(hours=1)
    append(store, [(subject, ev.observation(event_time=later)) for subject in range(1, 25)])
    compact(store)
    root = tmp_path / "lake"
    before = shard_rows(root)
    append(store, [(subject, ev.patient()) for subject in range(1, 25)])

    class Stop(Exception):
        pass

    def stop_at_first_write(step: str, path: str) -> None:
        if step == "written":
            assert Path(tmp_path, path).name.startswith(".")  # the temporary object
            raise Stop

    with pytest.raises(Stop):
        compact(store, progress=stop_at_first_write)
    assert shard_rows(root) == before
    assert not list(root.rglob(".*.tmp"))  # the failed write's temporary object is gone
    assert len(store.pending_files()) == 1
    compact(store)
    assert store.pending_files() == []
    assert check_lake(root).problems == []
    assert shard_rows(root) != before


def test_a_uri_pyarrow_does_not_know_is_a_clear_error() -> None:
    with pytest.raises(LakeError, match=r"lake.path nosuch://x: not a filesystem URI"):
        LakeStore("nosuch://x", LAYOUT)
    assert check_lake("nosuch://x").problems[0].startswith("lake.path nosuch://x")


def test_lake_path_keeps_a_uri_as_written_and_messages_hide_its_credentials(
    tmp_path: Path,
) -> None:
    assert LakeConfig(path="s3://bucket/prefix/lake").path == "s3://bucket/prefix/lake"
    assert LakeConfig(path=tmp_path).path == str(tmp_path)
    assert redacted("s3://KEY:SECRET@bucket/lake") == "s3://***@bucket/lake"
    assert redacted("/srv/lake") == "/srv/lake"
