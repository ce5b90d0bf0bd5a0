"""Sending a sink's refused records to hl7.dlq, confirmed: one sender for every sink.

A sink (warehouse, lake) consumes a batch, writes what it can, and sends the records it
refused to the DLQ before it stores the batch's offsets: so it must know that Kafka has every
one of them. :func:`send_refused` produces them and waits for their delivery; anything not
confirmed raises :class:`DlqError`, and the caller then stores no offset (the batch is replayed).

A DLQ record keeps the consumed record's key, value and headers, with the sink's own headers
added (a resubmitted record's old ones replaced): the stage, the reason code and where the
record was read (topic, partition, offset). Codes and positions only, never a value of the
event (docs/architecture.md, Privacy).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from confluent_kafka import KafkaError, Message, Producer

STAGE = "sinking"  # the hl7bus.stage header of the sinks' DLQ records
# Headers a sink sets on a DLQ record (a resubmitted record's old ones are replaced).
SINK_HEADERS = frozenset(
    ("hl7bus.stage", "hl7bus.reason", "hl7bus.topic", "hl7bus.partition", "hl7bus.offset")
)
TIMEOUT_S = 30.0


class DlqError(RuntimeError):
    """Kafka did not confirm the batch's DLQ records: its offsets are not stored."""


def send_refused(
    producer: Producer,
    dlq_topic: str,
    refused: Sequence[tuple[Message, str]],
    *,
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Send each (consumed record, reason code) to `dlq_topic` and wait until Kafka has them
    all; raises DlqError when one failed or the wait ran out."""
    if not refused:
        return
    failures: list[str] = []

    def delivered(err: KafkaError | None, _: Message) -> None:
        if err is not None:
            failures.append(err.name())

    for record, reason in refused:
        headers = [(name, value) for name, value in _headers(record) if name not in SINK_HEADERS]
        headers += [
            ("hl7bus.stage", STAGE.encode()),
            ("hl7bus.reason", reason.encode()),
            ("hl7bus.topic", (record.topic() or "").encode()),
            ("hl7bus.partition", str(record.partition()).encode()),
            ("hl7bus.offset", str(record.offset()).encode()),
        ]
        while True:
            try:
                producer.produce(
                    dlq_topic,
                    key=record.key(),
                    value=record.value(),
                    headers=headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:  # the producer's queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(timeout_s) or failures:
        raise DlqError(
            f"{len(refused)} DLQ records not confirmed by Kafka "
            f"({', '.join(sorted(set(failures))) or 'timeout'})"
        )


def log_refused(log: logging.Logger, sink: str, reasons: Counter[str]) -> None:
    """A line per reason of a batch's DLQ records (docs/operations.md, Logs): counts and codes."""
    for reason, count in sorted(reasons.items()):
        log.warning(
            "%s sink: %d record(s) went to the DLQ (stage %s, reason %s)",
            sink,
            count,
            STAGE,
            reason,
        )


def _headers(record: Message) -> list[tuple[str, str | bytes | None]]:
    headers = record.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
