"""Compaction: the append files folded into the shards, each shard published atomically.

One pass reads every append file, works out which shards their subjects live in (layout.py:
a subject's shard is fixed by its id), reads those shards, and keeps, for every fact, the rows
of its newest version (a tombstone keeps none): corrections and deletes are applied, not
appended. A40 merges move the retired subject's rows to the survivor. Each touched shard is
rewritten sorted by subject, then time (static rows first), then code, and published with
os.replace (store.publish; on an object store, a copy over the old object); then the metadata
(metadata.py); only then are the append files removed.

A process killed anywhere in a pass leaves every shard either old or new, and the append
files in place: the next pass applies them again, which gives the same shards (a shard's rows
count as older than any append file's, and every fact's newest version wins again). The fold
is one DuckDB query over Arrow tables, in memory, so its cost is the touched shards' size. Files
are read through the lake's pyarrow filesystem (store.LakeFiles), whichever it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from hl7bus.connectors.lake import metadata
from hl7bus.connectors.lake.store import (
    DATA_SCHEMA,
    MERGE,
    PENDING_SCHEMA,
    LakeStore,
    Progress,
)

_COLUMNS = ", ".join(DATA_SCHEMA.names)


@dataclass
class Compacted:
    """What a pass did."""

    files: int = 0  # append files folded in
    pending_rows: int = 0
    shards: list[str] = field(default_factory=list)  # shards rewritten (or removed)
    rows: int = 0  # rows in the rewritten shards
    new_rows: pa.Table | None = None  # the append files' fact rows (for the metadata)
    subjects: pa.Array | None = None  # subjects of the rewritten shards
    codes: int = 0  # codes listed in metadata/codes.parquet
    subjects_listed: int = 0  # subjects in metadata/subject_splits.parquet


def compact(
    store: LakeStore, progress: Progress | None = None, dataset_name: str = "hl7bus"
) -> Compacted:
    files = store.pending_files()
    done = Compacted(files=len(files))
    if not files:
        if not store.exists(store.path(metadata.DATASET_FILE)):
            _publish_metadata(store, done, dataset_name, progress)  # a new lake: valid, empty
        return done
    pending = pa.concat_tables(store.read_table(path, schema=PENDING_SCHEMA) for path in files)
    done.pending_rows = pending.num_rows
    merges = _merges(pending)
    con = duckdb.connect()
    try:
        con.register("pending", pending)
        con.register(
            "merges",
            pa.table(
                {"retired": list(merges), "survivor": list(merges.values())},
                schema=pa.schema([("retired", pa.int64()), ("survivor", pa.int64())]),
            ),
        )
        subjects = set(pc.unique(pending["subject_id"]).to_pylist())
        subjects.update(merges.values())
        touched = {store.layout.shard_path(subject) for subject in subjects}
        existing = [store.path(name) for name in sorted(touched)]
        current = _current(con, [store.read_table(p) for p in existing if store.exists(p)])
        # Every subject the result can hold: the append files' (merged) and the shards'.
        stored = con.sql(f"SELECT DISTINCT subject_id FROM {current}").fetchall()
        candidates = subjects | {subject for (subject,) in stored}
        places = {subject: store.layout.shard_path(subject) for subject in candidates}
        con.register(
            "places",
            pa.table({"subject_id": list(places), "shard": list(places.values())}),
        )
        result = con.sql(_FOLD.format(current=current, columns=_COLUMNS)).to_arrow_table()
        done.new_rows = con.sql(
            "SELECT code, description FROM pending WHERE kind = 0"
        ).to_arrow_table()
    finally:
        con.close()
    done.rows = result.num_rows
    done.subjects = pc.unique(result["subject_id"])
    written = _write_shards(store, result, touched, progress)
    done.shards = sorted(written)
    _publish_metadata(store, done, dataset_name, progress)
    # Last: until here a killed pass is redone from the same append files.
    for path in files:
        store.remove(path, progress)
    return done


def _publish_metadata(
    store: LakeStore, done: Compacted, dataset_name: str, progress: Progress | None
) -> None:
    empty = pa.table({"code": pa.array([], pa.string()), "description": pa.array([], pa.string())})
    subjects = done.subjects if done.subjects is not None else pa.array([], pa.int64())
    done.codes = metadata.update_codes(store, done.new_rows or empty, progress)
    done.subjects_listed = metadata.update_splits(store, subjects, progress)
    metadata.write_dataset(store, dataset_name, progress)


def _current(con: duckdb.DuckDBPyConnection, shards: list[pa.Table]) -> str:
    """A relation of the touched shards' rows, older than any append file's (version -1)."""
    if not shards:
        return "(SELECT * FROM pending WHERE false)"
    con.register("shards", pa.concat_tables(shards))
    return (
        f"(SELECT {_COLUMNS}, -1::BIGINT AS version, 0::TINYINT AS kind, "
        f"NULL::BIGINT AS merge_into, NULL::VARCHAR AS description "
        f"FROM shards)"
    )


# Rows of the touched shards and the append files; each subject as merged; for each fact only
# the rows of its newest version, tombstones dropping it; sorted for the shard files.
_FOLD = """
WITH rows AS (
    SELECT * FROM {current}
    UNION ALL BY NAME
    SELECT * FROM pending WHERE kind < 2
), moved AS (
    SELECT r.* REPLACE (coalesce(m.survivor, r.subject_id) AS subject_id)
    FROM rows r LEFT JOIN merges m ON r.subject_id = m.retired
), ranked AS (
    SELECT *, max(version) OVER (PARTITION BY fact_id) AS newest FROM moved
)
SELECT p.shard, {columns}
FROM ranked JOIN places p USING (subject_id)
WHERE version = newest AND kind = 0
ORDER BY p.shard, subject_id, time NULLS FIRST, code, numeric_value, text_value, fact_id
"""


def _merges(pending: pa.Table) -> dict[int, int]:
    """retired -> survivor of the append files' A40s, chains followed to their end."""
    rows = pending.filter(pc.equal(pending["kind"], MERGE))
    direct = dict(zip(rows["subject_id"].to_pylist(), rows["merge_into"].to_pylist(), strict=True))
    resolved: dict[int, int] = {}
    for retired in direct:
        survivor, seen = direct[retired], {retired}
        while survivor in direct and survivor not in seen:  # a cycle stops where it closes
            seen.add(survivor)
            survivor = direct[survivor]
        if survivor != retired:
            resolved[retired] = survivor
    return resolved


def _write_shards(
    store: LakeStore, result: pa.Table, touched: set[str], progress: Progress | None
) -> set[str]:
    written: set[str] = set()
    shards = result["shard"]
    start = 0
    counts = pc.value_counts(shards)  # in order of first appearance: sorted, as the rows are
    for entry in counts:
        name, count = entry["values"].as_py(), entry["counts"].as_py()
        part = result.slice(start, count).drop_columns(["shard"]).cast(DATA_SCHEMA)
        store.write_parquet(part, store.path(name), progress)
        written.add(name)
        start += count
    for name in touched - written:
        if store.exists(store.path(name)):
            store.remove(store.path(name), progress)
            written.add(name)
    return written
