"""The one module that imports faust: it wires the pure steps of streams/steps.py to Kafka.

Processing is at-least-once: faust commits an offset only after the agent has finished with
the record, and each output is awaited until Kafka confirms it. Sinks upsert by event id, so a
redelivered record changes nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.ops import topics
from hl7bus.ops.topics import TopicCatalog
from hl7bus.streams.deidentify import Policy, Pseudonymizer
from hl7bus.streams.steps import Output, dedupe_check, deidentify_step, parse_step

log = logging.getLogger(__name__)

RECORDS = Counter(
    "hl7bus_stream_records_total", "Records out of a stage, by outcome.", ["stage", "outcome"]
)
RECORDS_IN = Counter("hl7bus_stream_in_records_total", "Records into a stage.", ["stage"])
ERRORS = Counter(
    "hl7bus_stream_errors_total",
    "Records a stage sent to the DLQ, by error code.",
    ["stage", "code"],
)
DUPLICATES = Counter(
    "hl7bus_stream_duplicates_total",
    "Duplicate sends (same feed and MSH-10 within the window) counted and not re-emitted.",
    ["feed"],
)
LATENCY = Histogram(
    "hl7bus_stream_latency_seconds",
    "Time from a record's arrival at a stage to the delivery of all its outputs.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# Duplicate sends are recognized for this long after the first sighting.
DEDUPE_WINDOW_S = 7 * 24 * 3600
DEDUPE_TABLE = "dedupe"


def changelog_topic(app_id: str) -> str:
    """faust's name for the dedupe table's changelog topic ({app id}-{table}-changelog)."""
    return f"{app_id}-{DEDUPE_TABLE}-changelog"


def declare_changelog(admin: Any, app_id: str, partitions: int, replication: int = 1) -> None:
    """Create the compacted changelog topic of the dedupe table if it is missing.

    The app runs with topic_allow_declare=False (topics come from the catalog), so faust does
    not create it; its partitions must match hl7.raw's, whose partitions the table follows.
    """
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    name = changelog_topic(app_id)
    if name in admin.list_topics(timeout=15).topics:
        return
    topic = NewTopic(name, partitions, replication, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([topic]).values():
        try:
            future.result(timeout=30)
        except Exception as exc:  # created meanwhile by another worker
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def _default_data_dir() -> Path:
    return Path.home() / ".cache" / "hl7bus" / "worker"


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(
        "hl7bus-worker",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="faust app id: the Kafka consumer group of the stream processors.",
    )
    timezone: str = Field(
        "Asia/Seoul",
        description="Zone of HL7 timestamps that carry no offset (IANA name).",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir, description="faust's local state directory."
    )
    stream_buffer_maxsize: int = Field(
        4096, ge=16, description="Records faust buffers per partition before pausing fetch."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Asia/Seoul"
            ) from None
        return value


def build_app(
    cfg: WorkerConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    policy: Policy,
    pseudonymize: Pseudonymizer,
    leak_check: bool,
) -> Any:
    import faust

    brokers = ";".join(f"kafka://{host}" for host in bootstrap.split(","))
    app = faust.App(
        cfg.app_id,
        broker=brokers,
        # Tables live in memory and are rebuilt from their changelog topic on start.
        store="memory://",
        # faust's leader-assignor topic fails to be created on Kafka 4 brokers; we need none.
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(cfg.data_dir),
        stream_buffer_maxsize=cfg.stream_buffer_maxsize,
        producer_acks=-1,
        topic_allow_declare=False,
    )
    zone = ZoneInfo(cfg.timezone)

    def topic(topic_id: str) -> Any:
        return app.topic(
            catalog.name(topic_id),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    outputs = {tid: topic(tid) for tid in catalog.specs}
    # feed|MSH-10 -> when it was first received (µs); changelog-backed, so it survives restarts.
    seen = app.Table(
        DEDUPE_TABLE,
        default=None,
        partitions=catalog.specs[topics.RAW].partitions,
        key_type=str,
        value_type=int,
        help="First sighting of each feed|MSH-10, for duplicate-send detection.",
    )
    window_us = DEDUPE_WINDOW_S * 1_000_000

    async def emit(stage: str, produced: list[Output]) -> None:
        for out in produced:
            sent = await outputs[out.topic_id].send(
                key=out.key, value=out.value, headers=out.headers
            )
            await sent  # wait for Kafka's confirmation before the offset may be committed
            if out.topic_id == topics.DLQ:
                RECORDS.labels(stage, "dlq").inc()
                ERRORS.labels(stage, dict(out.headers).get("hl7bus.reason", b"?").decode()).inc()
            else:
                RECORDS.labels(stage, "ok").inc()

    @app.agent(outputs[topics.RAW], name="parse")
    async def parse_agent(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            RECORDS_IN.labels("parse").inc()
            sighting, duplicate = dedupe_check(event.value, seen.get, window_us)
            if duplicate:
                DUPLICATES.labels(_feed_label(event.value)).inc()
                continue
            await emit("parse", parse_step(event.key, event.value, zone))
            if sighting is not None:
                # Remembered only after the outputs are delivered: a crash in between re-emits
                # (same event ids, sinks upsert) rather than losing the message.
                seen[sighting.key] = sighting.received_us
            LATENCY.labels("parse").observe(time.perf_counter() - started)

    @app.agent(outputs[topics.EVENTS], name="deidentify")
    async def deidentify_agent(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            RECORDS_IN.labels("deidentify").inc()
            await emit("deidentify", deidentify_step(event.value, policy, pseudonymize, leak_check))
            LATENCY.labels("deidentify").observe(time.perf_counter() - started)

    return app


def run(app: Any, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM; faust handles the signals and a clean stop."""
    import faust

    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _feed_label(value: bytes) -> str:
    from hl7bus.schemas import codec

    try:
        return str(codec.decode(value)[1]["feed"])
    except codec.CodecError:
        return "?"
