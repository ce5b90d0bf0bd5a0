"""`hl7bus replay`: re-run a range of hl7.raw through the pipeline, or report what it would change.

A replay writes copies of the chosen hl7.raw records back to hl7.raw with the
``hl7bus.replay`` header (``raw/<partition>/<offset>`` of the original). The worker takes them
as new without remembering them for dedupe (streams/stage.py), the events keep their
deterministic ids, and the sinks upsert by them: a replay after a code map or policy change
rewrites the affected rows. Replays enter at Kafka, so no sender ever gets an ACK for one.
Records that are replays themselves are never chosen again.

``diff`` is pure over what it reads: it runs the parse step (streams/steps.py parse_step)
with the current maps over the chosen records and compares each event with the one stored on
hl7.events under the same event id (docs/operations.md, Replay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import raw_headers
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.schemas import codec, topics
from hl7bus.schemas.topics import TopicCatalog
from hl7bus.streams.steps import REPLAY_HEADER, parse_step
from hl7bus.streams.terminology import Terminology


class ReplayError(RuntimeError):
    """A replay could not be done; the text says why (never record content)."""


@dataclass(frozen=True)
class Bound:
    """One end of a range: a time, or an offset (in one partition, or in each)."""

    time: datetime | None = None
    offset: int | None = None
    partition: int | None = None

    @classmethod
    def parse(cls, text: str, option: str) -> Bound:
        """``2026-12-04T10:00:00[+09:00]`` (no zone: UTC), ``OFFSET`` (every partition) or
        ``PARTITION:OFFSET``."""
        parts = text.split(":")
        if all(p.isdigit() for p in parts) and len(parts) <= 2:
            if len(parts) == 2:
                return cls(offset=int(parts[1]), partition=int(parts[0]))
            return cls(offset=int(parts[0]))
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{option} {text!r}: expected an ISO time (2026-12-04T10:00:00+09:00), "
                "an OFFSET or PARTITION:OFFSET"
            ) from None
        return cls(time=when if when.tzinfo else when.replace(tzinfo=UTC))


@dataclass(frozen=True)
class Chosen:
    """One hl7.raw record chosen for a replay."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Selection:
    records: list[Chosen] = field(default_factory=list)
    skipped_replays: int = 0  # records that are replays themselves
    other_feeds: int = 0
    undecodable: int = 0


def _ranges(
    consumer: Consumer, topic: str, start: Bound, end: Bound | None, timeout: float
) -> dict[int, tuple[int, int]]:
    """partition -> [first, past the last) offsets of the range. A ``PARTITION:OFFSET`` bound
    limits the range to that partition."""
    marks = kafka_clients.partition_ranges(consumer, topic, timeout)
    parts = sorted(marks)
    for bound, option in ((start, "--from"), (end, "--to")):
        if bound is not None and bound.partition is not None and bound.partition not in marks:
            raise ReplayError(f"{option}: {topic} has no partition {bound.partition}")
    only = {b.partition for b in (start, end) if b is not None and b.partition is not None}
    if len(only) > 1:
        raise ReplayError("--from and --to name different partitions")

    def at(bound: Bound, after: bool) -> dict[int, int]:
        if bound.time is not None:
            ms = int(bound.time.timestamp() * 1000) + (1 if after else 0)
            return kafka_clients.offsets_at(consumer, topic, parts, ms, timeout)
        assert bound.offset is not None
        return dict.fromkeys(parts, bound.offset + (1 if after else 0))

    first = at(start, after=False)
    last = at(end, after=True) if end is not None else {p: marks[p][1] for p in parts}
    return {
        p: (max(first[p], marks[p][0]), min(last[p], marks[p][1]))
        for p in parts
        if not only or p in only
    }


def select(
    kafka: KafkaConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    group_id: str,
    feed: str,
    start: Bound,
    end: Bound | None,
    timeout: float,
) -> Selection:
    """The hl7.raw records of `feed` in the range, replays excluded."""
    topic = catalog.name(topics.RAW)
    consumer = Consumer(kafka_clients.reader_config(kafka, bootstrap, group_id))
    try:
        try:
            ranges = _ranges(consumer, topic, start, end, timeout)
        except KeyError as exc:
            raise ReplayError(str(exc.args[0])) from None
        messages = kafka_clients.read_ranges(consumer, topic, ranges, timeout)
    finally:
        consumer.close()
    selection = Selection()
    for message in messages:
        if any(name == REPLAY_HEADER for name, _ in kafka_clients.message_headers(message)):
            selection.skipped_replays += 1
            continue
        value = message.value() or b""
        try:
            _, envelope = codec.decode(value)
        except codec.CodecError:
            selection.undecodable += 1
            continue
        if envelope.get("feed") != feed:
            selection.other_feeds += 1
            continue
        selection.records.append(
            Chosen(message.partition() or 0, message.offset() or 0, message.key(), value)
        )
    return selection


def send(
    kafka: KafkaConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    chosen: Sequence[Chosen],
    timeout: float,
) -> int:
    """Write the replay copies to hl7.raw; return how many Kafka acknowledged. Raises
    ReplayError when some were not (a replay may be run again: the sinks upsert)."""
    topic = catalog.name(topics.RAW)
    producer = Producer(kafka_clients.producer_config(kafka, bootstrap))
    errors: list[str] = []
    acked = [0]

    def report(err: KafkaError | None, _: Message) -> None:
        if err is not None:
            errors.append(err.name())
        else:
            acked[0] += 1

    for record in chosen:
        headers = [
            *raw_headers(),
            (REPLAY_HEADER, f"raw/{record.partition}/{record.offset}".encode()),
        ]
        while True:
            try:
                producer.produce(
                    topic,
                    key=record.key,
                    value=record.value,
                    headers=kafka_clients.wire_headers(headers),
                    on_delivery=report,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(timeout)
    if errors or acked[0] < len(chosen):
        why = ", ".join(sorted(set(errors))) or "timeout"
        raise ReplayError(
            f"{len(chosen) - acked[0]} of {len(chosen)} replay records not acknowledged ({why})"
        )
    return acked[0]


# -- diff -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What the current maps make of one event compared with the stored one: ``status`` new
    (no stored event with its id), changed, same, or dlq (the raw record now fails: ``fields``
    holds the reason code). ``fields`` names the changed fields, never their values."""

    event_id: str | None
    event_type: str | None
    status: str
    fields: tuple[str, ...] = ()
    source: str = ""  # raw partition/offset


def stored_events(
    kafka: KafkaConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    group_id: str,
    since: datetime | None,
    timeout: float,
) -> dict[str, dict[str, Any]]:
    """event id -> the latest stored hl7.events record (written at or after `since`)."""
    topic = catalog.name(topics.EVENTS)
    consumer = Consumer(kafka_clients.reader_config(kafka, bootstrap, group_id))
    try:
        try:
            marks = kafka_clients.partition_ranges(consumer, topic, timeout)
        except KeyError as exc:
            raise ReplayError(str(exc.args[0])) from None
        if since is not None:
            starts = kafka_clients.offsets_at(
                consumer, topic, sorted(marks), int(since.timestamp() * 1000), timeout
            )
            marks = {p: (max(starts[p], low), high) for p, (low, high) in marks.items()}
        messages = kafka_clients.read_ranges(consumer, topic, marks, timeout)
    finally:
        consumer.close()
    # The latest by record time: the copies of one event may sit in different partitions
    # (a replay under another partitioner, a re-keyed event).
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for message in messages:
        try:
            _, record = codec.decode(message.value() or b"")
        except codec.CodecError:
            continue
        event_id, ms = str(record["event_id"]), message.timestamp()[1]
        if event_id not in found or found[event_id][0] <= ms:
            found[event_id] = (ms, record)
    return {event_id: record for event_id, (_, record) in found.items()}


def diff(
    chosen: Sequence[Chosen],
    stored: dict[str, dict[str, Any]],
    zone: tzinfo,
    terms: Terminology | None = None,
) -> list[Change]:
    """What the current maps (`terms`: the worker's code maps; None: the packaged ones) make
    of each chosen record against the stored events."""
    changes: list[Change] = []
    for record in chosen:
        source = f"{record.partition}/{record.offset}"
        for out in parse_step(record.key, record.value, zone, terms=terms):
            if out.topic_id == topics.DLQ:
                reason = dict(out.headers).get("hl7bus.reason", b"?").decode()
                changes.append(Change(None, None, "dlq", (reason,), source))
                continue
            event_type, event = codec.decode(out.value)
            event_id = str(event["event_id"])
            before = stored.get(event_id)
            if before is None:
                changes.append(Change(event_id, event_type, "new", (), source))
                continue
            fields = tuple(
                sorted(k for k in set(event) | set(before) if event.get(k) != before.get(k))
            )
            status = "changed" if fields else "same"
            changes.append(Change(event_id, event_type, status, fields, source))
    return changes
