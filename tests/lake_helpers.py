"""Test support for the MEDS lake: a lake in a folder, batches of events appended to it with
subject ids given directly (the sink resolves them through the key map; these tests do not
need it), and the lake read back as plain rows."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import warehouse_events as ev

from hl7bus.connectors.lake.layout import Layout
from hl7bus.connectors.lake.mapping import map_event
from hl7bus.connectors.lake.pending import PendingBatch
from hl7bus.connectors.lake.store import LakeStore

LAYOUT = Layout(b"test-split-key", (0.6, 0.2, 0.2), 4)


def open_lake(root: Path, layout: Layout = LAYOUT) -> LakeStore:
    store = LakeStore(root, layout)
    store.open()
    return store


def append(
    store: LakeStore,
    events: Iterable[tuple[int, dict[str, Any]]],
    merged_from: dict[int, int] | None = None,
) -> int:
    """Append one batch of (subject id, research event); `merged_from` maps a position in the
    batch to the retired subject of its A40. Returns the MEDS rows appended."""
    batch = PendingBatch()
    for position, (subject, event) in enumerate(events):
        event = own_keys(subject, event)
        changes = map_event(*ev.decoded(event))
        retired = (merged_from or {}).get(position)
        batch.add(position, subject, changes, event.get("feed"), event["event_id"], retired)
    store.append(batch.table(store.next_seq))
    return batch.rows


_KEYS = ("patient_key", "encounter_key", "result_key", "order_key", "document_key")


def own_keys(subject: int, event: dict[str, Any]) -> dict[str, Any]:
    """`event` with pseudonymous keys of the subject's own (the builders give every event
    the same patient, visit and result)."""
    return {
        name: ev.pseudonym(f"{value}|{subject}") if name in _KEYS and value else value
        for name, value in event.items()
    }


def shard_rows(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every shard's rows, by shard path under the root."""
    return {
        str(path.relative_to(root)): pq.read_table(path).to_pylist()
        for path in sorted((root / "data").glob("*/*.parquet"))
    }


def subject_rows(root: Path) -> dict[int, list[tuple[Any, ...]]]:
    """(time, code, numeric_value, text_value) of every subject's rows, in file order."""
    found: dict[int, list[tuple[Any, ...]]] = {}
    for rows in shard_rows(root).values():
        for row in rows:
            found.setdefault(row["subject_id"], []).append(
                (row["time"], row["code"], row["numeric_value"], row["text_value"])
            )
    return found
