"""The OMOP CDM v5.4 tables as created on DuckDB and on a real PostgreSQL, compared with v5.4.

The expected columns come from tests/data/omop_cdm_v54_columns.csv (taken from OHDSI's
field-level specification), not from the module under test; the created schema is read back
from each engine's information_schema.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg
import pytest
from postgres_server import fresh_database

from hl7bus.connectors.warehouse import cdm

SPEC = Path(__file__).parent / "data" / "omop_cdm_v54_columns.csv"
SCHEMA = "cdm"

# (table, column, type as the engine reports it, nullable, part of the primary key)
Row = tuple[str, str, str, bool, bool]


class _Connection(Protocol):
    """What both drivers' connections offer: execute(sql) returning a cursor."""

    def execute(self, query: Any) -> Any: ...


def _surrogate_id(column: str) -> bool:
    """v5.4 lets integer ids be bigint; we widen every id but the vocabulary's concept ids."""
    return column.endswith("_id") and "concept_id" not in column


def _expected_type(spec_type: str, column: str, dialect: cdm.Dialect) -> str:
    """The type `dialect`'s information_schema reports for a v5.4 column."""
    if spec_type == "integer":
        kind = "bigint" if _surrogate_id(column) else "integer"
    elif spec_type == "varchar(max)":
        kind = "text"
    else:
        kind = spec_type
    length = re.fullmatch(r"varchar\((\d+)\)", kind)
    if dialect == "duckdb":
        # DuckDB keeps no VARCHAR length, and TEXT is its VARCHAR.
        if length or kind == "text":
            return "VARCHAR"
        return {
            "integer": "INTEGER",
            "bigint": "BIGINT",
            "float": "DOUBLE",
            "date": "DATE",
            "datetime": "TIMESTAMP",
        }[kind]
    if length:
        return f"character varying({length.group(1)})"
    return {
        "integer": "integer",
        "bigint": "bigint",
        "float": "double precision",
        "date": "date",
        "datetime": "timestamp without time zone",
        "text": "text",
    }[kind]


def expected_rows(dialect: cdm.Dialect) -> list[Row]:
    lines = [line for line in SPEC.read_text().splitlines() if not line.startswith("#")]
    return [
        (
            spec["table"],
            spec["column"],
            _expected_type(spec["type"], spec["column"], dialect),
            spec["required"] == "no",
            spec["pk"] == "yes",
        )
        for spec in csv.DictReader(lines)
    ]


def created_rows(conn: _Connection) -> list[Row]:
    """Every column of the schema, in table name then column order, with its key membership."""
    keys = {
        (table, column)
        for table, column in conn.execute(
            f"""
            SELECT kcu.table_name, kcu.column_name
            FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu
              ON kcu.constraint_name = tc.constraint_name
             AND kcu.table_schema = tc.table_schema
             AND kcu.table_name = tc.table_name
            WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = '{SCHEMA}'
            """
        ).fetchall()
    }
    columns = conn.execute(
        f"""
        SELECT table_name, column_name, data_type, character_maximum_length, is_nullable
        FROM information_schema.columns
        WHERE table_schema = '{SCHEMA}'
        ORDER BY table_name, ordinal_position
        """
    ).fetchall()
    return [
        (
            table,
            column,
            f"{data_type}({length})" if length is not None else data_type,
            nullable == "YES",
            (table, column) in keys,
        )
        for table, column, data_type, length, nullable in columns
    ]


def _in_created_order(rows: list[Row]) -> list[Row]:
    """The spec's rows ordered like created_rows: by table name, column order kept."""
    return sorted(rows, key=lambda row: row[0])


def duckdb_schema(path: Path) -> list[Row]:
    conn = duckdb.connect(str(path))
    try:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        for statement in cdm.create_statements("duckdb", SCHEMA):
            conn.execute(statement)
        return created_rows(conn)
    finally:
        conn.close()


def postgres_schema(server_url: str) -> list[Row]:
    with fresh_database(server_url, "cdm") as conninfo, psycopg.connect(conninfo) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        for statement in cdm.create_statements("postgresql", SCHEMA):
            conn.execute(statement)
        conn.commit()
        return created_rows(conn)


def test_definitions_hold_the_24_tables() -> None:
    spec_tables = list(dict.fromkeys(row[0] for row in expected_rows("duckdb")))
    assert list(cdm.TABLES) == spec_tables
    assert set(cdm.VOCABULARY_TABLES) <= set(cdm.TABLES)


def test_duckdb_schema_is_v54(tmp_path: Path) -> None:
    assert duckdb_schema(tmp_path / "warehouse.duckdb") == _in_created_order(
        expected_rows("duckdb")
    )


@pytest.mark.postgres
def test_postgresql_schema_is_v54(postgres_url: str) -> None:
    assert postgres_schema(postgres_url) == _in_created_order(expected_rows("postgresql"))


def test_statements_run_twice(tmp_path: Path) -> None:
    """IF NOT EXISTS: a sink restarting on its own warehouse keeps the tables it has."""
    path = tmp_path / "warehouse.duckdb"
    duckdb_schema(path)
    conn = duckdb.connect(str(path))
    try:
        for statement in cdm.create_statements("duckdb", SCHEMA):
            conn.execute(statement)
        assert created_rows(conn) == _in_created_order(expected_rows("duckdb"))
    finally:
        conn.close()


def test_schema_name_must_be_a_plain_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        cdm.create_table("person", "postgresql", "cdm; DROP TABLE person")


def _replace_column(table: str, column: str, **changes: Any) -> dict[str, tuple[cdm.Column, ...]]:
    return {
        name: tuple(
            dataclasses.replace(c, **changes) if (name, c.name) == (table, column) else c
            for c in columns
        )
        for name, columns in cdm.TABLES.items()
    }


def _without_column(table: str, column: str) -> dict[str, tuple[cdm.Column, ...]]:
    return {
        name: tuple(c for c in columns if (name, c.name) != (table, column))
        for name, columns in cdm.TABLES.items()
    }


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda: _without_column("measurement", "unit_concept_id"), id="missing"),
        pytest.param(
            lambda: _replace_column("person", "year_of_birth", type=cdm.BIGINT), id="type"
        ),
        pytest.param(
            lambda: _replace_column("note", "note_text", required=False), id="nullability"
        ),
        pytest.param(lambda: _replace_column("concept", "concept_id", pk=False), id="primary-key"),
    ],
)
def test_comparison_catches_a_deviation(
    broken: Callable[[], dict[str, tuple[cdm.Column, ...]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check above can fail: a definition off by one detail does not pass it."""
    monkeypatch.setattr(cdm, "TABLES", broken())
    assert duckdb_schema(tmp_path / "warehouse.duckdb") != _in_created_order(
        expected_rows("duckdb")
    )


@pytest.mark.postgres
def test_comparison_catches_a_varchar_length_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL keeps VARCHAR lengths (DuckDB does not), so the check compares them there."""
    monkeypatch.setattr(
        cdm, "TABLES", _replace_column("person", "person_source_value", type=cdm.varchar(60))
    )
    assert postgres_schema(postgres_url) != _in_created_order(expected_rows("postgresql"))
