"""The worker's settings and the names of what it consumes and keeps (no faust here).

`worker.*` in the configuration file (docs/config.md), the catalog ids of a worker's source
topics, and its dedupe table's changelog topic, which `hl7bus worker` creates before faust
starts. Read by the configuration loader and the ops commands without loading the faust
adapter (streams/runtime.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hl7bus.schemas import topics

# Duplicate sends are recognized for this long after the first sighting (WorkerConfig default).
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
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    name = changelog_topic(app_id)
    if name in admin.list_topics(timeout=15).topics:
        return
    topic = NewTopic(name, partitions, replication, config={"cleanup.policy": "compact"})
    for future in admin.create_topics([topic]).values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:  # created meanwhile by another worker
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


Stage = Literal["parse", "deidentify"]
ALL_STAGES: tuple[Stage, ...] = ("parse", "deidentify")


def source_topics(stages: Sequence[str]) -> list[str]:
    """Catalog ids of the topics a worker running `stages` consumes (deidentify reads
    hl7.events only when parse does not run in the same worker)."""
    sources = [topics.RAW] if "parse" in stages else []
    if "deidentify" in stages and "parse" not in stages:
        sources.append(topics.EVENTS)
    return sources


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
    dedupe_window_s: int = Field(
        DEDUPE_WINDOW_S,
        ge=1,
        description=(
            "Duplicate sends (same feed and MSH-10) are counted and not re-emitted for this "
            "many seconds after the first sighting."
        ),
    )
    session_timeout_s: float = Field(
        10.0,
        ge=6.0,
        le=300.0,
        description=(
            "How long the broker waits for a silent worker before giving its partitions to the "
            "others; a killed worker's partitions resume after at most this (heartbeats every "
            "third of it, at most 3 s). Raise it for workers with long pauses (GC, a busy VM) "
            "that would otherwise be taken for dead and cause a rebalance."
        ),
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics, /healthz, /readyz (0.0.0.0 for all)."
    )
    metrics_port: int | None = Field(
        9465, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )
    batch_max_records: int = Field(
        500,
        ge=1,
        description=(
            "Records a stage takes at once; their outputs are confirmed by Kafka together "
            "before the batch's offsets may be committed."
        ),
    )
    batch_wait_ms: float = Field(
        10.0,
        gt=0,
        description="How long a stage waits to fill a batch when records trickle in.",
    )
    commit_interval_s: float = Field(
        1.0,
        gt=0,
        description=(
            "How often the offsets of confirmed batches are committed. A crashed worker's "
            "partitions are redone from the last commit (at most this long of work plus the "
            "batch in flight); only the batch in flight is re-emitted, the rest counted as "
            "redeliveries; sinks upsert."
        ),
    )
    commit_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "/readyz fails when processed records of a partition have waited this long for "
            "their offset commit (commits not moving: a crash now would redo all of them)."
        ),
    )
    stages: list[Stage] = Field(
        default_factory=lambda: list(ALL_STAGES),
        min_length=1,
        description=(
            "Stages this worker runs. Both (the default): each event's research form is made "
            "in the parse stage from the event in memory, with no second decode. `deidentify` "
            "alone reads hl7.events (stages scaled apart, or research topics re-made from "
            "stored events under a new policy: give that worker its own app_id); `parse` alone "
            "writes identified events only."
        ),
    )
    identified_output: bool = Field(
        True,
        description=(
            "Write the identified events to hl7.events. false, for deployments without "
            "identified consumers (needs both stages): no hl7.events records and no identified "
            "encode; research topics and the DLQ are written as usual, duplicate detection and "
            "its changelog are unchanged."
        ),
    )
    code_maps: list[Path] = Field(
        default_factory=list,
        description=(
            "Extra code-map CSV files (the columns of streams/maps/codes/example.csv), read at "
            "start beside the packaged maps; a bad row stops the start naming the file, row "
            "and column. After a change, `hl7bus replay` re-runs the affected messages."
        ),
    )
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "/readyz fails when an assigned partition has records waiting and none of them was "
            "processed for this long (a stalled partition)."
        ),
    )
    watchdog_s: float | None = Field(
        300.0,
        gt=0,
        description=(
            "A worker stuck this long exits with code 75 for its supervisor to restart it: a "
            "rebalance or table recovery that makes no progress, a partition with records "
            "waiting and none processed, or offset commits that do not move (faust can hang "
            "after a rebalance: docs/operations.md, HL7BusPartitionStuck). Nothing is lost: "
            "the restarted worker redoes the uncommitted tail. Checked once the worker's first "
            "table recovery is done. null: never (only /readyz reports it)."
        ),
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

    @model_validator(mode="after")
    def _identified_output_needs_both_stages(self) -> WorkerConfig:
        if not self.identified_output and set(self.stages) != set(ALL_STAGES):
            raise ValueError(
                "identified_output: false needs both stages in worker.stages (parse and "
                "deidentify): the parse stage alone writes only hl7.events, the deidentify "
                "stage alone reads it"
            )
        return self
