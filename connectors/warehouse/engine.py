"""What the warehouse needs of a database, and the transaction rule both engines keep.

Two engines sit behind this interface: DuckDB (duckdb_engine.py, the embedded default) and
PostgreSQL (postgres_engine.py, `warehouse.url`). Both write a batch in bulk: its rows go into
a temporary staging table (DuckDB's appender, PostgreSQL's COPY) and one statement merges them
into the target, so a batch costs a few statements however many rows it has.

SQL handed to `execute`/`query` uses ``%s`` placeholders (psycopg's style); the DuckDB engine
rewrites them to ``?``. Set-valued parameters go through `any_id`, which each engine spells
the way its planner serves best.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from hl7bus.connectors.warehouse.cdm import Dialect

log = logging.getLogger(__name__)


class WarehouseDataError(Exception):
    """A write the database refused because of the data (a constraint, a type): the batch is
    split until the one event that causes it is found and sent to the DLQ. ``code`` names the
    constraint class or SQLSTATE, never a value."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Engine(Protocol):
    dialect: Dialect
    cdm_schema: str | None  # None: the engine's default schema
    keys_schema: str
    conn: Any  # the driver's connection; the vocabulary's helpers take it (vocabulary/__init__)

    def lookup_connection(self) -> Any:
        """A connection for the vocabulary lookup's reads beside the batch transaction: DuckDB
        a cursor of this connection, PostgreSQL a connection of its own in autocommit mode (so
        its reads open no transaction). The caller closes it."""
        ...

    def table(self, name: str) -> str:
        """The qualified name of an OMOP table."""
        ...

    def keys_table(self, name: str) -> str:
        """The qualified name of a table or sequence of the key-map schema."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def any_id(self, column: str) -> str:
        """A predicate true when `column` is in the one list-of-integers parameter it takes."""
        ...

    def stage(self, target: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        """Fill a temporary table shaped like `columns` of the (qualified) `target` with
        `rows` in bulk; return its name. It is emptied on every call."""
        ...

    def upsert(
        self, table: str, columns: Sequence[str], key: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        """Stage `rows` and merge them into OMOP `table`: insert, or overwrite every column of
        the row with the same `key`."""
        ...

    def delete(self, table: str, column: str, ids: Sequence[int]) -> None:
        """Delete the rows of OMOP `table` whose `column` is in `ids`."""
        ...

    def bulk_insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Append rows with the engine's own bulk path (appender, COPY) and nothing else."""
        ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    def data_error(self, exc: BaseException) -> WarehouseDataError | None:
        """`exc` as a WarehouseDataError when the data caused it, else None."""
        ...


@contextmanager
def transaction(engine: Engine) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises.

    A failed COMMIT (a full disk, a server gone) leaves a connection whose ROLLBACK may fail
    too; that second error is logged and the first one raised, so the cause stays visible.
    A data error comes out as WarehouseDataError."""
    engine.begin()
    try:
        yield
        engine.commit()
    except BaseException as exc:
        try:
            engine.rollback()
        except Exception as second:
            log.warning("rollback after a failed transaction failed too: %s", type(second).__name__)
        data = engine.data_error(exc) if isinstance(exc, Exception) else None
        if data is not None and data is not exc:
            raise data from exc
        raise
