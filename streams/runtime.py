"""The one module that imports faust: it wires the pure steps of streams/steps.py to Kafka.

Processing is at-least-once: each stage takes records in batches (take_events), sends all
their outputs, waits until Kafka has confirmed every one, and only then are the batch's offsets
acked for faust's periodic commit. Sinks upsert by event id, so a redelivered record changes
nothing. A killed worker re-emits at most the records past the last commit
(tests/test_worker_faults.py says exactly what is guaranteed).

The worker serves /metrics, /healthz and /readyz (ready: source partitions assigned, no
rebalance or table recovery going on, no partition stalled) on worker.metrics_port.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.schemas import topics
from hl7bus.schemas.topics import TopicCatalog
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.steps import (
    DEID_STAGE,
    DeidSettings,
    Output,
    Sighting,
    dedupe_check,
    deidentify_step,
    parse_step,
)

log = logging.getLogger(__name__)

#: Serves /metrics and /readyz on (host, port) with the given readiness check until cancelled.
ServeHealth = Callable[[str, int, Callable[[], Awaitable[bool]]], Awaitable[None]]

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

# Duplicate sends are recognized for this long after the first sighting (WorkerConfig default).
DEDUPE_WINDOW_S = 7 * 24 * 3600
DEDUPE_TABLE = "dedupe"


# Loggers that write record keys and values at DEBUG.
_VALUE_LOGGERS = ("faust.topics", "faust.transport.drivers.aiokafka")


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
        45.0,
        ge=6.0,
        le=300.0,
        description=(
            "How long the broker waits for a silent worker before giving its partitions to the "
            "others; a killed worker's partitions resume after at most this."
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
        2.8,
        gt=0,
        description=(
            "How often the offsets of confirmed batches are committed (faust's default). A "
            "restarted worker re-emits at most what came after the last commit; sinks upsert."
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
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "/readyz fails when an assigned partition has records waiting and none of them was "
            "processed for this long (a stalled partition)."
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


class Progress:
    """Where each source partition got to, for /readyz.

    A partition is stalled when records are waiting in it (high watermark beyond the next
    offset to process) and none of them was processed for the timeout: a partition that stopped
    fetching after a rebalance (faust #629) or an agent that died (#523). An idle partition
    is never stalled; its clock starts when records begin to wait.
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}
        self._since: dict[Any, float] = {}

    def processed(self, tp: Any, offset: int, now: float) -> None:
        self._next[tp] = offset + 1
        self._since[tp] = now

    def stalled(
        self,
        highwaters: Mapping[Any, int | None],
        committed: Mapping[Any, int | None],
        now: float,
        timeout: float,
    ) -> list[Any]:
        found = []
        for tp, high in highwaters.items():
            start = self._next.get(tp)
            if start is None:
                start = committed.get(tp) or 0
            if high is None or high <= start:
                self._since[tp] = now
                continue
            if now - self._since.setdefault(tp, now) > timeout:
                found.append(tp)
        return found


def build_app(
    cfg: WorkerConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    policy: Policy,
    pseudonymize: Pseudonymizer,
    leak_check: bool,
    stages: tuple[str, ...] | None = None,
    serve_health: ServeHealth | None = None,
) -> Any:
    """The faust app of the worker. `stages` (default: cfg.stages) selects the agents: parse
    (hl7.raw -> hl7.events) and deidentify (hl7.events -> research.*; with parse, it runs inside
    the parse agent instead, on the events in memory); none for (). `serve_health`, given by
    the composition root, serves /metrics and /readyz on worker.metrics_port while the app
    runs."""
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
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
        broker_commit_interval=cfg.commit_interval_s,
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
    window_us = cfg.dedupe_window_s * 1_000_000
    selected = tuple(cfg.stages) if stages is None else stages
    fused = "parse" in selected and "deidentify" in selected
    deid = DeidSettings(policy, pseudonymize, leak_check)
    progress = Progress()
    sources = {catalog.name(tid) for tid in source_topics(selected)}

    async def emit(stage: str, produced: list[Output]) -> None:
        """Send every output of a batch, then wait for all of Kafka's confirmations.

        The batch's offsets are acked only after this returns (take_events acks after the
        loop body), so at-least-once holds; a failed delivery raises, the agent crashes and
        the records are redelivered. One wait per batch instead of one per record lets the
        producer put many records in one request.
        """
        pending = []
        for out in produced:
            sent = await outputs[out.topic_id].send(
                key=out.key, value=out.value, headers=out.headers
            )
            pending.append((out, sent))
        for out, sent in pending:
            await sent
            # The fused parse agent also emits de-identification's outputs: count them there.
            by = "deidentify" if _deidentifying(out) else stage
            if out.topic_id == topics.DLQ:
                RECORDS.labels(by, "dlq").inc()
                ERRORS.labels(by, dict(out.headers).get("hl7bus.reason", b"?").decode()).inc()
            else:
                RECORDS.labels(by, "ok").inc()

    def batches(stream: Any) -> Any:
        return stream.take_events(cfg.batch_max_records, cfg.batch_wait_ms / 1000.0)

    def done(stage: str, batch: list[Any], started: float) -> None:
        now = time.monotonic()
        LATENCY.labels(stage).observe(time.perf_counter() - started)
        for event in batch:
            progress.processed(event.message.tp, event.message.offset, now)

    async def parse_agent(stream: Any) -> None:
        in_batch: dict[str, int] = {}  # sightings of the current batch, not yet in the table

        def first_seen(key: str) -> int | None:
            found = in_batch.get(key)
            return found if found is not None else seen.get(key)

        async for batch in batches(stream):
            started = time.perf_counter()
            RECORDS_IN.labels("parse").inc(len(batch))
            produced: list[Output] = []
            sightings: list[tuple[Any, Sighting]] = []
            in_batch.clear()
            for event in batch:
                sighting, duplicate = dedupe_check(event.value, first_seen, window_us)
                if duplicate:
                    DUPLICATES.labels(_feed_label(event.value)).inc()
                    continue
                produced += parse_step(event.key, event.value, zone, deid if fused else None)
                if sighting is not None:
                    in_batch[sighting.key] = sighting.received_us
                    sightings.append((event, sighting))
            if fused:
                RECORDS_IN.labels("deidentify").inc(
                    sum(1 for out in produced if out.topic_id == topics.EVENTS)
                )
            await emit("parse", produced)
            # Remembered only after the outputs are delivered: a crash in between re-emits
            # (same event ids, sinks upsert) rather than losing the message.
            for event, sighting in sightings:
                # The table writes its changelog to the partition of the current event.
                _set_current_event(event)
                seen[sighting.key] = sighting.received_us
            done("parse", batch, started)

    async def deidentify_agent(stream: Any) -> None:
        async for batch in batches(stream):
            started = time.perf_counter()
            RECORDS_IN.labels("deidentify").inc(len(batch))
            produced: list[Output] = []
            for event in batch:
                produced += deidentify_step(
                    event.value, deid.policy, deid.pseudonymize, deid.leak_check
                )
            await emit("deidentify", produced)
            done("deidentify", batch, started)

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_value_logs() -> None:
        # faust logs every sent key and value at DEBUG (PHI in logs, and costly even when the
        # record is dropped later): never below INFO for these loggers, whatever --loglevel.
        for name in _VALUE_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))

    agents = {
        "parse": (topics.RAW, parse_agent),
        "deidentify": (topics.EVENTS, deidentify_agent),
    }
    for stage in selected:
        if fused and stage == "deidentify":
            continue  # done by the parse agent
        source, agent = agents[stage]
        app.agent(outputs[source], name=stage)(agent)

    async def ready() -> bool:
        """Source partitions assigned, no rebalance or table recovery going on, none stalled."""
        consumer = app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        if not assigned or app.rebalancing or getattr(app, "in_recovery", False):
            return False
        committed = getattr(consumer, "_committed_offset", {})
        highwaters = {tp: consumer.highwater(tp) for tp in assigned}
        return not progress.stalled(
            highwaters,
            {tp: committed.get(tp) for tp in assigned},
            time.monotonic(),
            cfg.stall_timeout_s,
        )

    if cfg.metrics_port is not None and serve_health is not None:
        serve, host, port = serve_health, cfg.metrics_host, cfg.metrics_port

        @app.task  # type: ignore[untyped-decorator]
        async def health() -> None:
            await serve(host, port, ready)

    return app


def run(app: Any, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM; faust handles the signals and a clean stop."""
    import faust

    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _deidentifying(out: Output) -> bool:
    if out.topic_id == topics.DLQ:
        return dict(out.headers).get("hl7bus.stage") == DEID_STAGE.encode()
    return out.topic_id.startswith(topics.research(""))


def _set_current_event(event: Any) -> None:
    """Make `event` faust's current event (tables pick the changelog partition from it)."""
    import weakref

    from faust.streams import _current_event

    _current_event.set(weakref.ref(event))


def _feed_label(value: bytes) -> str:
    from hl7bus.schemas import codec

    try:
        return str(codec.decode(value)[1]["feed"])
    except codec.CodecError:
        return "?"
