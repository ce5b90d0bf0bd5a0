"""Unmapped codes counted per (feed, system, code), so a terminologist can fix the maps.

The lookup does not know which feed a code came from; the sink does. While it maps a batch the
sink counts every code that got concept 0 in an UnmappedCounter, and in the batch's transaction
it calls record_unmapped, which adds the counts to the table hl7bus_unmapped. That table is ours,
not OMOP's: no OHDSI tool reads it, and it holds codes and counts, never patient data.
`hl7bus warehouse unmapped` lists the most frequent codes per feed from it (top_unmapped).

A batch that is written again after a crash (at-least-once delivery) counts its codes again:
the counts say which codes matter most, not how many events there were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hl7bus.connectors.warehouse.cdm import Dialect
from hl7bus.connectors.warehouse.concepts import Mapped

TABLE = "hl7bus_unmapped"
# Codes longer than an OMOP *_source_value column (varchar(50)) are kept that long.
CODE_LENGTH = 50

Key = tuple[str, str, str]  # (feed, system, code)
_ROWS_PER_STATEMENT = 1000


def table_name(schema: str | None = None) -> str:
    return f"{schema}.{TABLE}" if schema else TABLE


def create_statement(schema: str | None = None) -> str:
    """CREATE TABLE IF NOT EXISTS for hl7bus_unmapped (the same text on both engines)."""
    return f"""CREATE TABLE IF NOT EXISTS {table_name(schema)} (
    feed VARCHAR(100) NOT NULL,
    system VARCHAR({CODE_LENGTH}) NOT NULL,
    code VARCHAR({CODE_LENGTH}) NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (feed, system, code)
)"""


class UnmappedCounter:
    """Counts of unmapped codes since the last drain(), by (feed, system, code)."""

    def __init__(self) -> None:
        self._counts: dict[Key, int] = {}

    def note(self, feed: str, system: str | None, code: str | None, times: int = 1) -> None:
        """Count one unmapped code (a missing code is not counted; a missing system is '')."""
        code = (code or "").strip()
        if not code:
            return
        key = (feed, (system or "").strip()[:CODE_LENGTH], code[:CODE_LENGTH])
        self._counts[key] = self._counts.get(key, 0) + times

    def counted(self, feed: str, system: str | None, code: str | None, mapped: Mapped) -> Mapped:
        """`mapped`, after counting the code when it got concept 0."""
        if mapped.concept_id == 0:
            self.note(feed, system, code)
        return mapped

    def drain(self) -> dict[Key, int]:
        """The counts so far; the counter starts again from nothing."""
        counts, self._counts = self._counts, {}
        return counts

    def __len__(self) -> int:
        return len(self._counts)


def record_unmapped(
    conn: Any,
    dialect: Dialect,
    counts: Mapping[Key, int],
    seen: datetime,
    schema: str | None = None,
) -> None:
    """Add `counts` to hl7bus_unmapped (an upsert per code), `seen` (UTC) as their last sighting.

    Runs inside the caller's transaction (the sink's batch), on the caller's connection: a DuckDB
    connection or a psycopg 3 connection. The table must exist (create_statement)."""
    if not counts:
        return
    mark = "?" if dialect == "duckdb" else "%s"
    table = table_name(schema)
    rows = [(f, s, c, n, seen, seen) for (f, s, c), n in sorted(counts.items())]
    # Multi-row VALUES, not executemany: DuckDB runs executemany as one upsert per row (about
    # 2 ms each), which cost the sink about 100 ms a batch. _ROWS_PER_STATEMENT keeps the
    # parameters under PostgreSQL's 65,535.
    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
        chunk = rows[start : start + _ROWS_PER_STATEMENT]
        values = ", ".join(f"({', '.join([mark] * 6)})" for _ in chunk)
        statement = (
            f"INSERT INTO {table} (feed, system, code, count, first_seen, last_seen) "
            f"VALUES {values} "
            "ON CONFLICT (feed, system, code) DO UPDATE SET "
            f"count = {table}.count + excluded.count, "
            f"last_seen = greatest({table}.last_seen, excluded.last_seen)"
        )
        params = [value for row in chunk for value in row]
        if dialect == "duckdb":
            conn.execute(statement, params)
        else:
            with conn.cursor() as cursor:
                cursor.execute(statement, params)


@dataclass(frozen=True)
class UnmappedCode:
    feed: str
    system: str
    code: str
    count: int
    first_seen: datetime
    last_seen: datetime


def top_unmapped(
    conn: Any,
    dialect: Dialect,
    feed: str | None = None,
    limit: int = 20,
    schema: str | None = None,
) -> list[UnmappedCode]:
    """The `limit` most frequent unmapped codes of each feed (or of `feed`), most frequent first;
    nothing when no sink has recorded any yet."""
    mark = "?" if dialect == "duckdb" else "%s"
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = "
        f"{mark} AND table_schema = {'current_schema()' if schema is None else mark}",
        [TABLE] if schema is None else [TABLE, schema],
    ).fetchone()
    if not exists[0]:
        return []
    where = f"WHERE feed = {mark}" if feed is not None else ""
    rows = conn.execute(
        f"""
        SELECT feed, system, code, count, first_seen, last_seen FROM (
            SELECT *, row_number() OVER (
                PARTITION BY feed ORDER BY count DESC, system, code) AS place
            FROM {table_name(schema)} {where}
        ) ranked
        WHERE place <= {mark}
        ORDER BY feed, count DESC, system, code
        """,
        [*([feed] if feed is not None else []), limit],
    ).fetchall()
    return [UnmappedCode(*row) for row in rows]
