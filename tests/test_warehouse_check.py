"""`hl7bus warehouse check` on DuckDB and PostgreSQL: a warehouse the writer made passes (with
the facts whose person or visit has not arrived counted as pending), and each rule fails on a
warehouse with a violation of it planted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import warehouse_events as ev
from typer.testing import CliRunner

from hl7bus.connectors.warehouse import cdm, check
from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.engine import Engine
from hl7bus.connectors.warehouse.writer import WRITTEN, BatchWriter, Incoming
from hl7bus.ops.cli import app

FEED = "ward-7"


def _write(engine: Engine) -> None:
    """Two patients of one feed, the first registered, admitted and with two results; the
    second with a result only (its registration and visit still to come)."""
    first, second = ev.pseudonym("patient-1"), ev.pseudonym("patient-2")
    events = [
        ev.patient(patient_key=first, feed=FEED),
        ev.encounter(patient_key=first, feed=FEED),
        ev.observation(patient_key=first, feed=FEED),
        ev.observation(patient_key=first, feed=FEED, result_key=ev.pseudonym("result-2")),
        ev.observation(
            patient_key=second,
            feed=FEED,
            result_key=ev.pseudonym("result-3"),
            order_key=ev.pseudonym("order-3"),
            encounter_key=ev.pseudonym("visit-2"),
        ),
    ]
    outcome = BatchWriter(engine, NoVocabulary()).write(
        [Incoming(ev.encode(event)) for event in events]
    )
    assert set(outcome.results) == {WRITTEN}


def _commit(engine: Engine) -> None:
    """PostgreSQL runs the planted statements in a transaction; DuckDB ran them as they came."""
    if engine.dialect == "postgresql":
        engine.commit()


def _finding(report: check.Report, rule: str, table: str, column: str) -> check.Finding:
    return next(f for f in report.findings if (f.rule, f.table, f.column) == (rule, table, column))


def test_a_written_warehouse_passes_and_counts_what_is_pending(engine: Engine) -> None:
    _write(engine)
    report = check.run(engine)
    assert report.passed, [f for f in report.findings if not f.passed]
    assert report.skipped == {check.CONCEPT: "no vocabulary loaded"}
    # The second patient's result names a person and a visit the key map knows, not yet written.
    assert _finding(report, check.FOREIGN_KEY, "measurement", "person_id").pending == 1
    assert _finding(report, check.FOREIGN_KEY, "measurement", "visit_occurrence_id").pending == 1
    assert _finding(report, check.FOREIGN_KEY, "observation_period", "person_id").pending == 1
    assert report.rows["person"] == 1 and report.rows["measurement"] == 3
    # One feed: every row of a person's table is that feed's.
    assert list(report.feed_rows) == [FEED]
    assert report.feed_rows[FEED] == {t: report.rows[t] for t in report.feed_rows[FEED]}
    assert report.feed_rows[FEED]["observation_period"] == 2  # the pending person's too
    assert "location" not in report.feed_rows[FEED]  # no person_id: not per feed
    summary = report.to_json()
    assert summary["passed"] is True
    assert summary["rules"][check.FOREIGN_KEY]["pending"] >= 3
    assert summary["rules"][check.FOREIGN_KEY]["failed"] == 0


def _measurement(engine: Engine) -> int:
    """The id of the first patient's first result."""
    rows = engine.query(
        f"SELECT min(measurement_id) FROM {engine.table('measurement')} m "
        f"WHERE EXISTS (SELECT 1 FROM {engine.table('person')} p WHERE p.person_id = m.person_id)"
    )
    return int(rows[0][0])


def _null_required(engine: Engine) -> None:
    table = engine.table("measurement")
    engine.execute(f"ALTER TABLE {table} ALTER COLUMN measurement_concept_id DROP NOT NULL")
    engine.execute(
        f"UPDATE {table} SET measurement_concept_id = NULL WHERE measurement_id = %s",
        [_measurement(engine)],
    )


def _dangling_visit(engine: Engine) -> None:
    engine.execute(
        f"UPDATE {engine.table('measurement')} SET visit_occurrence_id = 987654321 "
        "WHERE measurement_id = %s",
        [_measurement(engine)],
    )


def _unknown_concept(engine: Engine) -> None:
    """A vocabulary with every concept the warehouse uses, but one result's."""
    used: set[int] = set()
    for table in check.CHECKED:
        for column in (c.name for c in cdm.TABLES[table] if c.name.endswith("concept_id")):
            used.update(
                int(row[0])
                for row in engine.query(f"SELECT DISTINCT {column} FROM {engine.table(table)}")
                if row[0]
            )
    engine.execute(
        f"UPDATE {engine.table('measurement')} SET measurement_concept_id = 3000963 "
        "WHERE measurement_id = %s",
        [_measurement(engine)],
    )
    for concept_id in sorted(used):
        engine.execute(
            f"INSERT INTO {engine.table('concept')} (concept_id, concept_name, domain_id, "
            "vocabulary_id, concept_class_id, concept_code, valid_start_date, valid_end_date) "
            "VALUES (%s, 'c', 'Measurement', 'LOINC', 'Lab Test', %s, DATE '1970-01-01', "
            "DATE '2099-12-31')",
            [concept_id, str(concept_id)],
        )


def _born_later(engine: Engine) -> None:
    engine.execute(
        f"UPDATE {engine.table('person')} SET year_of_birth = 2090, birth_datetime = NULL"
    )


def _died_long_before(engine: Engine) -> None:
    person = engine.query(f"SELECT person_id FROM {engine.table('person')}")[0][0]
    engine.execute(
        f"INSERT INTO {engine.table('death')} (person_id, death_date, death_type_concept_id) "
        "VALUES (%s, DATE '2001-01-01', 32817)",
        [person],
    )


def _no_periods(engine: Engine) -> None:
    engine.execute(f"DELETE FROM {engine.table('observation_period')}")


PLANTS: dict[str, tuple[Callable[[Engine], None], str, str]] = {
    check.REQUIRED: (_null_required, "measurement", "measurement_concept_id"),
    check.FOREIGN_KEY: (_dangling_visit, "measurement", "visit_occurrence_id"),
    check.CONCEPT: (_unknown_concept, "measurement", "measurement_concept_id"),
    check.BEFORE_BIRTH: (_born_later, "measurement", "measurement_date"),
    check.AFTER_DEATH: (_died_long_before, "measurement", "measurement_date"),
    check.OUTSIDE_PERIOD: (_no_periods, "measurement", "measurement_date"),
}


@pytest.mark.parametrize("rule", list(PLANTS))
def test_each_rule_fails_on_a_planted_violation(engine: Engine, rule: str) -> None:
    assert set(PLANTS) == set(check.RULES)
    _write(engine)
    plant, table, column = PLANTS[rule]
    plant(engine)
    _commit(engine)
    report = check.run(engine)
    assert not report.passed
    finding = _finding(report, rule, table, column)
    assert finding.violations >= 1 and not finding.passed
    failed = {f.rule for f in report.findings if not f.passed}
    assert rule in failed
    if rule != check.OUTSIDE_PERIOD:  # no periods: the pending person's have gone too
        assert failed == {rule}, failed


def _cli_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    url = getattr(engine, "url", None)
    if url:
        monkeypatch.setenv("HL7BUS_WAREHOUSE_URL", url)
        monkeypatch.setenv("HL7BUS_WAREHOUSE_CDM_SCHEMA", engine.cdm_schema or "")
    else:
        monkeypatch.setenv("HL7BUS_WAREHOUSE_PATH", str(engine.path))  # type: ignore[attr-defined]


@pytest.mark.usefixtures("clean_env")
def test_the_command_reports_json_and_text_and_exits_1_on_a_failed_rule(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(engine)
    _commit(engine)
    engine.close()  # DuckDB: one process opens a file one way at a time
    _cli_env(engine, monkeypatch)
    runner = CliRunner()

    passed = runner.invoke(app, ["warehouse", "check", "--json"])
    assert passed.exit_code == 0, passed.output
    report = json.loads(passed.stdout)
    assert report["passed"] is True
    assert report["rows"]["person"] == 1
    assert report["feeds"][FEED]["measurement"] == 3
    assert {f["rule"] for f in report["findings"]} == {check.FOREIGN_KEY}  # the pending ones

    text = runner.invoke(app, ["warehouse", "check"])
    assert text.exit_code == 0, text.output
    assert "passed" in text.output and f"feed {FEED}" in text.output

    _reopen_and(engine, _dangling_visit)
    failed = runner.invoke(app, ["warehouse", "check"])
    assert failed.exit_code == 1, failed.output
    assert "failed: foreign_key" in failed.output
    assert "measurement.visit_occurrence_id" in failed.output
    as_json = runner.invoke(app, ["warehouse", "check", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["rules"][check.FOREIGN_KEY]["violations"] == 1


def _reopen_and(engine: Engine, plant: Callable[[Engine], None]) -> None:
    from hl7bus.connectors.warehouse.config import WarehouseConfig
    from hl7bus.connectors.warehouse.database import open_engine

    url = getattr(engine, "url", None)
    cfg = (
        WarehouseConfig(url=url, cdm_schema=engine.cdm_schema)
        if url
        else WarehouseConfig(path=engine.path)  # type: ignore[attr-defined]
    )
    again = open_engine(cfg)
    try:
        plant(again)
        _commit(again)
    finally:
        again.close()


@pytest.mark.usefixtures("clean_env")
def test_the_command_exits_2_without_a_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HL7BUS_WAREHOUSE_PATH", str(tmp_path / "none.duckdb"))
    result = CliRunner().invoke(app, ["warehouse", "check"])
    assert result.exit_code == 2
    assert "no warehouse at" in result.output


def test_rows_per_feed_follow_an_a40_merge(engine: Engine) -> None:
    survivor, retired = ev.pseudonym("patient-1"), ev.pseudonym("patient-old")
    writer = BatchWriter(engine, NoVocabulary())

    def write(*events: dict[str, object]) -> None:
        outcome = writer.write([Incoming(ev.encode(dict(event))) for event in events])
        assert set(outcome.results) == {WRITTEN}

    write(
        ev.patient(patient_key=survivor, feed="a"),
        ev.patient(patient_key=retired, feed="b"),
        ev.observation(patient_key=retired, feed="b"),
    )
    before = check.feed_rows(engine)
    assert (before["a"]["person"], before["b"]["person"]) == (1, 1)
    assert (before["a"]["measurement"], before["b"]["measurement"]) == (0, 1)

    write(ev.patient(patient_key=survivor, feed="a", merged_from_patient_key=retired))
    after = check.feed_rows(engine)
    # One person left, whose events came from both feeds: counted for each.
    assert engine.query(f"SELECT count(*) FROM {engine.table('person')}") == [(1,)]
    assert (after["a"]["person"], after["b"]["person"]) == (1, 1)
    assert (after["a"]["measurement"], after["b"]["measurement"]) == (1, 1)
