"""Opening the warehouse: the engine `warehouse` config names, with every table it needs.

The OMOP tables come from cdm.py (one definition for both engines); this module adds what the
sink needs on top: a unique index that keeps one death row per person, the key map in its own
schema, the table of unmapped codes (vocabulary/unmapped.py), the indexes PostgreSQL needs to
find a person's or a visit's facts without scanning (DuckDB scans a column faster than it
maintains an index), and the one cdm_source row.
"""

from __future__ import annotations

from datetime import date

import duckdb
import psycopg

from hl7bus.connectors.warehouse import cdm, feeds, keymap
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
        engine = PostgresEngine(cfg.url, cfg.cdm_schema, cfg.keys_schema, cfg.lock_timeout_s)
    else:
        engine = DuckDBEngine(cfg.path, cfg.cdm_schema, cfg.keys_schema)
    try:
        create_schema(engine)
    except BaseException:
        engine.close()
        raise
    return engine


# Outage reasons (a bounded set: the metric label and the /readyz text).
UNREACHABLE, REFUSED, LOCKED, DISK_FULL, TIMEOUT, UNAVAILABLE = (
    "unreachable",
    "refused",
    "locked",
    "disk_full",
    "timeout",
    "unavailable",
)
_PG_REASONS = {
    "55P03": LOCKED,  # lock_not_available
    "40P01": LOCKED,  # deadlock_detected
    "40001": LOCKED,  # serialization_failure
    "53100": DISK_FULL,
    "57014": TIMEOUT,  # query_canceled (statement_timeout)
}


def outage_reason(exc: BaseException) -> str | None:
    """Why the database cannot take writes now, when `exc` says it cannot (a server down or
    restarting, a connection lost or refused, a DuckDB file locked by another process, a full
    disk): the sink waits and retries. None for anything else, which retrying cannot fix: the
    data (the writer's business), a bug."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        state = getattr(exc, "sqlstate", None) or ""
        if not state:
            # libpq's connection errors carry no SQLSTATE. A server that answered FATAL other
            # than "the database system is starting up / shutting down / in recovery" refused
            # us: a wrong database, role or password, until someone fixes it (or creates it).
            text = str(exc)
            answered = "FATAL:" in text and "the database system is" not in text
            return REFUSED if answered and "too many" not in text else UNREACHABLE
        if state.startswith("28"):  # invalid authorization, said on an open connection
            return REFUSED
        if state in _PG_REASONS:
            return _PG_REASONS[state]
        # 08 connection exceptions, 57P01-03 shutdown or starting up, 53300 too many
        # connections: the server is not there for us now.
        return UNREACHABLE if state[:2] in ("08", "57", "53") else UNAVAILABLE
    if isinstance(exc, duckdb.TransactionException):
        # A COMMIT whose write-ahead log could not be written (a full disk) fails as a
        # transaction error, not an I/O one; any other transaction error is not an outage.
        text = str(exc).lower()
        if "could not write" not in text:
            return None
        return DISK_FULL if "space left" in text else UNAVAILABLE
    if isinstance(exc, duckdb.IOException):
        # DuckDB's messages are the only place saying which; they are matched, never logged.
        text = str(exc).lower()
        if "lock" in text:
            return LOCKED
        return DISK_FULL if "space left" in text else UNAVAILABLE
    if isinstance(exc, duckdb.FatalException | duckdb.ConnectionException):
        # A database invalidated by an earlier fatal error (a failed write), or a closed
        # connection: a new connection is the cure.
        return UNAVAILABLE
    return None


def outage_detail(exc: BaseException) -> str:
    """The exception for the log: its type, and the first line of its message when that is a
    connection's or a file's (libpq's connection errors, DuckDB's I/O errors: hosts, ports,
    database and role names, paths). Other messages may quote a row, so they stay out
    (docs/architecture.md, Privacy)."""
    connection = isinstance(exc, psycopg.Error) and not getattr(exc, "sqlstate", None)
    if (connection or isinstance(exc, duckdb.IOException)) and str(exc).strip():
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    return type(exc).__name__


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
        engine.execute(feeds.create_statement(engine))
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
