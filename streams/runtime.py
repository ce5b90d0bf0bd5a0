"""The one module that imports faust: it wires the pure steps of streams/steps.py to Kafka.

Processing is at-least-once: faust commits an offset only after the agent has finished with
the record, and each output is awaited until Kafka confirms it. Sinks upsert by event id, so a
redelivered record changes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.ops import topics
from hl7bus.ops.topics import TopicCatalog
from hl7bus.streams.deidentify import Policy, Pseudonymizer
from hl7bus.streams.steps import Output, deidentify_step, parse_step

log = logging.getLogger(__name__)

RECORDS = Counter(
    "hl7bus_stream_records_total", "Records out of a stage, by outcome.", ["stage", "outcome"]
)


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

    async def emit(stage: str, produced: list[Output]) -> None:
        for out in produced:
            sent = await outputs[out.topic_id].send(
                key=out.key, value=out.value, headers=out.headers
            )
            await sent  # wait for Kafka's confirmation before the offset may be committed
            RECORDS.labels(stage, "dlq" if out.topic_id == topics.DLQ else "ok").inc()

    @app.agent(outputs[topics.RAW], name="parse")
    async def parse_agent(stream: Any) -> None:
        async for event in stream.events():
            await emit("parse", parse_step(event.key, event.value, zone))

    @app.agent(outputs[topics.EVENTS], name="deidentify")
    async def deidentify_agent(stream: Any) -> None:
        async for event in stream.events():
            await emit("deidentify", deidentify_step(event.value, policy, pseudonymize, leak_check))

    return app


def run(app: Any, loglevel: str = "warning") -> None:
    """Run the worker until SIGINT/SIGTERM; faust handles the signals and a clean stop."""
    import faust

    faust.Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
