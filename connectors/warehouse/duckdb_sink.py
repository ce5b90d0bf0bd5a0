"""The warehouse sink: research topics -> OMOP-shaped tables in DuckDB (the embedded default).

Each batch is written in one transaction with upserts keyed by ids derived from event ids, then
its offsets are stored: a crash between the two replays the batch, and the replay changes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from confluent_kafka import Consumer, KafkaException
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors.warehouse import omop
from hl7bus.schemas import codec

log = logging.getLogger(__name__)

ROWS = Counter("hl7bus_warehouse_rows_total", "Rows upserted.", ["table"])
SKIPPED = Counter("hl7bus_warehouse_skipped_total", "Records not written, by reason.", ["reason"])


def _default_path() -> Path:
    return Path.home() / ".cache" / "hl7bus" / "warehouse.duckdb"


class WarehouseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(default_factory=_default_path, description="DuckDB database file.")
    group_id: str = Field(
        "hl7bus-warehouse", description="Kafka consumer group of the warehouse sink."
    )
    batch_size: int = Field(500, ge=1, description="Most records written per transaction.")
    poll_timeout_s: float = Field(
        0.5, gt=0, description="Longest wait for a batch to fill before writing what came."
    )


_TABLES: dict[str, tuple[str, tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]]] = {
    "Patient": ("person", omop.PERSON_COLUMNS, omop.person_row),
    "Observation": ("measurement", omop.MEASUREMENT_COLUMNS, omop.measurement_row),
}


def open_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path))
    for statement in omop.DDL:
        conn.execute(statement)
    return conn


def write_batch(conn: duckdb.DuckDBPyConnection, values: list[bytes]) -> dict[str, int]:
    """Upsert one batch of encoded research events in one transaction; rows per table."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for value in values:
        try:
            event_type, event = codec.decode(value)
        except codec.CodecError:
            SKIPPED.labels("undecodable").inc()
            continue
        target = _TABLES.get(event_type)
        if target is None:
            SKIPPED.labels("no_table").inc()
            continue
        rows.setdefault(event_type, []).append(target[2](event))
    conn.execute("BEGIN TRANSACTION")
    try:
        for event_type, batch in rows.items():
            table, columns, _ = _TABLES[event_type]
            marks = ", ".join("?" for _ in columns)
            conn.executemany(
                f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})", batch
            )
        conn.execute("COMMIT")
    except Exception:
        conn.execute("ROLLBACK")
        raise
    counts = {_TABLES[t][0]: len(b) for t, b in rows.items()}
    for table, count in counts.items():
        ROWS.labels(table).inc(count)
    return counts


def run_sink(
    cfg: WarehouseConfig,
    consumer_config: dict[str, Any],
    topic_names: list[str],
    stop: threading.Event,
) -> None:
    """Consume until `stop` is set; store offsets only after each batch is committed."""
    conn = open_warehouse(cfg.path)
    consumer = Consumer(consumer_config)
    consumer.subscribe(topic_names)
    try:
        while not stop.is_set():
            records = consumer.consume(cfg.batch_size, cfg.poll_timeout_s)
            if not records:
                continue
            values = []
            for record in records:
                error = record.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("consumer: %s", error.name())
                    continue
                value = record.value()
                if value is not None:
                    values.append(value)
            write_batch(conn, values)
            for record in records:
                consumer.store_offsets(record)
    finally:
        consumer.close()  # commits the stored offsets
        conn.close()
