"""The set-based statements of the sink: merges, cancellations and the derived tables.

Merges (A40) and cancellations (A11, A12) touch rows the batch does not name by id, so they
run as statements in event order between bulk writes. Observation periods and visit-detail
ends are derived from the facts and recomputed for what a batch touched.
"""

from __future__ import annotations

from collections.abc import Collection

from hl7bus.connectors.warehouse import constants as c
from hl7bus.connectors.warehouse import feeds, keymap
from hl7bus.connectors.warehouse.database import PERSON_TABLES, VISIT_FACT_TABLES
from hl7bus.connectors.warehouse.engine import Engine

# Each clinical table's (start date, end date) expressions, for observation periods.
_SPANS = {
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "condition_occurrence": (
        "condition_start_date",
        "COALESCE(condition_end_date, condition_start_date)",
    ),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "COALESCE(procedure_end_date, procedure_date)"),
    "measurement": ("measurement_date", "measurement_date"),
    "observation": ("observation_date", "observation_date"),
    "note": ("note_date", "note_date"),
    "specimen": ("specimen_date", "specimen_date"),
}


def merge_persons(engine: Engine, retired: int, survivor: int) -> None:
    """ADT^A40: the retired person's facts move to the survivor. A death row moves too unless
    the survivor has one (one death row per person); the retired person row goes."""
    if retired == survivor:
        return
    for table in PERSON_TABLES:
        engine.execute(
            f"UPDATE {engine.table(table)} SET person_id = %s WHERE person_id = %s",
            [survivor, retired],
        )
    death = engine.table("death")
    engine.execute(
        f"DELETE FROM {death} WHERE person_id = %s "
        f"AND EXISTS (SELECT 1 FROM {death} WHERE person_id = %s)",
        [retired, survivor],
    )
    engine.execute(f"UPDATE {death} SET person_id = %s WHERE person_id = %s", [survivor, retired])
    for table in ("person", "observation_period"):
        engine.execute(f"DELETE FROM {engine.table(table)} WHERE person_id = %s", [retired])
    keymap.alias_person(engine, retired, survivor)
    feeds.move(engine, retired, survivor)


def cancel_visit(engine: Engine, visit: int) -> None:
    """ADT^A11: the visit and its details go; facts keep no link to a visit that never was."""
    for table in ("visit_detail", "visit_occurrence"):
        engine.execute(f"DELETE FROM {engine.table(table)} WHERE visit_occurrence_id = %s", [visit])
    for table in VISIT_FACT_TABLES:
        engine.execute(
            f"UPDATE {engine.table(table)} SET visit_occurrence_id = NULL, "
            "visit_detail_id = NULL WHERE visit_occurrence_id = %s",
            [visit],
        )


def cancel_transfer(
    engine: Engine, visit: int, cancelled_location: str | None, back_to: str | None
) -> None:
    """ADT^A12: remove the visit's latest detail when it is the cancelled transfer. Checking
    its location makes a replayed A12 (the transfer already gone) change nothing."""
    details = engine.query(
        f"SELECT visit_detail_id, visit_detail_source_value FROM {engine.table('visit_detail')} "
        "WHERE visit_occurrence_id = %s "
        "ORDER BY visit_detail_start_datetime DESC, visit_detail_id DESC",
        [visit],
    )
    if len(details) < 2:
        return  # the admission's own detail is never removed
    latest, location = details[0]
    if cancelled_location is not None:
        matches = location == cancelled_location
    else:
        matches = back_to is not None and location != back_to
    if matches:
        engine.execute(
            f"DELETE FROM {engine.table('visit_detail')} WHERE visit_detail_id = %s", [latest]
        )


def recompute_visit_details(engine: Engine, visits: Collection[int]) -> None:
    """Each detail of the visits ends when the next starts, the last when the visit ends (its
    provisional end while open); each names the one before it."""
    if not visits:
        return
    detail, visit = engine.table("visit_detail"), engine.table("visit_occurrence")
    window = (
        "PARTITION BY d.visit_occurrence_id "
        "ORDER BY d.visit_detail_start_datetime, d.visit_detail_id"
    )
    engine.execute(
        f"UPDATE {detail} AS t SET "
        "visit_detail_end_datetime = n.end_datetime, "
        "visit_detail_end_date = n.end_date, "
        "preceding_visit_detail_id = n.preceding "
        "FROM (SELECT d.visit_detail_id, "
        f"LAG(d.visit_detail_id) OVER ({window}) AS preceding, "
        f"COALESCE(LEAD(d.visit_detail_start_datetime) OVER ({window}), v.visit_end_datetime) "
        "AS end_datetime, "
        "GREATEST(COALESCE("
        f"CAST(LEAD(d.visit_detail_start_datetime) OVER ({window}) AS DATE), "
        "v.visit_end_date, d.visit_detail_start_date), d.visit_detail_start_date) AS end_date "
        f"FROM {detail} d LEFT JOIN {visit} v ON v.visit_occurrence_id = d.visit_occurrence_id "
        f"WHERE {engine.any_id('d.visit_occurrence_id')}) n "
        "WHERE t.visit_detail_id = n.visit_detail_id",
        [sorted(visits)],
    )


def recompute_observation_periods(engine: Engine, persons: Collection[int]) -> None:
    """One observation period per person, from the earliest to the latest day of any of
    their facts (after deletes and merges too: recomputed, never extended)."""
    if not persons:
        return
    ids = sorted(persons)
    periods = engine.table("observation_period")
    engine.execute(f"DELETE FROM {periods} WHERE {engine.any_id('person_id')}", [ids])
    spans = " UNION ALL ".join(
        f"SELECT person_id, {start} AS start_date, {end} AS end_date "
        f"FROM {engine.table(table)} WHERE {engine.any_id('person_id')}"
        for table, (start, end) in _SPANS.items()
    )
    engine.execute(
        f"INSERT INTO {periods} (observation_period_id, person_id, "
        "observation_period_start_date, observation_period_end_date, period_type_concept_id) "
        f"SELECT person_id, person_id, MIN(start_date), MAX(end_date), {c.EHR} "
        f"FROM ({spans}) facts GROUP BY person_id",
        [ids] * len(_SPANS),
    )
