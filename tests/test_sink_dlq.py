"""The sinks' DLQ sender (connectors/sink_dlq.py): what a DLQ record carries, and that a batch
whose DLQ records Kafka did not confirm raises (its offsets are then not stored)."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from confluent_kafka import Message, Producer
from kafka_helpers import apply_catalog, read_topic

from hl7bus.connectors import kafka_clients, sink_dlq
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops.processes import free_port
from hl7bus.schemas import topics


def _consumed(offset: int, headers: list[tuple[str, str | bytes | None]]) -> Message:
    return Message(
        topic="research.lab_result",
        partition=2,
        offset=offset,
        key=b"patient-key",
        value=b"avro bytes",
        headers=headers,
    )


@pytest.mark.kafka
def test_refused_records_reach_the_dlq_with_their_own_headers_and_the_sinks(
    kafka_bootstrap: str, unique_name: str
) -> None:
    dlq = apply_catalog(kafka_bootstrap, unique_name).name(topics.DLQ)
    producer = Producer(kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap))
    # A resubmitted record: its old stage and reason are replaced, its event type kept.
    resubmitted = _consumed(
        7, [("hl7bus.event_type", b"LabResult"), ("hl7bus.reason", b"old"), ("x", b"1")]
    )
    sink_dlq.send_refused(
        producer, dlq, [(_consumed(3, []), "no_code"), (resubmitted, "undecodable")]
    )
    records = read_topic(kafka_bootstrap, dlq, 2)
    assert [(r.key(), r.value()) for r in records] == [(b"patient-key", b"avro bytes")] * 2
    first, second = (dict(r.headers() or []) for r in records)
    assert first == {
        "hl7bus.stage": b"sinking",
        "hl7bus.reason": b"no_code",
        "hl7bus.topic": b"research.lab_result",
        "hl7bus.partition": b"2",
        "hl7bus.offset": b"3",
    }
    assert second["hl7bus.reason"] == b"undecodable"
    assert second["hl7bus.offset"] == b"7"
    assert second["hl7bus.event_type"] == b"LabResult" and second["x"] == b"1"
    names = [header[0] for header in list(records[1].headers() or [])]
    assert names.count("hl7bus.reason") == 1


def test_records_kafka_does_not_confirm_raise_dlq_error() -> None:
    # No broker listens there: every delivery fails once message.timeout.ms has passed.
    producer = Producer(
        {
            "bootstrap.servers": f"127.0.0.1:{free_port()}",
            "message.timeout.ms": 300,
            "log_level": 0,  # its connection refusals are expected here
        }
    )
    with pytest.raises(sink_dlq.DlqError, match=r"1 DLQ records not confirmed by Kafka \(_"):
        sink_dlq.send_refused(producer, "hl7.dlq", [(_consumed(1, []), "no_code")])


def test_the_dlq_log_line_names_counts_stage_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("hl7bus.test.sink")
    with caplog.at_level(logging.WARNING, logger=log.name):
        sink_dlq.log_refused(log, "lake", Counter({"undecodable": 1, "no_code": 2}))
    assert caplog.messages == [
        "lake sink: 2 record(s) went to the DLQ (stage sinking, reason no_code)",
        "lake sink: 1 record(s) went to the DLQ (stage sinking, reason undecodable)",
    ]
