"""The embedded engine: one DuckDB file (`warehouse.path`).

Rows reach a table through DuckDB's appender into a temporary staging table and one
INSERT ... ON CONFLICT from it: row-by-row statements (executemany) cost about 0.4 ms a row and
were the old sink's bottleneck; the appender takes a batch in about a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from hl7bus.connectors.warehouse.cdm import Dialect
from hl7bus.connectors.warehouse.engine import WarehouseDataError


class DuckDBEngine:
    dialect: Dialect = "duckdb"

    def __init__(
        self, path: Path, cdm_schema: str | None, keys_schema: str, read_only: bool = False
    ) -> None:
        """`read_only`: for reports on a file someone else writes later (it must exist)."""
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = duckdb.connect(str(path), read_only=read_only)
        self.cdm_schema = cdm_schema
        self.keys_schema = keys_schema
        self._stages: dict[tuple[str, tuple[str, ...]], str] = {}

    def lookup_connection(self) -> duckdb.DuckDBPyConnection:
        return self.conn.cursor()

    def table(self, name: str) -> str:
        return f"{self.cdm_schema}.{name}" if self.cdm_schema else name

    def keys_table(self, name: str) -> str:
        return f"{self.keys_schema}.{name}"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql.replace("%s", "?"), list(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql.replace("%s", "?"), list(params)).fetchall()

    def any_id(self, column: str) -> str:
        # A hash semi-join against the unnested list: one scan of the column, however long
        # the list (an IN list of constants is planned per constant).
        return f"{column} IN (SELECT UNNEST(%s::BIGINT[]))"

    def stage(self, target: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        key = (target, tuple(columns))
        name = self._stages.get(key)
        if name is None:
            name = f"stage_{len(self._stages)}_{target.replace('.', '_')}"
            self.conn.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS "
                f"SELECT {', '.join(columns)} FROM {target} LIMIT 0"
            )
            self._stages[key] = name
        else:
            self.conn.execute(f"DELETE FROM {name}")
        appender = self.conn.appender(name)
        appender.append_rows(rows)
        appender.flush()
        return name

    def upsert(
        self, table: str, columns: Sequence[str], key: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        target = self.table(table)
        staged = self.stage(target, columns, rows)
        names = ", ".join(columns)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
        self.conn.execute(
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {staged} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    def delete(self, table: str, column: str, ids: Sequence[int]) -> None:
        self.execute(f"DELETE FROM {self.table(table)} WHERE {self.any_id(column)}", [list(ids)])

    def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        appender = self.conn.appender(self.table(table), columns=list(columns))
        appender.append_rows(rows)
        appender.flush()

    def begin(self) -> None:
        self.conn.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        # Temporary tables made inside the transaction are gone with it.
        self._stages.clear()
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()

    def data_error(self, exc: BaseException) -> WarehouseDataError | None:
        if isinstance(exc, WarehouseDataError):
            return exc
        if isinstance(exc, duckdb.ConstraintException | duckdb.ConversionException):
            return WarehouseDataError(f"constraint:{type(exc).__name__}")
        return None
