"""The dead-letter queue as an operator works it: list, show (redacted), resubmit, purge.

hl7.dlq holds three kinds of value, told apart by the ``hl7bus.stage`` header:

- ``receiving`` (the MLLP listener), ``parsing`` and ``normalizing`` (the worker's parse
  step): a RawMessage envelope. The listener keys it by feed, the worker by patient key.
- ``deidentifying`` (the worker's de-identification): the identified event.
- ``sinking`` (the warehouse sink): the research record, with the topic, partition and offset
  it was read from (``hl7bus.topic``/``partition``/``offset``).

What was done with a record (resubmitted, purged) is kept in the compacted topic
``hl7.dlq.done`` (catalog id ``dlq_done``), one marker per DLQ record keyed by
``<partition>:<offset>``. A marker topic, not a consumer group's committed offset: records are
worked one by one and out of order (a filter picks some), which one offset per partition
cannot say; the topic survives restarts and every operator's machine reads the same markers.
A marker is written only after Kafka acknowledged the resubmitted record (docs/operations.md,
Dead-letter queue).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import build_envelope, raw_headers
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.mllp.config import ListenerConfig, MllpConfig
from hl7bus.schemas import codec, topics
from hl7bus.schemas.topics import TopicCatalog
from hl7bus.streams.steps import REPLAY_HEADER, DeidSettings, deidentify_step

RAW_STAGES = frozenset({"receiving", "parsing", "normalizing"})
#: Listener reasons whose bytes are whole and may pass once the cause is fixed (a feed's
#: charset override, a parser fix). The others kept part of a frame (oversize, truncated,
#: start_block) or a batch whose envelope does not add up: the sender must send them again.
RECEIVING_RESUBMITTABLE = frozenset({"charset", "parse", "header", "internal"})
#: Headers a stage sets on a DLQ record: dropped from a resubmitted one.
DLQ_HEADERS = frozenset(
    {
        "hl7bus.stage",
        "hl7bus.reason",
        "hl7bus.detail",
        "hl7bus.size_bytes",
        "hl7bus.topic",
        "hl7bus.partition",
        "hl7bus.offset",
        REPLAY_HEADER,
    }
)
REDACTED = "<redacted>"


class DlqConfig(BaseModel):
    """The `dlq` section: how `hl7bus dlq` reads the DLQ and audits what it reveals."""

    model_config = ConfigDict(extra="forbid")

    audit_log: Path | None = Field(
        None,
        description=(
            "File `hl7bus dlq show --reveal` appends one JSON line to per revealed record "
            "(who, when, which record; never its content). Unset: --reveal is refused."
        ),
    )
    group_id: str = Field(
        "hl7bus-dlq-admin",
        description=(
            "Consumer group id the DLQ and replay commands read with; they never commit "
            "offsets under it (what was done is kept in hl7.dlq.done)."
        ),
    )
    timeout_s: float = Field(
        30.0, gt=0, description="How long a command waits for Kafka (reads, acknowledgements)."
    )


class DlqError(RuntimeError):
    """A DLQ command could not do what was asked; the text names why (never record content)."""


@dataclass(frozen=True)
class Marker:
    """What was done with a DLQ record: resubmitted (``to``: topic/partition/offset of the new
    record) or purged, when and by whom."""

    action: str
    at: str
    by: str
    to: str | None = None

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def decode(cls, value: bytes) -> Marker:
        data = json.loads(value)
        return cls(str(data["action"]), str(data["at"]), str(data["by"]), data.get("to"))


@dataclass(frozen=True)
class Entry:
    """One DLQ record as the commands see it."""

    partition: int
    offset: int
    time: datetime  # the DLQ record's Kafka timestamp
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    stage: str
    reason: str
    kind: str  # raw | event | research | unknown
    event_type: str | None  # RawMessage, Patient, ...; None when the value does not decode
    feed: str | None
    done: Marker | None

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        value = dict(self.headers).get(name)
        return value.decode("utf-8", "replace") if value is not None else None

    def summary(self) -> dict[str, Any]:
        """What `dlq list` prints: codes and names only, never content."""
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "stage": self.stage,
            "reason": self.reason,
            "feed": self.feed,
            "kind": self.kind,
            "type": self.event_type,
            "size_bytes": len(self.value),
            "status": self.done.action if self.done else "open",
        }


@dataclass(frozen=True)
class Filter:
    feed: str | None = None
    stage: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] = frozenset()
    include_done: bool = False

    def __call__(self, entry: Entry) -> bool:
        return (
            (not self.ids or entry.id in self.ids)
            and (self.feed is None or entry.feed == self.feed)
            and (self.stage is None or entry.stage == self.stage)
            and (self.reason is None or entry.reason == self.reason)
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time <= self.until)
            and (self.include_done or entry.done is None)
        )


def parse_id(text: str) -> str:
    """``PARTITION:OFFSET`` or ``OFFSET`` (partition 0) -> the canonical ``P:O``."""
    parts = text.split(":")
    if len(parts) > 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"record id {text!r}: expected PARTITION:OFFSET or OFFSET (digits)")
    return f"{parts[0]}:{parts[1]}" if len(parts) == 2 else f"0:{parts[0]}"


def describe(message: Message, markers: dict[str, Marker]) -> Entry:
    """A consumed DLQ record as an :class:`Entry` (the value decoded for its type and feed)."""
    headers = kafka_clients.message_headers(message)
    found = dict(headers)
    stage = found.get("hl7bus.stage", b"unknown").decode("utf-8", "replace")
    value = message.value() or b""
    event_type: str | None = None
    feed: str | None = None
    try:
        event_type, record = codec.decode(value)
        raw_feed = record.get("feed")
        feed = raw_feed if isinstance(raw_feed, str) else None
    except codec.CodecError:
        record = {}
    if feed is None and stage == "receiving" and message.key():
        feed = (message.key() or b"").decode("utf-8", "replace")  # the listener keys by feed
    if event_type == "RawMessage" or stage in RAW_STAGES:
        kind = "raw"
    elif stage == "sinking":
        kind = "research"
    elif event_type is not None:
        kind = "event"
    else:
        kind = "unknown"
    partition, offset = message.partition() or 0, message.offset() or 0
    _, ms = message.timestamp()
    return Entry(
        partition,
        offset,
        datetime.fromtimestamp(ms / 1000, UTC),
        message.key(),
        value,
        headers,
        stage,
        found.get("hl7bus.reason", b"unknown").decode("utf-8", "replace"),
        kind,
        event_type,
        feed,
        markers.get(f"{partition}:{offset}"),
    )


class Dlq:
    """hl7.dlq and its marker topic on one cluster."""

    def __init__(
        self, kafka: KafkaConfig, bootstrap: str, catalog: TopicCatalog, cfg: DlqConfig
    ) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap
        self.catalog = catalog
        self.cfg = cfg
        self.topic = catalog.name(topics.DLQ)
        self.done_topic = catalog.name(topics.DLQ_DONE)

    def _consumer(self) -> Consumer:
        return Consumer(kafka_clients.reader_config(self.kafka, self.bootstrap, self.cfg.group_id))

    def _read_all(self, consumer: Consumer, topic: str) -> list[Message]:
        try:
            ranges = kafka_clients.partition_ranges(consumer, topic, self.cfg.timeout_s)
        except KeyError as exc:
            raise DlqError(str(exc.args[0])) from None
        return kafka_clients.read_ranges(consumer, topic, ranges, self.cfg.timeout_s)

    def markers(self, consumer: Consumer) -> dict[str, Marker]:
        """The latest marker of each DLQ record (a tombstone reopens it)."""
        found: dict[str, Marker] = {}
        for message in self._read_all(consumer, self.done_topic):
            key = (message.key() or b"").decode()
            value = message.value()
            if value is None:
                found.pop(key, None)
            else:
                found[key] = Marker.decode(value)
        return found

    def entries(self, keep: Callable[[Entry], bool] = lambda _: True) -> list[Entry]:
        """The DLQ's records that `keep` selects, oldest first per partition."""
        consumer = self._consumer()
        try:
            markers = self.markers(consumer)
            messages = self._read_all(consumer, self.topic)
        finally:
            consumer.close()
        return [e for e in (describe(m, markers) for m in messages) if keep(e)]

    def one(self, record_id: str) -> Entry:
        found = self.entries(Filter(ids=frozenset({record_id}), include_done=True))
        if not found:
            raise DlqError(f"no record {record_id} in {self.topic} (PARTITION:OFFSET)")
        return found[0]

    def _producer(self) -> Producer:
        return Producer(kafka_clients.producer_config(self.kafka, self.bootstrap))

    def mark(self, producer: Producer, done: Sequence[tuple[Entry, Marker]]) -> None:
        """Write the markers and wait until Kafka has every one."""
        errors: list[str] = []
        for entry, marker in done:
            _produce(producer, self.done_topic, entry.id.encode(), marker.encode(), [], errors)
        if producer.flush(self.cfg.timeout_s) or errors:
            raise DlqError(f"markers not confirmed by Kafka ({_why(errors)})")

    def resubmit(self, plans: Sequence[Plan], who: str) -> list[tuple[Entry, str]]:
        """Send each planned record, wait for Kafka's acknowledgements, then mark the
        acknowledged ones done. Returns (entry, "topic/partition/offset") of those."""
        producer = self._producer()
        acked: list[tuple[Entry, str]] = []
        errors: list[str] = []

        def delivered(entry: Entry) -> Callable[[KafkaError | None, Message], None]:
            def report(err: KafkaError | None, msg: Message) -> None:
                if err is not None:
                    errors.append(err.name())
                else:
                    acked.append((entry, f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))

            return report

        for plan in plans:
            while True:
                try:
                    producer.produce(
                        plan.topic,
                        key=plan.key,
                        value=plan.value,
                        headers=kafka_clients.wire_headers(plan.headers),
                        on_delivery=delivered(plan.entry),
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        producer.flush(self.cfg.timeout_s)
        at = _now()
        # Only what Kafka acknowledged is marked: an unacknowledged record stays open and
        # a later resubmit sends it again (the sinks upsert, so a double send is harmless).
        self.mark(producer, [(e, Marker("resubmitted", at, who, to)) for e, to in acked])
        if errors or len(acked) < len(plans):
            raise DlqError(
                f"{len(plans) - len(acked)} of {len(plans)} records not acknowledged by Kafka "
                f"({_why(errors)}); {len(acked)} sent and marked done"
            )
        return acked

    def purge(self, entries: Sequence[Entry], who: str) -> dict[int, int]:
        """Mark the entries purged, then delete from each DLQ partition the records before the
        first one still open. Returns partition -> the new low watermark where records were
        deleted. Kafka deletes only a partition's head: an open record is never deleted, and a
        purged one behind an open one stays until that one is done or retention takes it."""
        producer = self._producer()
        at = _now()
        self.mark(producer, [(e, Marker("purged", at, who)) for e in entries])
        consumer = self._consumer()
        try:
            markers = self.markers(consumer)
            ranges = kafka_clients.partition_ranges(consumer, self.topic, self.cfg.timeout_s)
            messages = kafka_clients.read_ranges(consumer, self.topic, ranges, self.cfg.timeout_s)
        finally:
            consumer.close()
        first_open = {p: high for p, (_, high) in ranges.items()}
        for message in messages:
            p, o = message.partition() or 0, message.offset() or 0
            if f"{p}:{o}" not in markers:
                first_open[p] = min(first_open[p], o)
        cut = {p: o for p, o in first_open.items() if o > ranges[p][0]}
        if cut:
            admin = AdminClient(kafka_clients.base_config(self.kafka, self.bootstrap))
            futures = admin.delete_records(
                [TopicPartition(self.topic, p, o) for p, o in cut.items()],
                request_timeout=self.cfg.timeout_s,
            )
            for future in futures.values():
                future.result(timeout=self.cfg.timeout_s)
            # The deleted records' markers are tombstoned: compaction then drops them too.
            gone = [key for key in markers if _below(key, cut)]
            errors: list[str] = []
            for key in gone:
                _produce(producer, self.done_topic, key.encode(), None, [], errors)
            if producer.flush(self.cfg.timeout_s) or errors:
                raise DlqError(f"marker tombstones not confirmed by Kafka ({_why(errors)})")
        return cut


@dataclass(frozen=True)
class Plan:
    """Where a resubmitted record goes, and as what."""

    entry: Entry
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class NotResubmittable(ValueError):
    """Why a DLQ record cannot be resubmitted now (a code and names, never content)."""


def plan_resubmit(
    entry: Entry,
    catalog: TopicCatalog,
    mllp: MllpConfig,
    deid: Callable[[], DeidSettings],
) -> Plan:
    """The record that puts `entry` back before the stage that failed, marked as a replay.

    - receiving: the envelope is built again from the bytes with the feed's current settings
      (charset override, fallback) and goes to hl7.raw; raises NotResubmittable when it still
      fails, or for reasons whose bytes are not a whole message;
    - parsing, normalizing: the envelope goes to hl7.raw as it is (the worker parses it with
      the current maps);
    - deidentifying: the event is de-identified here, with the current policy and key (`deid`),
      and goes to its research topic; raises NotResubmittable when it fails again;
    - sinking: the research record goes back to the topic it was read from.
    """
    replay = (REPLAY_HEADER, f"dlq/{entry.id}".encode())
    if entry.stage == "receiving":
        if entry.reason not in RECEIVING_RESUBMITTABLE:
            raise NotResubmittable(
                f"reason {entry.reason} keeps no whole message; the sender must send it again"
            )
        try:
            _, envelope = codec.decode(entry.value)
        except codec.CodecError as exc:
            raise NotResubmittable(f"value does not decode ({exc})") from None
        cfg = _listener(mllp, envelope["feed"])
        built = build_envelope(
            envelope["raw"],
            feed=envelope["feed"],
            peer=envelope["peer"],
            charset=cfg.charset,
            fallback=cfg.fallback_charset,
            received_at=envelope["received_at"],
            lenient_utf8=cfg.lenient_utf8,
            require_header=True,
        )
        if built.message is None:
            raise NotResubmittable(f"still refused by the listener's checks ({built.reason})")
        value = codec.encode("RawMessage", built.record)
        return Plan(entry, catalog.name(topics.RAW), built.key, value, [*raw_headers(), replay])
    if entry.stage in ("parsing", "normalizing"):
        return Plan(
            entry, catalog.name(topics.RAW), entry.key, entry.value, [*raw_headers(), replay]
        )
    if entry.stage == "deidentifying":
        settings = deid()
        (out,) = deidentify_step(
            entry.value, settings.policy, settings.pseudonymize, settings.leak_check
        )
        if out.topic_id == topics.DLQ:
            reason = dict(out.headers).get("hl7bus.reason", b"?").decode()
            raise NotResubmittable(f"de-identification still fails ({reason})")
        return Plan(entry, catalog.name(out.topic_id), out.key, out.value, [*out.headers, replay])
    if entry.stage == "sinking":
        source = entry.header("hl7bus.topic")
        if not source:
            raise NotResubmittable("no hl7bus.topic header: the source topic is unknown")
        kept = [(n, v) for n, v in entry.headers if n not in DLQ_HEADERS]
        return Plan(entry, source, entry.key, entry.value, [*kept, replay])
    raise NotResubmittable(f"stage {entry.stage!r} is not one the bus writes")


def _listener(mllp: MllpConfig, feed: str) -> ListenerConfig:
    for listener in mllp.listeners():
        if listener.feed == feed:
            return listener
    return ListenerConfig(feed=feed)  # a feed no longer configured: the defaults


# -- show -----------------------------------------------------------------------------------------


def shown(entry: Entry, reveal: bool) -> dict[str, Any]:
    """What `dlq show` prints. Redacted: the headers (codes by design), and of the value only
    the fields whose schema PHI class is ``none``; the raw bytes as their size and segment
    names. ``reveal``: everything (the caller has written the audit line)."""
    out: dict[str, Any] = {**entry.summary(), "headers": {n: _text(v) for n, v in entry.headers}}
    try:
        event_type, record = codec.decode(entry.value)
    except codec.CodecError as exc:
        out["value"] = {"undecodable": str(exc)} if not reveal else {"bytes": _text(entry.value)}
        return out
    classes = codec.schema(event_type).phi_classes()
    value: dict[str, Any] = {}
    for name, field_value in record.items():
        if reveal or classes.get(name, "direct") == "none":
            value[name] = _jsonable(field_value)
        elif name == "raw" and isinstance(field_value, bytes):
            value[name] = f"{REDACTED} {len(field_value)} bytes, segments {_segments(field_value)}"
        else:
            value[name] = REDACTED if field_value is not None else None
    out["value"] = value
    if reveal:
        out["key"] = _text(entry.key or b"")
    return out


def _segments(raw: bytes) -> str:
    names = [s[:3].decode("ascii", "replace") for s in raw.replace(b"\n", b"\r").split(b"\r")]
    return ",".join(n for n in names if n.strip()) or "-"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def audit(path: Path, who: str, action: str, entries: Iterable[Entry], topic: str) -> None:
    """Append one JSON line per record: who, when, which record. Never its content."""
    at = _now()
    host = socket.gethostname()
    lines = [
        json.dumps(
            {
                "at": at,
                "who": who,
                "host": host,
                "action": action,
                "topic": topic,
                "record": e.id,
                "stage": e.stage,
                "reason": e.reason,
            },
            sort_keys=True,
        )
        for e in entries
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    # Opened for append and flushed before anything is shown: no reveal without its line.
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def operator() -> str:
    """Who runs the command: the login behind sudo when there is one."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    errors: list[str],
) -> None:
    def report(err: KafkaError | None, _: Message) -> None:
        if err is not None:
            errors.append(err.name())

    while True:
        try:
            producer.produce(
                topic,
                key=key,
                value=value,
                headers=kafka_clients.wire_headers(headers),
                on_delivery=report,
            )
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def _below(marker_key: str, cut: dict[int, int]) -> bool:
    partition, offset = (int(part) for part in marker_key.split(":"))
    return partition in cut and offset < cut[partition]


def _why(errors: Sequence[str]) -> str:
    return ", ".join(sorted(set(errors))) or "timeout"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
