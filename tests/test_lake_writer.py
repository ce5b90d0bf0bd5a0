"""One batch into the lake (connectors/lake/writer.py) with the warehouse's real key map on
DuckDB: subject ids are the warehouse's person ids; records that cannot become rows are
reported for the DLQ with their reason; the not-writable folder is refused by the CLI."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import warehouse_events as ev
from lake_helpers import open_lake, subject_rows
from typer.testing import CliRunner

from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.keys import WarehouseKeys
from hl7bus.connectors.lake.writer import ROWS, LakeWriter
from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.writer import DLQ, SKIPPED, WRITTEN, BatchWriter, Incoming
from hl7bus.ops.cli import app


def test_subject_ids_are_the_warehouse_person_ids(tmp_path: Path) -> None:
    warehouse = WarehouseConfig(path=tmp_path / "warehouse.duckdb")
    alice, bob = ev.pseudonym("alice"), ev.pseudonym("bob")
    # The warehouse sees bob first, then alice; the lake sees them the other way round.
    engine = open_engine(warehouse)
    BatchWriter(engine, NoVocabulary()).write(
        [Incoming(ev.encode(ev.patient(patient_key=key))) for key in (bob, alice)]
    )
    persons = dict(engine.query("SELECT person_source_value, person_id FROM person"))
    engine.close()

    keys = WarehouseKeys(warehouse)
    keys.open()
    store = open_lake(tmp_path / "lake")
    records = [
        ev.patient(patient_key=alice, birth_year=1971),
        ev.observation(patient_key=alice),
        ev.patient(patient_key=bob, birth_year=1990),
        ev.patient(patient_key=ev.pseudonym("carol"), birth_year=2001),
    ]
    try:
        outcome = LakeWriter(store, keys).write([Incoming(ev.encode(r)) for r in records])
    finally:
        keys.close()
    assert outcome.results == [WRITTEN] * 4 and outcome.rows[ROWS] == 7
    compact(store)
    rows = subject_rows(tmp_path / "lake")
    births = {
        subject: row[0].year
        for subject, found in rows.items()
        for row in found
        if row[1] == "MEDS_BIRTH"
    }
    assert births[persons[alice]] == 1971 and births[persons[bob]] == 1990
    # carol was new to both: the key map handed her the next id, which the warehouse will use.
    assert set(births) - set(persons.values()) == {max(births)}
    assert max(births) > max(persons.values())


def test_records_that_cannot_become_rows_are_reported_with_their_reason(tmp_path: Path) -> None:
    keys = WarehouseKeys(WarehouseConfig(path=tmp_path / "warehouse.duckdb"))
    keys.open()
    store = open_lake(tmp_path / "lake")
    records = [
        Incoming(b"not an avro record"),
        Incoming(ev.encode(ev.diagnosis(code=None, standard_code=None))),
        Incoming(ev.encode(ev.observation(patient_key=None))),
        Incoming(ev.encode(ev.order())),
        Incoming(ev.encode(ev.observation(result_status="P"))),
        Incoming(ev.encode(ev.observation())),
    ]
    try:
        outcome = LakeWriter(store, keys).write(records)
    finally:
        keys.close()
    assert outcome.results == [DLQ, DLQ, DLQ, SKIPPED, SKIPPED, WRITTEN]
    assert outcome.reasons[:5] == [
        "undecodable",
        "no_code",
        "no_patient_key",
        "no_meds_row",
        "result_status",
    ]
    assert outcome.event_types[1:3] == ["Diagnosis", "Observation"]
    (pending,) = store.pending_files()
    assert pq.read_table(pending).num_rows == 1


def test_sink_lake_refuses_a_lake_folder_that_is_not_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("HL7BUS_LAKE_PATH", str(blocker / "lake"))
    monkeypatch.setenv("HL7BUS_WAREHOUSE_PATH", str(tmp_path / "warehouse.duckdb"))
    result = CliRunner().invoke(app, ["sink", "lake"])
    assert result.exit_code == 2
    assert "is not writable" in result.output and "file/lake" in result.output


def test_a_merge_the_warehouse_applied_first_still_moves_the_lake_rows(tmp_path: Path) -> None:
    """The A40 reaches the warehouse first: its key map now names the survivor for the retired
    key, and the lake still finds the retired subject's rows (its own record of ids)."""
    warehouse = WarehouseConfig(path=tmp_path / "warehouse.duckdb")
    old, survivor = ev.pseudonym("old-chart"), ev.pseudonym("survivor")
    store = open_lake(tmp_path / "lake")

    def lake_write(*events: dict[str, object]) -> None:
        keys = WarehouseKeys(warehouse)
        keys.open()
        try:
            LakeWriter(store, keys).write([Incoming(ev.encode(e)) for e in events])
        finally:
            keys.close()

    lake_write(ev.patient(patient_key=old, birth_year=1950), ev.observation(patient_key=old))
    lake_write(ev.patient(patient_key=survivor, birth_year=1950))
    compact(store)
    assert len(subject_rows(tmp_path / "lake")) == 2
    merge = ev.patient(patient_key=survivor, merged_from_patient_key=old, trigger_event="A40")
    engine = open_engine(warehouse)
    BatchWriter(engine, NoVocabulary()).write(
        [Incoming(ev.encode(ev.patient(patient_key=k))) for k in (old, survivor)]
        + [Incoming(ev.encode(merge))]
    )
    engine.close()
    lake_write(merge)
    compact(store)
    rows = subject_rows(tmp_path / "lake")
    assert len(rows) == 1
    [codes] = [[code for _, code, _, _ in found] for found in rows.values()]
    assert "LOINC/2160-0" in codes and codes.count("MEDS_BIRTH") == 1
