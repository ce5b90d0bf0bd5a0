"""Opening the warehouse: the engine `warehouse` config names, with every table it needs.

The OMOP tables come from cdm.py (one definition for both engines); this module adds what the
sink needs on top: a unique index that keeps one death row per person, the key map in its own
schema, the table of unmapped codes (vocabulary/unmapped.py), the indexes PostgreSQL needs to
find a person's or a visit's facts without scanning (DuckDB scans a column faster than it
maintains an index), and the one cdm_source row.
"""

from __future__ import annotations

from datetime import date

from hl7bus.connectors.warehouse import cdm, keymap
from hl7bus.connectors.warehouse import constants as c
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.duckdb_engine import DuckDBEngine
from hl7bus.connectors.warehouse.engine import Engine, transaction
from hl7bus.connectors.warehouse.postgres_engine import PostgresEngine
from hl7bus.connectors.warehouse.vocabulary import unmapped_table_statement

# Clinical tables with person_id (and visit_occurrence_id): what A40 merges move, what
# observation periods span, what a cancelled visit is unlinked from.
PERSON_TABLES = (
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
VISIT_FACT_TABLES = (
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "note",
)

# Serializes schema creation between sink processes starting together on one PostgreSQL.
_SETUP_LOCK = 0x686C37627573  # "hl7bus"


def open_engine(cfg: WarehouseConfig) -> Engine:
    """Connect to the configured database and create what is missing (idempotent)."""
    engine: Engine
    if cfg.url:
        engine = PostgresEngine(cfg.url, cfg.cdm_schema, cfg.keys_schema)
    else:
        engine = DuckDBEngine(cfg.path, cfg.cdm_schema, cfg.keys_schema)
    try:
        create_schema(engine)
    except BaseException:
        engine.close()
        raise
    return engine


def create_schema(engine: Engine) -> None:
    with transaction(engine):
        if engine.dialect == "postgresql":
            engine.execute("SELECT pg_advisory_xact_lock(%s)", [_SETUP_LOCK])
        if engine.cdm_schema:
            engine.execute(f"CREATE SCHEMA IF NOT EXISTS {engine.cdm_schema}")
        for statement in cdm.create_statements(engine.dialect, engine.cdm_schema):
            engine.execute(statement)
        # v5.4 gives death no primary key; one row per person is the rule the sink keeps.
        engine.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS xuk_death_person_id "
            f"ON {engine.table('death')} (person_id)"
        )
        if engine.dialect == "postgresql":
            for table in PERSON_TABLES:
                engine.execute(
                    f"CREATE INDEX IF NOT EXISTS idx_{table}_person_id "
                    f"ON {engine.table(table)} (person_id)"
                )
            for table in (*VISIT_FACT_TABLES, "visit_detail"):
                engine.execute(
                    f"CREATE INDEX IF NOT EXISTS idx_{table}_visit_id "
                    f"ON {engine.table(table)} (visit_occurrence_id)"
                )
        for statement in keymap.create_statements(engine):
            engine.execute(statement)
        # The codes the sink mapped to concept 0, per feed (`hl7bus warehouse unmapped`).
        engine.execute(unmapped_table_statement(engine.cdm_schema))
        if not engine.query(f"SELECT 1 FROM {engine.table('cdm_source')} LIMIT 1"):
            today = date.today()
            engine.execute(
                f"INSERT INTO {engine.table('cdm_source')} (cdm_source_name, "
                "cdm_source_abbreviation, cdm_holder, source_description, source_release_date, "
                "cdm_release_date, cdm_version, cdm_version_concept_id, vocabulary_version) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    "hl7bus warehouse",
                    "hl7bus",
                    "hl7bus",
                    "HL7 v2 feeds, de-identified in stream and written as they arrive",
                    today,
                    today,
                    "v5.4",
                    c.CDM_V54,
                    "none",
                ],
            )
