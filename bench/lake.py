"""`hl7bus bench lake`: research events/s into MEDS rows vs pyarrow writing the same rows in one
go, and compaction time per million rows.

Workload: the warehouse benchmark's mixed research stream (bench/warehouse.py: 45 encoded
research records per simulated stay, every research type, one result in twenty corrected).

Contenders, measured in alternating rounds, each on a fresh lake folder:

- `sink`: `LakeWriter.write` as `hl7bus sink lake` runs it, in batches of `lake.batch_size`:
  decode, map to MEDS rows, resolve subjects through the warehouse's key map (a fresh DuckDB
  file), publish one append file per batch (temp + fsync + os.replace). Compaction is timed
  apart: one pass folding every append file into the shards and metadata.
- `direct`: the peer. The same MEDS rows (the sink's own, as Python column lists) made into one
  Arrow table and written with one `pyarrow.parquet.write_table` call, same schema and
  compression: what an ETL that already holds every row would pay. No decode, no mapping, no
  key map, no sort, no fsync.

- `storage_path`: the sink's own storage alone, from the same rows already decoded, mapped and
  resolved (its append-file tables, made untimed): append files published, then one
  compaction pass. Its `ratio_to_direct` is the direct write's time over this one's: what the
  lake's always-valid publication costs against one plain write of the same rows.

`ratio` is sink events/s over direct events/s (the direct write's events/s is the stream's
records over its time); the target is 0.5. `ratio_with_compaction` counts the pass too.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.parse import loadavg, machine
from bench.warehouse import RECORDS_PER_STAY, stream

TARGET_RATIO = 0.5


def _layout() -> Any:
    from hl7bus.connectors.lake.config import LakeConfig

    return LakeConfig().layout()


def run_sink(values: list[bytes], batch_size: int, folder: Path) -> dict[str, Any]:
    from hl7bus.connectors.lake.compaction import compact
    from hl7bus.connectors.lake.keys import WarehouseKeys
    from hl7bus.connectors.lake.store import LakeStore
    from hl7bus.connectors.lake.writer import ROWS, LakeWriter
    from hl7bus.connectors.warehouse.config import WarehouseConfig
    from hl7bus.connectors.warehouse.writer import Incoming

    keys = WarehouseKeys(WarehouseConfig(path=folder / "warehouse.duckdb"))
    keys.open()
    store = LakeStore(folder / "lake", _layout())
    store.open()
    writer = LakeWriter(store, keys)
    rows = 0
    try:
        started = time.perf_counter()
        for start in range(0, len(values), batch_size):
            batch = [Incoming(value) for value in values[start : start + batch_size]]
            rows += writer.write(batch).rows[ROWS]
        appended = time.perf_counter() - started
    finally:
        keys.close()
    started = time.perf_counter()
    done = compact(store)
    compacted = time.perf_counter() - started
    return {
        "rows": rows,
        "append_files": done.files,
        "append_s": appended,
        "compact_s": compacted,
        "shard_rows": done.rows,
        "shards": len(done.shards),
    }


def incremental_pass(folder: Path, values: list[bytes]) -> dict[str, Any]:
    """One small batch into the full lake, then a pass: the near-real-time cost."""
    from hl7bus.connectors.lake.compaction import compact
    from hl7bus.connectors.lake.keys import WarehouseKeys
    from hl7bus.connectors.lake.store import LakeStore
    from hl7bus.connectors.lake.writer import LakeWriter
    from hl7bus.connectors.warehouse.config import WarehouseConfig
    from hl7bus.connectors.warehouse.writer import Incoming

    keys = WarehouseKeys(WarehouseConfig(path=folder / "warehouse.duckdb"))
    keys.open()
    store = LakeStore(folder / "lake", _layout())
    store.open()
    try:
        LakeWriter(store, keys).write([Incoming(value) for value in values])
    finally:
        keys.close()
    started = time.perf_counter()
    done = compact(store)
    return {
        "records": len(values),
        "seconds": round(time.perf_counter() - started, 4),
        "shards_rewritten": len(done.shards),
        "rows_rewritten": done.rows,
    }


class _Capture:
    """A lake store that keeps the append files' tables in memory (the storage contender's
    input: the rows already decoded, mapped and resolved)."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []

    @property
    def next_seq(self) -> int:
        return len(self.tables)

    def append(self, table: pa.Table) -> None:
        self.tables.append(table)


def mapped_tables(values: list[bytes], batch_size: int, folder: Path) -> list[pa.Table]:
    from hl7bus.connectors.lake.keys import WarehouseKeys
    from hl7bus.connectors.lake.writer import LakeWriter
    from hl7bus.connectors.warehouse.config import WarehouseConfig
    from hl7bus.connectors.warehouse.writer import Incoming

    keys = WarehouseKeys(WarehouseConfig(path=folder / "keys.duckdb"))
    keys.open()
    capture = _Capture()
    writer = LakeWriter(capture, keys)  # type: ignore[arg-type]
    try:
        for start in range(0, len(values), batch_size):
            writer.write([Incoming(value) for value in values[start : start + batch_size]])
    finally:
        keys.close()
    return capture.tables


def run_storage(tables: list[pa.Table], folder: Path) -> tuple[float, float]:
    """The sink's storage path alone: append files published, then one compaction pass."""
    from hl7bus.connectors.lake.compaction import compact
    from hl7bus.connectors.lake.store import LakeStore

    store = LakeStore(folder / "storage", _layout())
    store.open()
    started = time.perf_counter()
    for table in tables:
        store.append(table)
    appended = time.perf_counter() - started
    compact(store)
    return appended, time.perf_counter() - started - appended


def published_columns(folder: Path) -> dict[str, list[Any]]:
    """The rows the sink made (its shards), as the Python column lists a direct write starts
    from."""
    table = pa.concat_tables(
        pq.read_table(path) for path in sorted((folder / "lake" / "data").glob("*/*.parquet"))
    )
    return {name: table[name].to_pylist() for name in table.column_names}


def run_direct(columns: dict[str, list[Any]], folder: Path) -> float:
    from hl7bus.connectors.lake.store import COMPRESSION, DATA_SCHEMA

    started = time.perf_counter()
    table = pa.table(columns, schema=DATA_SCHEMA)
    pq.write_table(table, folder / "direct.parquet", compression=COMPRESSION)
    return time.perf_counter() - started


def run(stays: int = 2000, batch_size: int = 5000, rounds: int = 3) -> dict[str, Any]:
    before = loadavg()
    values = stream(1, stays, seed=7)
    extra = stream(stays + 1, 2, seed=7)  # the incremental pass's batch: two new stays
    sinks: list[dict[str, Any]] = []
    directs: list[float] = []
    storage: list[tuple[float, float]] = []
    incremental: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hl7bus-bench-lake-") as tmp:
        for index in range(rounds):
            folder = Path(tmp) / f"round{index}"
            folder.mkdir()
            sinks.append(run_sink(values, batch_size, folder))
            columns = published_columns(folder)
            directs.append(run_direct(columns, folder))
            storage.append(run_storage(mapped_tables(values, batch_size, folder), folder))
            if index == rounds - 1:
                incremental = incremental_pass(folder, extra)
            shutil.rmtree(folder)
    records = len(values)
    append_s = statistics.median(s["append_s"] for s in sinks)
    compact_s = statistics.median(s["compact_s"] for s in sinks)
    direct_s = statistics.median(directs)
    rows = sinks[0]["rows"]
    shard_rows = sinks[0]["shard_rows"]
    sink_rate = records / append_s
    direct_rate = records / direct_s
    return {
        "benchmark": "lake",
        "command": f"hl7bus bench lake --stays {stays} --batch-size {batch_size} --rounds {rounds}",
        "workload": {
            "records_per_stay": RECORDS_PER_STAY,
            "stays": stays,
            "records": records,
            "meds_rows_appended": rows,
            "meds_rows_published": shard_rows,
            "batch_size": batch_size,
            "append_files": sinks[0]["append_files"],
            "shards": sinks[0]["shards"],
        },
        "sink": {
            "events_per_s": round(sink_rate),
            "rows_per_s": round(rows / append_s),
            "append_s_median": round(append_s, 3),
            "append_s_rounds": [round(s["append_s"], 3) for s in sinks],
        },
        "compaction": {
            "seconds_median": round(compact_s, 3),
            "seconds_rounds": [round(s["compact_s"], 3) for s in sinks],
            "seconds_per_million_rows": round(compact_s / (rows / 1e6), 2),
            "incremental_pass": incremental,
        },
        "peer_direct_pyarrow": {
            "events_per_s": round(direct_rate),
            "rows_per_s": round(shard_rows / direct_s),
            "seconds_median": round(direct_s, 4),
            "seconds_rounds": [round(d, 4) for d in directs],
        },
        "storage_path": {
            "append_s_median": round(statistics.median(a for a, _ in storage), 4),
            "compact_s_median": round(statistics.median(c for _, c in storage), 4),
            "ratio_to_direct": round(direct_s / statistics.median(a + c for a, c in storage), 3),
        },
        "ratio": round(sink_rate / direct_rate, 3),
        "ratio_with_compaction": round(records / (append_s + compact_s) / direct_rate, 3),
        "targets": {"ratio_min": TARGET_RATIO, "met": sink_rate / direct_rate >= TARGET_RATIO},
        "machine": machine(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "pid": os.getpid(),
    }
