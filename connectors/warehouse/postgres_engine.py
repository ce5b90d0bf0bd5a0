"""The production engine: PostgreSQL through psycopg 3 (`warehouse.url`).

A batch's rows are COPYed into a temporary staging table and merged with one
INSERT ... ON CONFLICT DO UPDATE. The staging rows are unique by key (the writer folds each
row's changes first), so no statement touches a row twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors

from hl7bus.connectors.warehouse.cdm import Dialect
from hl7bus.connectors.warehouse.engine import WarehouseDataError


class PostgresEngine:
    dialect: Dialect = "postgresql"

    def __init__(
        self,
        url: str,
        cdm_schema: str | None,
        keys_schema: str,
        lock_timeout_s: float | None = None,
    ) -> None:
        """`lock_timeout_s`: a statement waiting longer for a lock fails with
        LockNotAvailable (the sink's outage "locked") instead of blocking the sink unseen."""
        self.url = url
        self._lock_timeout_s = lock_timeout_s
        self.conn = self._connect(autocommit=False)
        self.cdm_schema = cdm_schema
        self.keys_schema = keys_schema
        self._stages: dict[tuple[str, tuple[str, ...]], str] = {}

    def _connect(self, autocommit: bool) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=autocommit)
        if self._lock_timeout_s is not None:
            # For the session (is_local false), committed at once so no rollback undoes it; a
            # setting rather than the URL's options, which a URL may already use.
            timeout = f"{max(1, round(self._lock_timeout_s * 1000))}ms"
            conn.execute("SELECT set_config('lock_timeout', %s, false)", [timeout])
            if not autocommit:
                conn.commit()
        return conn

    def lookup_connection(self) -> psycopg.Connection[Any]:
        return self._connect(autocommit=True)

    def table(self, name: str) -> str:
        return f"{self.cdm_schema}.{name}" if self.cdm_schema else name

    def keys_table(self, name: str) -> str:
        return f"{self.keys_schema}.{name}"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql.encode(), list(params) or None)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql.encode(), list(params) or None).fetchall()

    def any_id(self, column: str) -> str:
        # An array parameter: the planner uses the column's index for each element.
        return f"{column} = ANY(%s::BIGINT[])"

    def stage(self, target: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        key = (target, tuple(columns))
        name = self._stages.get(key)
        if name is None:
            name = f"stage_{len(self._stages)}_{target.replace('.', '_')}"
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} AS "
                f"SELECT {', '.join(columns)} FROM {target} WITH NO DATA".encode()
            )
            self._stages[key] = name
        self.conn.execute(f"TRUNCATE {name}".encode())
        self._copy(name, columns, rows)
        return name

    def _copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            with cur.copy(statement.encode()) as copy:
                for row in rows:
                    copy.write_row(row)

    def upsert(
        self, table: str, columns: Sequence[str], key: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        target = self.table(table)
        staged = self.stage(target, columns, rows)
        names = ", ".join(columns)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key)
        self.execute(
            f"INSERT INTO {target} ({names}) SELECT {names} FROM {staged} "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
        )

    def delete(self, table: str, column: str, ids: Sequence[int]) -> None:
        self.execute(f"DELETE FROM {self.table(table)} WHERE {self.any_id(column)}", [list(ids)])

    def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        self._copy(self.table(table), columns, rows)

    def begin(self) -> None:
        # psycopg opens the transaction with the first statement (autocommit off).
        pass

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        # Temporary tables made inside the transaction are gone with it.
        self._stages.clear()
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    def data_error(self, exc: BaseException) -> WarehouseDataError | None:
        if isinstance(exc, WarehouseDataError):
            return exc
        if isinstance(exc, errors.IntegrityError | errors.DataError):
            return WarehouseDataError(f"constraint:{exc.sqlstate or type(exc).__name__}")
        return None
