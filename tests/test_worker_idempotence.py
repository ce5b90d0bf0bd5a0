"""The running worker's producer is idempotent, as the broker sees it.

The broker keeps producer state (producer id, epoch, sequence numbers) only for idempotent
producers: Kafka's Admin client (DescribeProducers, KIP-664, run from tests/java with the broker
jars) lists them per partition. A worker run as the operator runs it (`hl7bus worker`) writes
hl7.events, the research topics and the dedupe table's changelog; every partition it wrote must
list one producer id, the same one everywhere (the worker's producer), with its epoch. A plain
producer's records leave no producer state, and the listing would be empty.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_helpers import apply_catalog
from samples import envelope, feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops import local_kafka
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import codec, topics
from hl7bus.schemas.keys import patient_key
from hl7bus.streams.steps import parse_step
from hl7bus.streams.worker_config import changelog_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DESCRIBE_PRODUCERS = Path(__file__).parent / "java" / "DescribeProducers.java"
KAFKA = KafkaConfig()
MESSAGES = 40
SEOUL = ZoneInfo("Asia/Seoul")


def _describe_producers(
    bootstrap: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(topic, partition) -> [(producer id, epoch)] of its active producers, per the broker."""
    java = shutil.which("java")
    assert java, "the broker tests need Java"
    libs = local_kafka.ensure_jars(local_kafka.LocalKafkaConfig())
    done = subprocess.run(
        [java, "-cp", f"{libs}/*", str(DESCRIBE_PRODUCERS), bootstrap]
        + [f"{topic}:{partition}" for topic, partition in partitions],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[tuple[str, int], list[tuple[int, int]]] = {tp: [] for tp in partitions}
    for line in done.stdout.splitlines():
        if line.startswith("producer "):
            _, topic, partition, producer_id, epoch, _last = line.split()
            found[topic, int(partition)].append((int(producer_id), int(epoch)))
    return found


def test_the_worker_writes_every_output_partition_with_one_idempotent_producer(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic, events_topic = catalog.name(topics.RAW), catalog.name(topics.EVENTS)
    app_id = f"{unique_name}-worker"
    producer = Producer(kafka_clients.producer_config(KAFKA, kafka_bootstrap))
    messages = feed()[:MESSAGES]
    for message in messages:
        key = patient_key("idem", message)
        raw = {**envelope(message, "idem"), "patient_key": key}
        producer.produce(
            raw_topic, value=codec.encode("RawMessage", raw), key=key.encode() if key else None
        )
    assert producer.flush(30) == 0
    expected = sum(
        1
        for m in messages
        for out in parse_step(None, codec.encode("RawMessage", envelope(m, "idem")), SEOUL)
        if out.topic_id == topics.EVENTS
    )

    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_WORKER_APP_ID": app_id,
        "HL7BUS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(free_port()),
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        procs.start("worker", ["worker"], env)

        def all_events_out() -> bool:
            sizes = kafka_clients.topic_sizes(KAFKA, kafka_bootstrap, [events_topic])
            return sizes[events_topic] == expected

        procs.wait_for("the events on hl7.events", all_events_out, 120)
        # Described while the worker runs: its producer is the active one.
        written = _written(kafka_bootstrap, catalog, app_id)
        producers = _describe_producers(kafka_bootstrap, written)
    finally:
        procs.stop_all()

    by_topic = {topic for topic, _ in written}
    assert events_topic in by_topic and changelog_topic(app_id) in by_topic
    assert any(t.startswith(f"{unique_name}.research.") for t in by_topic)
    for tp, found in producers.items():
        assert len(found) == 1, (tp, found)  # one writer: the worker, idempotent
    ids = {found[0] for found in producers.values()}
    assert len(ids) == 1, ids  # the same producer id and epoch on every output partition
    [(producer_id, epoch)] = ids
    assert producer_id >= 0 and epoch >= 0


def _written(bootstrap: str, catalog: topics.TopicCatalog, app_id: str) -> list[tuple[str, int]]:
    """The partitions of the worker's outputs (events, research, changelog) holding records."""
    names = [
        catalog.name(tid)
        for tid in catalog.specs
        if tid == topics.EVENTS or tid.startswith(topics.research(""))
    ] + [changelog_topic(app_id)]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-inspect"})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        return [
            (name, p)
            for name in names
            for p in sorted(metadata[name].partitions)
            if consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] > 0
        ]
    finally:
        consumer.close()
