"""The MEDS metadata (connectors/lake/metadata.py, layout.py): dataset.json, codes.parquet with
every code of the data, subject_splits.parquet with a deterministic keyed split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import warehouse_events as ev
from lake_helpers import LAYOUT, append, open_lake, shard_rows
from meds.schema import CodeMetadataSchema, DatasetMetadataSchema, SubjectSplitSchema

from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.layout import SPLITS, Layout
from hl7bus.connectors.lake.metadata import parent_codes


def test_codes_list_every_code_of_the_data_with_descriptions_and_parents(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    append(store, [(1, ev.observation()), (1, ev.diagnosis()), (2, ev.patient())])
    compact(store)
    append(store, [(3, ev.medication()), (3, ev.document())])
    compact(store)
    codes = pq.read_table(tmp_path / "metadata" / "codes.parquet")
    CodeMetadataSchema.validate(codes)
    listed = {row["code"]: row for row in codes.to_pylist()}
    in_data = {row["code"] for rows in shard_rows(tmp_path).values() for row in rows}
    assert in_data <= set(listed)
    assert listed["LOINC/2160-0"]["description"] == "Creatinine"
    assert listed["KCD8/J18.9"]["parent_codes"] == ["KCD8/J18"]
    assert listed["MEDS_BIRTH"]["parent_codes"] == []


def test_parent_codes_only_for_dotted_diagnosis_families() -> None:
    assert parent_codes("KCD7/E11.9") == ["KCD7/E11"]
    assert parent_codes("ICD10CM/I10") == []
    assert parent_codes("LOINC/2345-7") == []


def test_splits_cover_every_subject_and_follow_the_keyed_hash(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    append(store, [(subject, ev.observation()) for subject in range(1, 301)])
    compact(store)
    append(store, [(subject, ev.patient()) for subject in range(290, 321)])
    compact(store)
    splits = pq.read_table(tmp_path / "metadata" / "subject_splits.parquet")
    SubjectSplitSchema.validate(splits)
    assigned = dict(zip(splits["subject_id"].to_pylist(), splits["split"].to_pylist(), strict=True))
    assert set(assigned) == set(range(1, 321))
    assert all(assigned[s] == LAYOUT.place(s)[0] for s in assigned)
    # Each subject's shard is in its split's folder.
    for name, rows in shard_rows(tmp_path).items():
        assert {assigned[row["subject_id"]] for row in rows} == {name.split("/")[1]}


def test_split_is_deterministic_keyed_and_follows_the_ratios() -> None:
    subjects = range(1, 5001)
    layout = Layout(b"key-a", (0.7, 0.2, 0.1), 3)
    counts = Counter(layout.place(s)[0] for s in subjects)
    assert set(counts) == set(SPLITS)
    # 5000 draws: each share is within 2.5 points of its ratio (a fixed key: not a flaky test).
    assert abs(counts["train"] / 5000 - 0.7) < 0.025
    assert abs(counts["tuning"] / 5000 - 0.2) < 0.025
    assert abs(counts["held_out"] / 5000 - 0.1) < 0.025
    again = Layout(b"key-a", (0.7, 0.2, 0.1), 3)
    assert [again.place(s) for s in subjects] == [layout.place(s) for s in subjects]
    other = Layout(b"key-b", (0.7, 0.2, 0.1), 3)
    moved = sum(other.place(s)[0] != layout.place(s)[0] for s in subjects)
    assert moved > 1000  # another key, another split
    everyone_trains = Layout(b"key-a", (1.0, 0.0, 0.0), 2)
    assert {everyone_trains.place(s)[0] for s in subjects} == {"train"}


def test_dataset_json_is_valid_meds_and_keeps_its_creation_time(tmp_path: Path) -> None:
    store = open_lake(tmp_path)
    compact(store, dataset_name="ward-lake")  # a new lake: valid and empty
    path = tmp_path / "metadata" / "dataset.json"
    first = json.loads(path.read_text())
    DatasetMetadataSchema.validate(first)
    assert pq.read_table(tmp_path / "metadata" / "codes.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "metadata" / "subject_splits.parquet").num_rows == 0
    append(store, [(1, ev.observation())])
    compact(store, dataset_name="ward-lake")
    second = json.loads(path.read_text())
    assert second["dataset_name"] == "ward-lake" and second["meds_version"] == "0.4.1"
    assert second["created_at"] == first["created_at"]
    assert second["code_modifier_columns"] == ["unit"]
