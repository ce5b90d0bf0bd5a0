"""Loading an Athena download into the warehouse's vocabulary tables, in bulk, on either engine.

DuckDB reads each file with its CSV reader (one INSERT ... SELECT per file); PostgreSQL receives
each file through COPY (psycopg 3), in the form OHDSI's own load scripts use (CSV, tab
delimiter, a quote character that never occurs so fields are taken as they are). Nothing is read
row by row in Python unless a file is refused: then athena.find_problem names its line and column.

A load is one transaction: the vocabulary tables are emptied and filled again, so loading twice
leaves what loading once does, and a load that fails leaves the previous vocabulary in place.
PostgreSQL empties them with TRUNCATE (grants and the tables' identity stay); DuckDB drops and
recreates them (it rebuilds a primary key index faster than it deletes millions of keys from it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from hl7bus.connectors.warehouse import cdm
from hl7bus.connectors.warehouse.vocabulary.athena import (
    VocabularyError,
    check_folder,
    columns,
    find_problem,
)

# Small tables first, so a bad download usually fails fast; concept before the tables that
# refer to it.
LOAD_ORDER = (
    "vocabulary",
    "domain",
    "concept_class",
    "relationship",
    "concept",
    "concept_relationship",
    "concept_synonym",
    "concept_ancestor",
)

# The vocabulary indexes of OHDSI's v5.4 DDL (inst/ddl/5.4/*_indices.sql) that a primary key
# does not already give, with OHDSI's names (its spelling included). The lookup needs the first
# and the concept_relationship ones; ATLAS and the OHDSI tools use the rest.
INDEXES: tuple[tuple[str, str, str], ...] = (
    ("idx_concept_code", "concept", "concept_code"),
    ("idx_concept_vocabluary_id", "concept", "vocabulary_id"),
    ("idx_concept_domain_id", "concept", "domain_id"),
    ("idx_concept_class_id", "concept", "concept_class_id"),
    ("idx_concept_relationship_id_1", "concept_relationship", "concept_id_1"),
    ("idx_concept_relationship_id_2", "concept_relationship", "concept_id_2"),
    ("idx_concept_relationship_id_3", "concept_relationship", "relationship_id"),
    ("idx_concept_synonym_id", "concept_synonym", "concept_id"),
    ("idx_concept_ancestor_id_1", "concept_ancestor", "ancestor_concept_id"),
    ("idx_concept_ancestor_id_2", "concept_ancestor", "descendant_concept_id"),
)
# DuckDB gets the two indexes the lookup filters on (lookup.py): with them a code not yet cached
# costs about 0.9 ms instead of 2-5 ms of table scans (2 million concepts, 5 million
# relationships; `hl7bus bench vocab`, BENCHMARKS.md). The others serve ATLAS on PostgreSQL.
DUCKDB_INDEXES = ("idx_concept_code", "idx_concept_relationship_id_1")


@dataclass(frozen=True)
class Loaded:
    """One file loaded: its table, its path, how many rows, how long it took."""

    table: str
    path: Path
    rows: int
    seconds: float


Started = Callable[[str, Path], None]
Done = Callable[[Loaded], None]


def qualified(table: str, schema: str | None) -> str:
    return f"{schema}.{table}" if schema else table


def load_duckdb(
    conn: duckdb.DuckDBPyConnection,
    folder: Path,
    schema: str | None = None,
    started: Started | None = None,
    done: Done | None = None,
) -> list[Loaded]:
    """Replace the vocabulary tables of a DuckDB database with the download in `folder`."""
    paths = check_folder(folder)
    loaded: list[Loaded] = []
    conn.execute("BEGIN TRANSACTION")
    try:
        if schema:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in LOAD_ORDER:
            path = paths[table]
            if started:
                started(table, path)
            began = time.perf_counter()
            name = qualified(table, schema)
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(cdm.create_table(table, "duckdb", schema))
            try:
                conn.execute(f"INSERT INTO {name} {_duckdb_reader(table)}", [str(path)])
            except duckdb.Error as exc:
                raise _refused(path, table, exc) from None
            loaded.append(_count(conn, table, name, path, began, done))
        for index, table, column in INDEXES:
            if index in DUCKDB_INDEXES:
                conn.execute(f"CREATE INDEX {index} ON {qualified(table, schema)} ({column})")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return loaded


def _duckdb_reader(table: str) -> str:
    """read_csv with every column typed as the table declares it: no sniffing, no quoting.
    Dates are read as text and parsed in either form the PostgreSQL loader takes too."""
    cols = columns(table)
    types = ", ".join(
        f"'{c.name}': '{'VARCHAR' if c.type == cdm.DATE else cdm.engine_type(c.type, 'duckdb')}'"
        for c in cols
    )
    select = ", ".join(
        f"CAST(strptime({c.name}, ['%Y%m%d', '%Y-%m-%d']) AS DATE)"
        if c.type == cdm.DATE
        else c.name
        for c in cols
    )
    return (
        f"SELECT {select} FROM read_csv(?, delim = '\t', header = true, quote = '', "
        f"escape = '', auto_detect = false, strict_mode = true, columns = {{{types}}})"
    )


def load_postgresql(
    conn: psycopg.Connection[Any],
    folder: Path,
    schema: str | None = None,
    started: Started | None = None,
    done: Done | None = None,
) -> list[Loaded]:
    """Replace the vocabulary tables of a PostgreSQL database with the download in `folder`."""
    paths = check_folder(folder)
    loaded: list[Loaded] = []
    with conn.transaction():
        # Dates come as YYYYMMDD (Athena) or YYYY-MM-DD; never read day-first or month-first.
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        if schema:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for table in LOAD_ORDER:
            conn.execute(cdm.create_table(table, "postgresql", schema))
        for index, _, _ in INDEXES:
            # COPY into an indexed table maintains every index row by row; building them
            # afterwards is several times faster.
            conn.execute(f"DROP INDEX IF EXISTS {qualified(index, schema)}")
        conn.execute("TRUNCATE " + ", ".join(qualified(table, schema) for table in LOAD_ORDER))
        for table in LOAD_ORDER:
            path = paths[table]
            if started:
                started(table, path)
            began = time.perf_counter()
            name = qualified(table, schema)
            names = ", ".join(c.name for c in columns(table))
            try:
                with (
                    conn.cursor() as cursor,
                    cursor.copy(
                        f"COPY {name} ({names}) FROM STDIN WITH (FORMAT csv, DELIMITER E'\\t', "
                        "QUOTE E'\\b', HEADER true, NULL '')"
                    ) as copy,
                    path.open("rb") as file,
                ):
                    while chunk := file.read(1 << 20):
                        copy.write(chunk)
            except psycopg.Error as exc:
                raise _refused(path, table, exc) from None
            loaded.append(_count(conn, table, name, path, began, done))
        for index, table, column in INDEXES:
            conn.execute(f"CREATE INDEX {index} ON {qualified(table, schema)} ({column})")
        for table in LOAD_ORDER:
            conn.execute(f"ANALYZE {qualified(table, schema)}")
    return loaded


def _count(conn: Any, table: str, name: str, path: Path, began: float, done: Done | None) -> Loaded:
    row = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
    result = Loaded(table, path, int(row[0]), time.perf_counter() - began)
    if done:
        done(result)
    return result


def _refused(path: Path, table: str, exc: Exception) -> VocabularyError:
    """The engine refused a file: say where, from our own reading of it when we can."""
    problem = find_problem(path, table)
    if problem is not None:
        return VocabularyError(problem.message(path))
    # Something only the database sees (e.g. a constraint of its own): its first line.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return VocabularyError(f"{path}: the database refused it ({type(exc).__name__}: {first})")


def load_vocabulary(
    folder: Path,
    *,
    path: Path | None = None,
    url: str | None = None,
    schema: str | None = None,
    started: Started | None = None,
    done: Done | None = None,
) -> list[Loaded]:
    """Load `folder` into the PostgreSQL database at `url`, else the DuckDB file at `path`."""
    if url:
        with psycopg.connect(url) as pg:
            return load_postgresql(pg, folder, schema, started, done)
    if path is None:
        raise ValueError("load_vocabulary needs a DuckDB path or a PostgreSQL url")
    path.parent.mkdir(parents=True, exist_ok=True)
    db = duckdb.connect(str(path))
    try:
        return load_duckdb(db, folder, schema, started, done)
    finally:
        db.close()
