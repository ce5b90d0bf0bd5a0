"""The batch writer on both engines: the same cases on DuckDB and on a real PostgreSQL.

Streaming semantics (docs/omop-mapping.md): redelivery changes nothing; corrections replace,
deletes remove; A08 updates, A11 cancels, A13 reopens, A12 undoes a transfer, A40 merges;
observation periods follow the facts; one death row per person; refused records go to the DLQ
while the rest of the batch is written.
"""

from __future__ import annotations

import gc
import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
import warehouse_events as ev
from postgres_server import fresh_database, url_of
from samples import feed
from typer.testing import CliRunner

from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import create_schema, open_engine
from hl7bus.connectors.warehouse.duckdb_engine import DuckDBEngine
from hl7bus.connectors.warehouse.engine import Engine, transaction
from hl7bus.connectors.warehouse.omop import ResultStatuses
from hl7bus.connectors.warehouse.postgres_engine import PostgresEngine
from hl7bus.connectors.warehouse.vocabulary import (
    VocabularyLookup,
    load_duckdb,
    load_postgresql,
    sample_folder,
)
from hl7bus.connectors.warehouse.writer import DLQ, WRITTEN, BatchWriter, Incoming, Outcome
from hl7bus.ops.cli import app

DAY = timedelta(days=1)
T0 = ev.T0
SEOUL = datetime(2025, 3, 4, 9, 30)  # T0 on the sender's clock
CLINICAL = (
    "person",
    "location",
    "death",
    "observation_period",
    "visit_occurrence",
    "visit_detail",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "note",
    "specimen",
)


def write(engine: Engine, *events: dict[str, Any], **statuses: Any) -> Outcome:
    writer = BatchWriter(engine, NoVocabulary(), ResultStatuses(**statuses))
    return writer.write([Incoming(ev.encode(event)) for event in events])


def select(
    engine: Engine, table: str, columns: str = "*", where: str = ""
) -> list[tuple[Any, ...]]:
    clause = f" WHERE {where}" if where else ""
    return engine.query(f"SELECT {columns} FROM {engine.table(table)}{clause} ORDER BY 1")


def count(engine: Engine, table: str) -> int:
    return int(engine.query(f"SELECT count(*) FROM {engine.table(table)}")[0][0])


def person_id(engine: Engine, patient_key: str) -> int:
    [(found,)] = engine.query(
        f"SELECT person_id FROM {engine.table('person')} WHERE person_source_value = %s",
        [patient_key],
    )
    return int(found)


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    return {table: select(engine, table) for table in CLINICAL}


def period(engine: Engine, patient_key: str) -> list[tuple[Any, ...]]:
    return select(
        engine,
        "observation_period",
        "observation_period_start_date, observation_period_end_date",
        f"person_id = {person_id(engine, patient_key)}",
    )


# -- the whole path -----------------------------------------------------------------------------


def test_every_event_type_lands_and_no_identifier_does(engine: Engine) -> None:
    messages = [*ev.golden_messages(), *feed()[:40]]
    outcome = BatchWriter(engine, NoVocabulary()).write(
        [Incoming(value) for value in ev.research_values(messages)]
    )
    assert DLQ not in outcome.results
    for table in CLINICAL:
        if table != "death":  # no message of these has died
            assert count(engine, table) > 0, table
    text = repr(dump(engine))
    for identifier in ev.identifiers(messages):
        assert identifier not in text
    # No vocabulary loaded: every coded fact is concept 0, its source value kept.
    assert select(engine, "measurement", "DISTINCT measurement_concept_id") == [(0,)]
    assert all(value for (value,) in select(engine, "measurement", "measurement_source_value"))
    # The key map is in its own schema, not among the OMOP tables.
    assert engine.query(f"SELECT count(*) FROM {engine.keys_table('key_map')}")[0][0] > 0
    with pytest.raises(Exception):  # noqa: B017 - either engine's "no such table"
        engine.query(f"SELECT * FROM {engine.table('key_map')}")


def test_redelivery_changes_nothing(engine: Engine) -> None:
    values = ev.research_values(ev.golden_messages())
    writer = BatchWriter(engine, NoVocabulary())
    writer.write([Incoming(value) for value in values])
    before = dump(engine)
    # Again, cut into other batches (a rebalance replays from the last committed offset).
    for start in range(0, len(values), 7):
        writer.write([Incoming(value) for value in values[start : start + 7]])
    assert dump(engine) == before


# -- results ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batches", ["one", "two"])
def test_a_correction_replaces_the_result(engine: Engine, batches: str) -> None:
    final = ev.observation(value_numeric=1.17, value_numeric_ucum=1.17)
    corrected = ev.observation(
        value_numeric=1.31, value_numeric_ucum=1.31, result_status="C", is_correction=True
    )
    if batches == "one":
        write(engine, final, corrected)
    else:
        write(engine, final)
        write(engine, corrected)
    assert select(engine, "measurement", "value_as_number") == [(1.31,)]


@pytest.mark.parametrize("status", ["D", "W", "X"])
def test_a_deleted_result_goes_and_the_period_shrinks(engine: Engine, status: str) -> None:
    first = ev.observation()
    later = ev.observation(result_key=ev.pseudonym("result-2"), event_time=T0 + 10 * DAY)
    write(engine, ev.patient(), first, later)
    assert period(engine, first["patient_key"]) == [(SEOUL.date(), SEOUL.date() + 10 * DAY)]
    write(engine, ev.observation(result_key=later["result_key"], result_status=status))
    assert count(engine, "measurement") == 1
    assert period(engine, first["patient_key"]) == [(SEOUL.date(), SEOUL.date())]
    write(engine, ev.observation(result_status="X", is_cancel=True))
    assert count(engine, "measurement") == 0
    assert period(engine, first["patient_key"]) == []


def test_preliminary_results_wait_for_the_final_one(engine: Engine) -> None:
    outcome = write(engine, ev.observation(result_status="P"))
    assert outcome.results == ["skipped"] and count(engine, "measurement") == 0
    write(engine, ev.observation(result_status="F"))
    assert count(engine, "measurement") == 1
    write(engine, ev.observation(result_key=ev.pseudonym("r-p"), result_status="P"), load={"P"})
    assert count(engine, "measurement") == 2


# -- persons ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batches", ["one", "two"])
def test_a08_updates_what_it_carries(engine: Engine, batches: str) -> None:
    registered = ev.patient(sex="M", birth_year=1980, postal_code="045")
    updated = ev.patient(
        sex="F", sex_source="F", birth_year=None, postal_code=None, trigger_event="A08"
    )
    if batches == "one":
        write(engine, registered, updated)
    else:
        write(engine, registered)
        write(engine, updated)
    [(gender, year, location)] = select(
        engine, "person", "gender_concept_id, year_of_birth, location_id"
    )
    assert (gender, year) == (8532, 1980)
    assert select(engine, "location", "location_id, zip") == [(location, "045")]


def test_one_death_row_per_person(engine: Engine) -> None:
    write(engine, ev.patient(deceased=True, death_time=T0 + DAY))
    write(engine, ev.patient(deceased=True, death_time=T0 + 2 * DAY))
    assert select(engine, "death", "death_date") == [(SEOUL.date() + 2 * DAY,)]
    write(engine, ev.patient(deceased=False))
    assert count(engine, "death") == 0


def test_a_person_without_birth_year_goes_to_the_dlq_and_the_rest_is_written(
    engine: Engine,
) -> None:
    stranger = ev.patient(patient_key=ev.pseudonym("patient-9"), birth_year=None, postal_code="612")
    outcome = write(engine, stranger, ev.patient(), ev.observation())
    assert outcome.results == [DLQ, WRITTEN, WRITTEN]
    assert outcome.reasons[0] == "missing:person.year_of_birth"
    assert select(engine, "location", "zip") == [("045",)]  # none of the refused event's rows
    assert count(engine, "person") == count(engine, "measurement") == 1
    # An update without a birth year is fine once the person has one.
    assert write(engine, ev.patient(birth_year=None)).results == [WRITTEN]


def test_a_row_the_database_refuses_is_found_and_sent_to_the_dlq(engine: Engine) -> None:
    # A rule of this site's database the mapping does not know: one result per source code.
    with transaction(engine):
        engine.execute(
            f"CREATE UNIQUE INDEX one_per_code ON {engine.table('measurement')} "
            "(measurement_source_value)"
        )
    events = [
        ev.observation(result_key=ev.pseudonym(f"r{i}"), code=code, standard_code=code)
        for i, code in enumerate(["2160-0", "2951-2", "2160-0", "718-7"])
    ]
    outcome = write(engine, *events)
    assert outcome.results == [WRITTEN, WRITTEN, DLQ, WRITTEN]
    assert (outcome.reasons[2] or "").startswith("constraint:")
    assert count(engine, "measurement") == 3


def test_a40_moves_every_fact_to_the_survivor(engine: Engine) -> None:
    survivor, retired = ev.pseudonym("patient-1"), ev.pseudonym("patient-old")
    write(
        engine,
        ev.patient(patient_key=survivor, deceased=True, death_time=T0 + 30 * DAY),
        ev.observation(patient_key=survivor),
        ev.patient(patient_key=retired, birth_year=1981, deceased=True, death_time=T0 + DAY),
        ev.encounter(patient_key=retired, encounter_key=ev.pseudonym("visit-old")),
        ev.observation(
            patient_key=retired,
            result_key=ev.pseudonym("result-old"),
            encounter_key=ev.pseudonym("visit-old"),
            event_time=T0 - 20 * DAY,
        ),
    )
    keep = person_id(engine, survivor)
    outcome = write(
        engine,
        ev.patient(patient_key=survivor, trigger_event="A40", merged_from_patient_key=retired),
        # A late result still filed under the old number lands on the survivor too.
        ev.observation(
            patient_key=retired, result_key=ev.pseudonym("result-late"), event_time=T0 + DAY
        ),
    )
    assert set(outcome.results) == {WRITTEN}
    assert select(engine, "person", "person_id") == [(keep,)]
    assert select(engine, "measurement", "DISTINCT person_id") == [(keep,)]
    assert count(engine, "measurement") == 3
    assert select(engine, "visit_occurrence", "person_id") == [(keep,)]
    assert select(engine, "death", "person_id, death_date") == [(keep, SEOUL.date() + 30 * DAY)]
    # Death is no observation: the period spans the facts (the late result is the last).
    assert period(engine, survivor) == [(SEOUL.date() - 20 * DAY, SEOUL.date() + DAY)]
    assert count(engine, "observation_period") == 1
    # Later batches: the retired pseudonym names the survivor for good.
    write(engine, ev.observation(patient_key=retired, result_key=ev.pseudonym("result-next")))
    assert select(engine, "measurement", "DISTINCT person_id") == [(keep,)]


def test_a40_moves_the_death_row_when_the_survivor_has_none(engine: Engine) -> None:
    survivor, retired = ev.pseudonym("patient-1"), ev.pseudonym("patient-old")
    write(
        engine,
        ev.patient(patient_key=survivor),
        ev.patient(patient_key=retired, deceased=True, death_time=T0),
    )
    write(engine, ev.patient(patient_key=survivor, merged_from_patient_key=retired))
    keep = person_id(engine, survivor)
    assert select(engine, "death", "person_id, death_date") == [(keep, SEOUL.date())]


def test_a40_in_the_batch_that_makes_both_persons_merges_their_death_rows(engine: Engine) -> None:
    # Both persons are new to the key map, so their first rows are appended; the merge moves the
    # retired person's death row onto the survivor's id, and the survivor's own death row after
    # it must replace that row (one death row per person), not be appended beside it.
    survivor, retired = ev.pseudonym("patient-1"), ev.pseudonym("patient-old")
    outcome = write(
        engine,
        ev.patient(patient_key=retired, deceased=True, death_time=T0),
        ev.patient(patient_key=survivor, trigger_event="A40", merged_from_patient_key=retired),
        ev.patient(patient_key=survivor, deceased=True, death_time=T0 + DAY),
    )
    assert set(outcome.results) == {WRITTEN}
    keep = person_id(engine, survivor)
    assert select(engine, "person", "person_id") == [(keep,)]
    assert select(engine, "death", "person_id, death_date") == [(keep, SEOUL.date() + DAY)]


class PathSpy:
    """The real engine, noting which bulk path each table's rows took."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.paths: list[tuple[str, str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def upsert(self, table: str, columns: Any, key: str, rows: Any) -> None:
        self.paths.append(("upsert", table, len(rows)))
        self.engine.upsert(table, columns, key, rows)

    def bulk_insert(self, table: str, columns: Any, rows: Any) -> None:
        self.paths.append(("append", table, len(rows)))
        self.engine.bulk_insert(table, columns, rows)


def test_rows_with_new_ids_are_appended_and_known_ones_merged(engine: Engine) -> None:
    values = [
        ev.encode(event)
        for event in (
            ev.patient(deceased=True, death_time=T0 + DAY),
            ev.encounter("admit"),
            ev.diagnosis(),
            ev.observation(),
            ev.observation(value_numeric=1.2, value_numeric_ucum=1.2, result_status="C"),
        )
    ]
    spy = PathSpy(engine)
    writer = BatchWriter(spy, NoVocabulary())
    writer.write([Incoming(value) for value in values])
    # A fresh warehouse: every id is new, every row appended.
    assert spy.paths and {path for path, _, _ in spy.paths} == {"append"}
    written = dump(engine)
    # Redelivered: every id is known now, every row merged over the stored one.
    spy.paths.clear()
    writer.write([Incoming(value) for value in values])
    assert spy.paths and {path for path, _, _ in spy.paths} == {"upsert"}
    assert dump(engine) == written
    # One batch with a new result and a known one: each goes its own way.
    spy.paths.clear()
    writer.write(
        [
            Incoming(ev.encode(ev.observation(result_key=ev.pseudonym("result-new")))),
            Incoming(ev.encode(ev.observation(value_numeric=2.5, value_numeric_ucum=2.5))),
        ]
    )
    assert sorted(p for p in spy.paths if p[1] == "measurement") == [
        ("append", "measurement", 1),
        ("upsert", "measurement", 1),
    ]


def test_the_garbage_collector_is_back_on_after_a_batch_even_a_failed_one(engine: Engine) -> None:
    # The writer turns Python's cyclic collector off for a batch (a fifth of its time).
    assert gc.isenabled()
    write(engine, ev.patient())
    assert gc.isenabled()
    gc.disable()  # a process that keeps it off itself: the writer leaves it off
    try:
        write(engine, ev.patient(birth_year=1990))
        assert not gc.isenabled()
    finally:
        gc.enable()
    engine.close()  # the next batch fails in the database, not in the data
    with pytest.raises(Exception):  # noqa: B017 - either engine's "connection closed"
        write(engine, ev.patient(birth_year=1991))
    assert gc.isenabled()


# -- visits -------------------------------------------------------------------------------------


def visit_row(engine: Engine) -> tuple[Any, ...]:
    [row] = select(
        engine,
        "visit_occurrence",
        "visit_start_datetime, visit_end_datetime, visit_end_date, visit_concept_id",
    )
    return row


def test_a11_cancels_the_visit(engine: Engine) -> None:
    write(
        engine,
        ev.patient(),
        ev.encounter("admit"),
        ev.diagnosis(),
        ev.observation(event_time=T0 + DAY),
    )
    assert count(engine, "visit_detail") == 1
    write(engine, ev.encounter("cancel_admit"))
    assert count(engine, "visit_occurrence") == count(engine, "visit_detail") == 0
    assert select(engine, "condition_occurrence", "visit_occurrence_id") == [(None,)]
    assert select(engine, "measurement", "visit_occurrence_id") == [(None,)]
    key = ev.pseudonym("patient-1")
    assert period(engine, key) == [(SEOUL.date(), SEOUL.date() + DAY)]


def test_discharge_then_a13_reopens(engine: Engine) -> None:
    write(engine, ev.patient(), ev.encounter("admit"))
    assert visit_row(engine) == (SEOUL, None, SEOUL.date(), 9201)
    discharged = SEOUL + 5 * DAY
    write(engine, ev.encounter("discharge", discharge_time=T0 + 5 * DAY, event_time=T0 + 5 * DAY))
    assert visit_row(engine) == (SEOUL, discharged, discharged.date(), 9201)
    assert select(engine, "visit_detail", "visit_detail_end_datetime") == [(discharged,)]
    write(engine, ev.encounter("cancel_discharge", discharge_time=None, event_time=T0 + 6 * DAY))
    # Open again: no end time; it ends, for now, on the last day heard of.
    assert visit_row(engine) == (SEOUL, None, SEOUL.date() + 6 * DAY, 9201)
    assert select(engine, "visit_detail", "visit_detail_end_datetime, visit_detail_end_date") == [
        (None, SEOUL.date() + 6 * DAY)
    ]


def test_transfers_make_details_and_a12_undoes_one(engine: Engine) -> None:
    def moved(to: str, days: int) -> dict[str, Any]:
        return ev.encounter("transfer", location_point_of_care=to, event_time=T0 + days * DAY)

    write(engine, ev.patient(), ev.encounter("admit"), moved("ICU", 1))
    write(engine, moved("72W", 2))
    details = "visit_detail_source_value, visit_detail_start_datetime, visit_detail_end_datetime"
    chain = [
        ("71W", SEOUL, SEOUL + DAY),
        ("ICU", SEOUL + DAY, SEOUL + 2 * DAY),
        ("72W", SEOUL + 2 * DAY, None),
    ]
    assert sorted(select(engine, "visit_detail", details), key=lambda r: r[1]) == chain
    undo = ev.encounter(
        "cancel_transfer",
        location_point_of_care="ICU",
        prior_location_point_of_care="72W",
        event_time=T0 + 3 * DAY,
    )
    write(engine, undo)
    write(engine, undo)  # a replayed A12 finds no 72W on top and changes nothing
    assert sorted(select(engine, "visit_detail", details), key=lambda r: r[1]) == [
        chain[0],
        ("ICU", SEOUL + DAY, None),
    ]
    write(engine, ev.encounter("discharge", discharge_time=T0 + 4 * DAY, event_time=T0 + 4 * DAY))
    rows = select(engine, "visit_detail", f"{details}, visit_detail_id, preceding_visit_detail_id")
    first, second = sorted(rows, key=lambda r: r[1])
    assert second[2] == SEOUL + 4 * DAY and second[4] == first[3] and first[4] is None


# -- transactions -------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_failed_commit_is_the_error_raised_not_the_failed_rollback(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away at COMMIT (here: a deferred trigger ends its own backend); the
    ROLLBACK that follows fails too, and must not hide why the batch failed."""
    with fresh_database(postgres_url, "commit") as conninfo:
        engine = open_engine(WarehouseConfig(url=url_of(conninfo)))
        engine.execute(
            "CREATE FUNCTION end_backend() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$"
        )
        engine.execute(
            "CREATE CONSTRAINT TRIGGER end_at_commit AFTER INSERT ON person "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION end_backend()"
        )
        engine.commit()
        with caplog.at_level(logging.WARNING), pytest.raises(psycopg.errors.AdminShutdown):
            write(engine, ev.patient())
        assert "rollback after a failed transaction failed too: OperationalError" in caplog.text
        engine.close()


def test_opening_again_changes_nothing(engine: Engine) -> None:
    write(engine, ev.patient())
    create_schema(engine)
    [(name, version, concept)] = select(
        engine, "cdm_source", "cdm_source_name, cdm_version, cdm_version_concept_id"
    )
    assert (name, version, concept) == ("hl7bus warehouse", "v5.4", 756265)
    assert count(engine, "person") == 1


# -- the vocabulary -----------------------------------------------------------------------------


def load_sample_vocabulary(engine: Engine) -> None:
    """The shipped sample vocabulary, loaded into the warehouse database as `hl7bus warehouse
    vocab load --sample` does."""
    if engine.dialect == "duckdb":
        load_duckdb(engine.conn, sample_folder(), engine.cdm_schema)
    else:
        load_postgresql(engine.conn, sample_folder(), engine.cdm_schema)
        engine.commit()


def test_codes_map_through_the_loaded_vocabulary_and_the_unmapped_are_listed(
    engine: Engine, clean_env: None
) -> None:
    load_sample_vocabulary(engine)
    lookup_conn = engine.lookup_connection()  # as the sink reads the vocabulary
    try:
        lookup = VocabularyLookup(lookup_conn, engine.dialect, engine.cdm_schema)
        writer = BatchWriter(engine, lookup)
        unknown = {"code": "XGLU", "code_system": "99LAB", "standard_code": None}
        smoking = ev.observation(
            result_key=ev.pseudonym("result-smoking"),
            code="72166-2",
            standard_code="72166-2",
            value_type="ST",
            value_text="Never smoker",
            **dict.fromkeys(_NUMERIC),
        )
        events = [
            ev.patient(),
            ev.observation(),  # creatinine, LOINC 2160-0, mg/dL
            smoking,
            ev.observation(result_key=ev.pseudonym("result-x1"), **unknown),
            ev.observation(result_key=ev.pseudonym("result-x2"), feed="lab2", **unknown),
        ]
        outcome = writer.write([Incoming(ev.encode(event)) for event in events])
        # Redelivered in a later batch: the rows stay, the sighting counts again.
        writer.write([Incoming(ev.encode(events[3]))])
    finally:
        lookup_conn.close()
    assert set(outcome.results) == {WRITTEN}
    creatinine, mg_dl = 3016723, 8840  # real OMOP ids, in the sample
    assert select(
        engine,
        "measurement",
        "measurement_source_value, measurement_concept_id, measurement_source_concept_id, "
        "unit_concept_id",
    ) == [("2160-0", creatinine, creatinine, mg_dl), ("XGLU", 0, 0, mg_dl), ("XGLU", 0, 0, mg_dl)]
    # A LOINC code of the Observation domain lands in observation.
    assert select(engine, "observation", "observation_source_value, observation_concept_id") == [
        ("72166-2", 2000101034)
    ]
    assert select(engine, "person", "gender_concept_id") == [(8507,)]  # M, from the vocabulary
    # Only what got concept 0 is counted, per feed.
    assert select(engine, "hl7bus_unmapped", "feed, system, code, count") == [
        ("lab2", "99LAB", "XGLU", 1),
        ("ward", "99LAB", "XGLU", 2),
    ]
    engine.close()  # DuckDB: the command opens the file read-only
    if engine.dialect == "duckdb":
        assert isinstance(engine, DuckDBEngine)
        env = {"HL7BUS_WAREHOUSE_PATH": str(engine.path)}
    else:
        assert isinstance(engine, PostgresEngine)
        env = {"HL7BUS_WAREHOUSE_URL": engine.url, "HL7BUS_WAREHOUSE_CDM_SCHEMA": "cdm"}
    listed = CliRunner().invoke(app, ["warehouse", "unmapped", "--feed", "ward"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "99LAB" in listed.output and "XGLU" in listed.output and "lab2" not in listed.output
    assert "2160-0" not in listed.output


_NUMERIC = (
    "value_numeric",
    "value_numeric_ucum",
    "units",
    "units_ucum",
    "reference_range",
    "reference_low",
    "reference_high",
)
