"""The MEDS metadata: metadata/dataset.json, codes.parquet and subject_splits.parquet.

Written by every compaction pass after its shards and before its append files go, each file
published atomically (store.publish). codes.parquet and subject_splits.parquet only grow: a
pass adds the codes and subjects it published to those already listed, so every code in the
data is listed and every subject has its split without reading the untouched shards. (A code
or subject whose rows were all deleted stays listed; MEDS asks for a superset.)
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from hl7bus.connectors.lake.store import METADATA, LakeStore, Progress

DATASET_FILE = f"{METADATA}/dataset.json"
CODES_FILE = f"{METADATA}/codes.parquet"
SPLITS_FILE = f"{METADATA}/subject_splits.parquet"
MEDS_VERSION = "0.4.1"  # the meds package release the lake is checked against

CODES_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
    ]
)
SPLITS_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

# Diagnosis and procedure families whose codes have a category before the dot (E11.9 in E11).
_DOTTED = re.compile(r"^((?:ICD|KCD)[0-9A-Z]*/[A-Z0-9]+)\.[A-Z0-9]+$")


def parent_codes(code: str) -> list[str]:
    match = _DOTTED.match(code)
    return [match.group(1)] if match else []


def update_codes(store: LakeStore, new: pa.Table, progress: Progress | None = None) -> int:
    """Add `new` (code, description) to codes.parquet; returns the codes listed."""
    path = store.path(CODES_FILE)
    listed: dict[str, str | None] = {}
    exists = store.exists(path)
    if exists:
        old = store.read_table(path, columns=["code", "description"])
        listed = dict(zip(old["code"].to_pylist(), old["description"].to_pylist(), strict=True))
    changed = not exists
    for code, description in zip(
        new["code"].to_pylist(), new["description"].to_pylist(), strict=True
    ):
        if code not in listed or (listed[code] is None and description):
            listed[code] = description
            changed = True
    if changed:
        codes = sorted(listed)
        table = pa.table(
            {
                "code": codes,
                "description": [listed[code] for code in codes],
                "parent_codes": [parent_codes(code) for code in codes],
            },
            schema=CODES_SCHEMA,
        )
        store.write_parquet(table, path, progress)
    return len(listed)


def update_splits(store: LakeStore, subjects: pa.Array, progress: Progress | None = None) -> int:
    """Add the split of every subject in `subjects` to subject_splits.parquet."""
    path = store.path(SPLITS_FILE)
    layout = store.layout
    known: pa.Table | None = store.read_table(path) if store.exists(path) else None
    fresh = subjects
    if known is not None:
        fresh = pc.filter(subjects, pc.invert(pc.is_in(subjects, known["subject_id"])))
    if known is not None and len(fresh) == 0:
        return int(known.num_rows)
    ids = fresh.to_pylist()
    added = pa.table(
        {"subject_id": ids, "split": [layout.place(subject)[0] for subject in ids]},
        schema=SPLITS_SCHEMA,
    )
    table = pa.concat_tables([known, added]) if known is not None else added
    table = table.sort_by("subject_id")
    store.write_parquet(table, path, progress)
    return int(table.num_rows)


def write_dataset(store: LakeStore, name: str, progress: Progress | None = None) -> dict[str, Any]:
    """dataset.json: the dataset's version is the time of its latest publication."""
    path = store.path(DATASET_FILE)
    now = datetime.now(UTC).replace(microsecond=0)
    created = now.isoformat()
    if store.exists(path):
        created = json.loads(store.read_text(path)).get("created_at") or created
    document: dict[str, Any] = {
        "dataset_name": name,
        "dataset_version": now.strftime("%Y%m%dT%H%M%SZ"),
        "etl_name": "hl7bus",
        "etl_version": _version(),
        "meds_version": MEDS_VERSION,
        "created_at": created,
        # The extension columns (docs/ai-sink.md): a row's unit modifies its code; its event
        # id and fact id join it to the research event and fact it came from; its feed is
        # the sending system.
        "code_modifier_columns": ["unit"],
        "raw_source_id_columns": ["event_id", "fact_id"],
        "site_id_columns": ["feed"],
    }
    with store.publish(path, progress) as handle:
        handle.write(json.dumps(document, indent=2).encode())
    return document


def _version() -> str:
    try:
        return version("hl7bus")
    except PackageNotFoundError:  # pragma: no cover - a source tree without an install
        return "unknown"
