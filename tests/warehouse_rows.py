"""Every OMOP row of a warehouse, comparable across warehouses that handed out ids in another
order: for the tests that check a warehouse written under faults (a worker killed, the database
stopped) against a reference written from each record once."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hl7bus.connectors.warehouse import cdm, keymap
from hl7bus.connectors.warehouse.engine import Engine

# Tables the mapping writes rows to (cdm_source is one fixed row, written on start).
TABLES = [t for t in cdm.TABLES if t != "cdm_source"]


def omop_rows(engine: Engine) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every OMOP row per table, with each surrogate id replaced by the (kind, source key) it
    stands for in the warehouse's key map: two warehouses that hand out ids in another order
    compare equal when they hold the same facts, and a fact written twice under two ids shows
    as a row counted twice."""
    keys = {
        id_: (kind, key)
        for id_, kind, key in engine.query(
            f"SELECT id, kind, source_key FROM {engine.keys_table(keymap.TABLE)}"
        )
    }
    tables: dict[str, Counter[tuple[Any, ...]]] = {}
    for table in TABLES:
        columns = [c.name for c in cdm.TABLES[table]]
        surrogate = [
            i
            for i, name in enumerate(columns)
            if name.endswith("_id") and not name.endswith("concept_id")
        ]
        rows = engine.query(f"SELECT {', '.join(columns)} FROM {engine.table(table)}")
        tables[table] = Counter(
            tuple(
                keys.get(v, v) if i in surrogate and v is not None else v for i, v in enumerate(row)
            )
            for row in rows
        )
    return tables
