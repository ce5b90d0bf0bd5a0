"""worker.identified_output: false on the real broker: `hl7bus worker` (both stages, run as the
operator runs it) fills the research topics and the DLQ and writes nothing to hl7.events; the
dedupe table's changelog is written as with the identified output on."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from confluent_kafka import Producer
from kafka_helpers import apply_catalog, read_topic
from samples import envelope, feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import codec, topics
from hl7bus.schemas.keys import patient_key
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.steps import DeidSettings, parse_step
from hl7bus.streams.worker_config import changelog_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

KAFKA = KafkaConfig()
MESSAGES = 40
SEOUL = ZoneInfo("Asia/Seoul")


def test_without_identified_output_only_research_and_dlq_are_written(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic, events_topic = catalog.name(topics.RAW), catalog.name(topics.EVENTS)
    dlq_topic = catalog.name(topics.DLQ)
    app_id = f"{unique_name}-worker"
    messages = feed()[:MESSAGES]
    values = []
    producer = Producer(kafka_clients.producer_config(KAFKA, kafka_bootstrap))
    for message in messages:
        key = patient_key("research-only", message)
        value = codec.encode(
            "RawMessage", {**envelope(message, "research-only"), "patient_key": key}
        )
        values.append(value)
        producer.produce(raw_topic, value=value, key=key.encode() if key else None)
    producer.produce(raw_topic, value=b"not an envelope", key=b"k")  # -> DLQ, stage parsing
    assert producer.flush(30) == 0

    # What the step makes of the same records (any key: research records carry pseudonyms).
    deid = DeidSettings(Policy.load("kr-pseudonym"), Pseudonymizer(b"x" * 32, "k"), True)
    research_ids = [
        out.topic_id
        for value in values
        for out in parse_step(None, value, SEOUL, deid)
        if out.topic_id.startswith(topics.research(""))
    ]
    research_topics = sorted({catalog.name(tid) for tid in research_ids})

    sightings = len({m.control_id for m in messages})  # dedupe: one per feed|MSH-10
    changelog = changelog_topic(app_id)
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_WORKER_APP_ID": app_id,
        "HL7BUS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(free_port()),
        "HL7BUS_WORKER_IDENTIFIED_OUTPUT": "false",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
        "HL7BUS_DEID_POLICY": "kr-pseudonym",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        procs.start("worker", ["worker"], env)

        def all_written() -> bool:
            sizes = kafka_clients.topic_sizes(
                KAFKA, kafka_bootstrap, [*research_topics, dlq_topic, changelog]
            )
            research = sum(sizes[t] or 0 for t in research_topics)
            return (research, sizes[dlq_topic], sizes[changelog]) == (
                len(research_ids),
                1,
                sightings,
            )

        procs.wait_for("the research topics, the DLQ and the changelog", all_written, 120)
    finally:
        procs.stop_all()

    # Every output of an input record is confirmed before its offset is committed and its
    # sighting written: with every research, DLQ and changelog record there, nothing more is on
    # its way to hl7.events.
    assert kafka_clients.topic_sizes(KAFKA, kafka_bootstrap, [events_topic]) == {events_topic: 0}
    [dlq] = read_topic(kafka_bootstrap, dlq_topic, 1, 20)
    assert dict(dlq.headers() or []).get("hl7bus.reason") == b"undecodable_envelope"
    partitioner = DefaultPartitioner()  # what the worker's producer partitions keys with
    for tid in sorted(set(research_ids)):
        name = catalog.name(tid)
        expected = research_ids.count(tid)
        every = list(range(catalog.specs[tid].partitions))
        for record in read_topic(kafka_bootstrap, name, expected, 20):
            event_type, event = codec.decode(record.value() or b"")
            assert catalog.name(topics.research(event_type)) == name
            assert "message_identifiers" not in event  # a research contract's record
            # A patient's records stay in one partition: its key's (the worker sends runs of
            # records per partition, picking each key's as the producer's send would).
            record_key = record.key()
            assert record_key is not None
            assert record.partition() == partitioner(record_key, every, every)
