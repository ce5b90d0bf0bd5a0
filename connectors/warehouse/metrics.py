"""The warehouse sink's Prometheus metrics (docs/architecture.md: bounded labels, never ids).

Labels: event_type (the ten research types), outcome (written, skipped, dlq), table (the OMOP
tables), op (upsert, delete), reason and code (fixed vocabularies of the sink).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from hl7bus.schemas import telemetry

#: The sink's share of the shared vocabulary (schemas/telemetry.py).
STAGE = telemetry.StageMetrics("warehouse", "sinking")
SINK_UP = telemetry.SINK_UP.labels("warehouse")
SINK_LAST_COMMIT = telemetry.SINK_LAST_COMMIT.labels("warehouse")

RECORDS_IN = Counter(
    "hl7bus_warehouse_in_records_total", "Research records consumed.", ["event_type"]
)
RECORDS = Counter(
    "hl7bus_warehouse_records_total",
    "Research records by outcome: written, skipped (nothing to write on purpose: a "
    "preliminary result, an event type without a table), dlq.",
    ["event_type", "outcome"],
)
ROWS = Counter(
    "hl7bus_warehouse_rows_total", "OMOP rows written, by table and op.", ["table", "op"]
)
DLQ = Counter("hl7bus_warehouse_dlq_total", "Records sent to the DLQ, by reason code.", ["reason"])
ERRORS = Counter(
    "hl7bus_warehouse_errors_total",
    "Batches the database failed (not the data), by exception type; nothing of them was kept.",
    ["code"],
)
BATCH_LATENCY = Histogram(
    "hl7bus_warehouse_batch_latency_seconds",
    "Time to write one consumed batch: its transaction, its DLQ records, its offsets.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FRESHNESS = Histogram(
    "hl7bus_warehouse_freshness_seconds",
    "From the listener's receipt of the message (the event's received_at) to the commit of its "
    "rows, when the de-identification policy keeps received_at unchanged (limited); else from "
    "the research record's Kafka timestamp (the worker produced it).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
LAST_COMMIT = Gauge(
    "hl7bus_warehouse_last_commit_timestamp_seconds",
    "Unix time of the last committed batch.",
)
DATABASE_UP = Gauge(
    "hl7bus_warehouse_database_up",
    "1 while the last write to the database succeeded, 0 after it failed (and while an outage "
    "lasts).",
)
OUTAGES = Counter(
    "hl7bus_warehouse_outages_total",
    "Database outages the sink waited out (consumption paused, retried with backoff), by "
    "reason: unreachable, locked, disk_full, timeout, unavailable.",
    ["reason"],
)
OUTAGE_SECONDS = Gauge(
    "hl7bus_warehouse_outage_seconds",
    "How long the current database outage has lasted; 0 while the database takes writes.",
)
