"""Folding a batch's row changes into one final state per row (pure).

Within a batch, changes to the same row (an A01 then an A08 of one visit, a result then its
correction) are applied in event order in memory, so each row is written once, in bulk. A
delete followed by a row starts that row afresh. Merge rows (person, visit_occurrence) are
laid over the stored row, which the caller reads first. Then every final row is completed
(id, defaults, provisional dates), cut to its columns' lengths, and checked for the columns
v5.4 requires; a row that cannot be completed names the events that made it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from hl7bus.connectors.warehouse import cdm
from hl7bus.connectors.warehouse.changes import Delete, Ref, Row, id_column

RowKey = tuple[str, int]  # (table, id)

# Per table, its varchar columns and their lengths: only these can need cutting.
_LENGTHS = {
    table: tuple(
        (column.name, int(column.type[8:-1]))
        for column in columns
        if column.type.startswith("varchar(")
    )
    for table, columns in cdm.TABLES.items()
}
_REQUIRED = {
    table: tuple(column.name for column in columns if column.required)
    for table, columns in cdm.TABLES.items()
}
COLUMNS = {table: tuple(column.name for column in columns) for table, columns in cdm.TABLES.items()}


@dataclass(slots=True)
class Pending:
    """The changes to one row so far."""

    values: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    merge: bool = False  # lay `values` over the stored row
    defaults: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, Any] = field(default_factory=dict)
    events: set[int] = field(default_factory=set)


def fold(
    changes: Iterable[tuple[int, Row | Delete]], ids: Mapping[Ref, int]
) -> dict[RowKey, Pending]:
    """Apply (event index, change) in order; Refs in values become ids."""
    rows: dict[RowKey, Pending] = {}
    for event, change in changes:
        if isinstance(change, Delete):
            for table in change.tables:
                rows[(table, ids[change.ref])] = Pending(deleted=True, events={event})
            continue
        key = (change.table, ids[change.ref])
        pending = rows.get(key)
        if pending is None or pending.deleted or not change.merge:
            events = pending.events if pending is not None else set()
            # After a delete, or for a whole-fact row, nothing stored shows through.
            merge = change.merge and pending is None
            pending = rows[key] = Pending(merge=merge, events=events)
        pending.events.add(event)
        values = pending.values
        for column, value in change.values.items():
            values[column] = ids[value] if isinstance(value, Ref) else value
        if change.defaults:  # the guards: most rows have neither (a batch has many rows)
            for column, value in change.defaults.items():
                pending.defaults.setdefault(column, value)
        if change.latest:
            for column, value in change.latest.items():
                pending.latest[column] = _later(pending.latest.get(column), value)
    return rows


def merge_keys(rows: Mapping[RowKey, Pending]) -> dict[str, list[int]]:
    """Ids per table whose stored row the fold needs (merge rows)."""
    wanted: dict[str, list[int]] = {}
    for (table, id_), pending in rows.items():
        if pending.merge and not pending.deleted:
            wanted.setdefault(table, []).append(id_)
    return wanted


@dataclass
class Final:
    upserts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deletes: dict[str, list[int]] = field(default_factory=dict)
    invalid: dict[int, str] = field(default_factory=dict)  # event index -> DLQ reason


def finish(rows: Mapping[RowKey, Pending], stored: Mapping[RowKey, Mapping[str, Any]]) -> Final:
    final = Final()
    for (table, id_), pending in rows.items():
        if pending.deleted:
            final.deletes.setdefault(table, []).append(id_)
            continue
        row: dict[str, Any] = dict(stored.get((table, id_), {})) if pending.merge else {}
        row.update(pending.values)
        for column, value in pending.defaults.items():
            if row.get(column) is None:
                row[column] = value
        for column, value in pending.latest.items():
            row[column] = _later(row.get(column), value)
        if table == "visit_occurrence":
            _visit_dates(row)
        row[id_column(table)] = id_
        for column, limit in _LENGTHS[table]:
            value = row.get(column)
            if isinstance(value, str) and len(value) > limit:
                row[column] = value[:limit]
        missing = _missing(row, _REQUIRED[table])
        if missing is not None:
            for event in pending.events:
                final.invalid.setdefault(event, f"missing:{table}.{missing}")
            continue
        final.upserts.setdefault(table, []).append(row)
    return final


def _missing(row: Mapping[str, Any], required: tuple[str, ...]) -> str | None:
    """The first required column the row leaves empty."""
    for column in required:
        if row.get(column) is None:
            return column
    return None


def _visit_dates(row: dict[str, Any]) -> None:
    """A discharged visit ends on its discharge day; an open one on the latest day heard of,
    never before it started."""
    ended = row.get("visit_end_datetime")
    if isinstance(ended, datetime):
        row["visit_end_date"] = ended.date()
        return
    start, end = row.get("visit_start_date"), row.get("visit_end_date")
    if isinstance(start, date) and (end is None or end < start):
        row["visit_end_date"] = start


def _later(current: Any, value: Any) -> Any:
    if current is None:
        return value
    if value is None:
        return current
    return max(current, value)
