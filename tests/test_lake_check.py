"""`hl7bus lake check` (connectors/lake/check.py): a compacted lake passes; each broken rule,
per file (the meds schemas) and across files, is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import warehouse_events as ev
from lake_helpers import append, open_lake
from typer.testing import CliRunner

from hl7bus.connectors.lake.check import check_lake
from hl7bus.connectors.lake.compaction import compact
from hl7bus.ops.cli import app


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    store = open_lake(root)
    append(store, [(s, ev.observation()) for s in range(1, 30)])
    append(store, [(s, ev.patient()) for s in range(1, 30)])
    compact(store)
    return root


def one_shard(root: Path) -> Path:
    """A shard holding several subjects."""
    for path in sorted((root / "data").glob("*/*.parquet")):
        if len(set(pq.read_table(path)["subject_id"].to_pylist())) > 1:
            return path
    raise AssertionError("no shard with two subjects")


def test_a_compacted_lake_passes(lake: Path) -> None:
    report = check_lake(lake)
    assert report.problems == []
    assert (report.subjects, report.rows) == (29, 29 * 3)
    assert report.shards > 3 and report.codes == 3


def test_a_subject_in_two_shards(lake: Path) -> None:
    shard = one_shard(lake)
    other = "tuning" if shard.parent.name != "tuning" else "train"
    shutil.copy(shard, lake / "data" / other / "99.parquet")
    problems = check_lake(lake).problems
    assert any("subjects in more than one shard" in p for p in problems)
    assert any("not in the folder of their split" in p for p in problems)


def test_rows_out_of_order_and_not_contiguous(lake: Path) -> None:
    shard = one_shard(lake)
    table = pq.read_table(shard)
    pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), shard)
    problems = check_lake(lake).problems
    assert any("not sorted by time" in p for p in problems)
    interleaved = table.take([0, table.num_rows - 1, *range(1, table.num_rows - 1)])
    pq.write_table(interleaved, shard)
    assert any("not contiguous" in p for p in check_lake(lake).problems)


def test_codes_and_splits_must_cover_the_data(lake: Path) -> None:
    codes = pq.read_table(lake / "metadata" / "codes.parquet")
    pq.write_table(
        codes.filter(pa.compute.not_equal(codes["code"], "MEDS_BIRTH")),
        lake / "metadata" / "codes.parquet",
    )
    splits = pq.read_table(lake / "metadata" / "subject_splits.parquet")
    pq.write_table(splits.slice(1), lake / "metadata" / "subject_splits.parquet")
    problems = check_lake(lake).problems
    assert "1 codes of the data not listed in metadata/codes.parquet (e.g. MEDS_BIRTH)" in problems
    assert any(p.startswith("1 subjects missing from metadata/subject_splits") for p in problems)


def test_a_shard_that_is_not_meds(lake: Path) -> None:
    shard = one_shard(lake)
    table = pq.read_table(shard)
    pq.write_table(table.set_column(1, "time", table["time"].cast(pa.string())), shard)
    problems = check_lake(lake).problems
    assert any(
        p.startswith(f"data/{shard.parent.name}/{shard.name}: not DataSchema") for p in problems
    )


def test_missing_metadata(lake: Path) -> None:
    (lake / "metadata" / "dataset.json").unlink()
    assert check_lake(lake).problems == ["metadata/dataset.json: missing"]


def test_cli_check(lake: Path) -> None:
    runner = CliRunner()
    passed = runner.invoke(app, ["lake", "check", str(lake)])
    assert passed.exit_code == 0, passed.output
    assert "valid MEDS 0.4" in passed.output
    (lake / "metadata" / "codes.parquet").unlink()
    failed = runner.invoke(app, ["lake", "check", str(lake)])
    assert failed.exit_code == 1
    assert "metadata/codes.parquet: missing" in failed.output
