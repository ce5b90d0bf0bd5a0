"""One batch of mapped events -> the rows of one append file (store.PENDING_SCHEMA).

Each row carries a version: the append file's sequence number in the high 32 bits and the
event's position in the batch in the low ones, so compaction can tell, for every fact, which
event said the last word, across files and within one. A fact with no rows becomes one
tombstone row; an A40 becomes a merge row.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from hl7bus.connectors.lake.mapping import LakeChanges
from hl7bus.connectors.lake.store import MERGE, PENDING_SCHEMA, ROW, TOMBSTONE
from hl7bus.connectors.warehouse.keymap import key_hash

_POSITION_BITS = 32


class PendingBatch:
    def __init__(self) -> None:
        self._columns: dict[str, list[Any]] = {name: [] for name in PENDING_SCHEMA.names}
        self._positions: list[int] = []
        self.rows = 0  # MEDS rows (tombstones and merges not counted)

    def __len__(self) -> int:
        return len(self._positions)

    def add(
        self,
        position: int,
        subject_id: int,
        changes: LakeChanges,
        feed: str | None,
        event_id: str | None,
        merged_from: int | None = None,
    ) -> None:
        """The rows of one event (`position`: its index in the batch)."""
        if merged_from is not None and merged_from != subject_id:
            self._add(position, merged_from, MERGE, merge_into=subject_id)
        for fact in changes.facts:
            fact_id = key_hash(fact.ref)
            if not fact.rows:
                self._add(position, subject_id, TOMBSTONE, fact_id=fact_id)
                continue
            for row in fact.rows:
                self._add(
                    position,
                    subject_id,
                    ROW,
                    fact_id=fact_id,
                    time=row.time,
                    code=row.code,
                    numeric_value=row.numeric_value,
                    text_value=row.text_value,
                    unit=row.unit,
                    feed=feed,
                    event_id=event_id,
                    description=row.description,
                )
                self.rows += 1

    def _add(self, position: int, subject_id: int, kind: int, **values: Any) -> None:
        self._positions.append(position)
        columns = self._columns
        columns["subject_id"].append(subject_id)
        columns["kind"].append(kind)
        columns["code"].append(values.pop("code", ""))
        for name in ("time", "numeric_value", "text_value", "unit", "feed", "event_id"):
            columns[name].append(values.pop(name, None))
        for name in ("fact_id", "merge_into", "description"):
            columns[name].append(values.pop(name, None))

    def table(self, seq: int) -> pa.Table:
        """The append file's table, its versions made from the file's sequence number."""
        base = seq << _POSITION_BITS
        columns = dict(self._columns)
        columns["version"] = [base + position for position in self._positions]
        return pa.table(columns, schema=PENDING_SCHEMA)
