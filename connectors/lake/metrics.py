"""The lake sink's Prometheus metrics (docs/architecture.md: bounded labels, never ids).

Labels: event_type (the ten research types), outcome (written, skipped, dlq), reason and code
(fixed vocabularies of the sink: mapping error codes, exception types).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from hl7bus.schemas import telemetry

#: The sink's share of the shared vocabulary (schemas/telemetry.py, docs/operations.md): a
#: batch is committed once its append file is published and its offsets stored.
STAGE = telemetry.StageMetrics("lake", "sinking")
SINK_UP = telemetry.SINK_UP.labels("lake")
SINK_LAST_COMMIT = telemetry.SINK_LAST_COMMIT.labels("lake")

RECORDS_IN = Counter("hl7bus_lake_in_records_total", "Research records consumed.", ["event_type"])
RECORDS = Counter(
    "hl7bus_lake_records_total",
    "Research records by outcome: written (to an append file), skipped (no MEDS row on "
    "purpose: an order, a preliminary result), dlq.",
    ["event_type", "outcome"],
)
ROWS = Counter("hl7bus_lake_rows_total", "MEDS rows written to append files.")
DLQ = Counter("hl7bus_lake_dlq_total", "Records sent to the DLQ, by reason code.", ["reason"])
ERRORS = Counter(
    "hl7bus_lake_errors_total",
    "Batches or compaction passes that failed (not the data), by exception type.",
    ["code"],
)
BATCH_LATENCY = Histogram(
    "hl7bus_lake_batch_latency_seconds",
    "Time to write one consumed batch: its append file, its DLQ records, its offsets.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMPACTION = Histogram(
    "hl7bus_lake_compaction_seconds",
    "Time of one compaction pass (append files folded into shards and metadata published).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
PENDING_FILES = Gauge("hl7bus_lake_pending_files", "Append files waiting for compaction.")
SHARDS = Gauge("hl7bus_lake_shards", "Shard files in the lake after the last pass.")
LAKE_ROWS = Gauge("hl7bus_lake_published_rows", "MEDS rows in the shards after the last pass.")
SUBJECTS = Gauge("hl7bus_lake_subjects", "Subjects listed in metadata/subject_splits.parquet.")
LAST_PUBLISH = Gauge(
    "hl7bus_lake_last_publish_timestamp_seconds", "Unix time of the last compaction pass."
)
NEWEST_RECORD = Gauge(
    "hl7bus_lake_newest_record_timestamp_seconds",
    "Kafka timestamp (when the worker produced it) of the newest record published in a shard; "
    "time() minus it is the age of the newest row.",
)
