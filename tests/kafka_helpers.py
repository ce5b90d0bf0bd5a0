"""Small helpers for tests on the real broker: catalog topics per test, writing records to
topics, reading a topic back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops import topics_apply
from hl7bus.schemas import topics


def apply_catalog(bootstrap: str, prefix: str) -> topics.TopicCatalog:
    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=f"{prefix}."))
    topics_apply.apply(kafka_clients.admin_client(KafkaConfig(), bootstrap), catalog, 1)
    return catalog


def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    """Write (topic, key, value) records and wait until the broker has them all."""
    producer = Producer(kafka_clients.producer_config(KafkaConfig(), bootstrap))
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Message]:
    """Records of a topic from the start, until `expected` arrived or the timeout passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is not None and record.error() is None:
                records.append(record)
        # A short extra wait catches records beyond the expected count.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            record = consumer.poll(0.2)
            if record is not None and record.error() is None:
                records.append(record)
    finally:
        consumer.close()
    return records


def record_headers(record: Any) -> dict[str, bytes]:
    """A consumed record's headers by name (a header without a value reads as b"")."""
    return {k: bytes(v or b"") for k, v in record.headers() or []}
