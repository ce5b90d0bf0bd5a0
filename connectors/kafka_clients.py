"""Kafka clients configured once: producer (with an asyncio delivery bridge), consumer, admin."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors.kafka_settings import ClientSettings

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"

log = logging.getLogger(__name__)


class KafkaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bootstrap: str | None = Field(
        None,
        description=(
            "Kafka bootstrap servers (host:port,...). Unset: the local broker started by "
            "`hl7bus kafka up` when it runs, else 127.0.0.1:9092."
        ),
    )
    delivery_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description=(
            "How long the producer may try to deliver a message before reporting failure; "
            "the MLLP listener answers AR/CR then, so the sender retries."
        ),
    )
    linger_ms: int = Field(
        # librdkafka's and (since Kafka 4.0) the Java client's default. 2 ms halved a
        # send-and-wait connection's ACK latency but cost the broker and the listener about
        # twice the CPU per message under load (BENCHMARKS.md, mllp).
        5,
        ge=0,
        description=(
            "Producer batching delay: a send-and-wait sender's ACK waits up to this long; more "
            "messages per request under load (less CPU for the listener and the broker)."
        ),
    )
    client: ClientSettings = Field(
        default_factory=ClientSettings,
        description=(
            "TLS, SASL and connection settings of every Kafka client: listener, ingest, "
            "worker, sinks, admin (librdkafka property names, listed below; in the variable, "
            "as JSON). Any other key is refused at start."
        ),
    )


def base_config(cfg: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, **cfg.client.librdkafka()}


def producer_config(cfg: KafkaConfig, bootstrap: str) -> dict[str, Any]:
    return {
        **base_config(cfg, bootstrap),
        # Idempotence implies acks=all, bounded in-flight and ordered retries: the ACK we
        # send to a hospital system means "durable on every in-sync replica".
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": cfg.linger_ms,
        "delivery.timeout.ms": cfg.delivery_timeout_ms,
        "message.timeout.ms": cfg.delivery_timeout_ms,
        "compression.type": "lz4",
    }


def consumer_config(cfg: KafkaConfig, bootstrap: str, group_id: str) -> dict[str, Any]:
    return {
        **base_config(cfg, bootstrap),
        "group.id": group_id,
        "auto.offset.reset": "earliest",
        # Offsets are stored only after the record's work is durable downstream.
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
    }


def admin_client(cfg: KafkaConfig, bootstrap: str) -> AdminClient:
    return AdminClient(base_config(cfg, bootstrap))


class KafkaUnreachable(RuntimeError):
    """No broker answered; the message says why, as far as librdkafka told (never a secret)."""


# Errors that retrying cannot fix: the settings or the credentials are wrong.
_SETTINGS_ERRORS = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})


def check_connection(cfg: KafkaConfig, bootstrap: str, timeout: float = 15.0) -> None:
    """Ask the brokers for metadata with the `kafka.client` settings; raise
    :class:`KafkaUnreachable` with the cause, at once when it is a TLS or SASL failure.

    A process checks this before its long-running clients start, so wrong settings stop it
    with one clear message instead of endless reconnect logs.
    """
    errors: list[KafkaError] = []
    # The cause goes into the message; librdkafka's own log lines would only repeat it.
    conf = {**base_config(cfg, bootstrap), "error_cb": errors.append, "log_level": 0}
    admin = AdminClient(conf)
    protocol = cfg.client.security_protocol
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return
        except KafkaException:
            pass
        admin.poll(0)  # serves error_cb
        fatal = [e for e in errors if e.code() in _SETTINGS_ERRORS]
        if fatal:
            raise KafkaUnreachable(
                f"cannot reach Kafka at {bootstrap} over {protocol}: {fatal[-1].str()}"
            )
        if time.monotonic() >= deadline:
            raise KafkaUnreachable(
                f"no Kafka broker at {bootstrap} answered over {protocol} within {timeout:g} s. "
                "Is it running there? A listener that requires TLS or SASL closes connections "
                "of another protocol: check kafka.bootstrap and kafka.client.security.protocol."
            )
        time.sleep(0.2)


class DeliveryError(RuntimeError):
    """Kafka did not confirm a write. Holds the librdkafka error code name, never the value."""

    def __init__(self, code: str, retriable: bool) -> None:
        super().__init__(f"kafka delivery failed: {code}")
        self.code = code
        self.retriable = retriable


Headers = Sequence[tuple[str, bytes]]


#: Called on the event loop with a delivery report: (partition, offset), or the DeliveryError.
OnDelivery = Callable[[Any], None]


class Sender(Protocol):
    """What a client that awaits each write needs of :class:`AsyncProducer` (the file source)."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]: ...


class Submitter(Sender, Protocol):
    """What a client that keeps many writes in flight needs of :class:`AsyncProducer` (the MLLP
    listener): :meth:`AsyncProducer.submit` for the common path, ``send`` for the rare ones."""

    def submit(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_delivery: OnDelivery,
    ) -> None: ...

    def flush(self, timeout: float = 30.0) -> int: ...


class _Mailbox:
    """Delivery reports bound for one event loop, handed over with one wake-up per batch.

    Callbacks run on whichever thread serves librdkafka (the poller, or a caller of flush()).
    Each appends its report; only the first one after a drain wakes the loop
    (``call_soon_threadsafe``, a self-pipe write), so one ``poll()`` that serves 200 reports
    costs one wake-up, not 200. The drain clears the flag *before* it empties the queue: a report
    appended meanwhile is either taken by this drain or schedules the next one.
    """

    __slots__ = ("loop", "reports", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reports: deque[tuple[OnDelivery, Any]] = deque()
        self.scheduled = False

    def post(self, on_delivery: OnDelivery, report: Any) -> None:
        self.reports.append((on_delivery, report))
        if not self.scheduled:
            self.scheduled = True
            try:
                self.loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: nobody waits for these reports
                self.scheduled = False

    def drain(self) -> None:
        self.scheduled = False
        reports = self.reports
        while reports:
            on_delivery, report = reports.popleft()
            try:
                on_delivery(report)
            except Exception as exc:  # one faulty callback must not strand the reports behind it
                # The type only: a traceback or the text may quote the record (patient data).
                log.error("delivery callback failed (%s)", type(exc).__name__)


def _settle(future: asyncio.Future[tuple[int, int]]) -> OnDelivery:
    def settle(report: Any) -> None:
        if future.done():  # cancelled by its waiter
            return
        if isinstance(report, DeliveryError):
            future.set_exception(report)
        else:
            future.set_result(report)

    return settle


class AsyncProducer:
    """A plain librdkafka Producer whose delivery reports reach the event loop.

    confluent-kafka's own AIOProducer rejects headers, so the callbacks of the plain producer are
    bridged to the event loop; one thread polls for them, and the reports of one poll reach the
    loop in one wake-up (:class:`_Mailbox`). :meth:`send` awaits one record; :meth:`submit`
    queues one and calls back, for callers that keep many in flight without a task each.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._mailboxes: dict[asyncio.AbstractEventLoop, _Mailbox] = {}
        self._mailboxes_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        box = self._mailboxes.get(loop)
        if box is None:
            with self._mailboxes_lock:
                # A producer may outlive event loops (tests run several): forget closed ones.
                for old in [old for old in self._mailboxes if old.is_closed()]:
                    del self._mailboxes[old]
                box = self._mailboxes.setdefault(loop, _Mailbox(loop))
        return box

    def submit(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_delivery: OnDelivery,
    ) -> None:
        """Queue one record; ``on_delivery`` later runs on the calling event loop with
        (partition, offset) once the broker has it, or with the :class:`DeliveryError`.

        Raises BufferError when librdkafka's local queue is full (nothing queued, no callback),
        and KafkaException for a record librdkafka refuses outright (e.g. too large).
        """
        post = self._mailbox(asyncio.get_running_loop()).post

        def reported(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                post(on_delivery, DeliveryError(err.name(), err.retriable()))
            else:
                post(on_delivery, (msg.partition() or 0, msg.offset() or 0))

        self._producer.produce(
            topic, value=value, key=key, headers=list(headers), on_delivery=reported
        )

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        """Write one record; return (partition, offset) once the broker has it, or raise."""
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        while True:
            try:
                self.submit(topic, value, key, headers, _settle(future))
                break
            except BufferError:
                # The local queue is full: wait for deliveries instead of growing without bound.
                await asyncio.sleep(0.01)
        return await future

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for outstanding deliveries; return how many are still pending."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        """Flush, stop polling and release the client (no reconnect attempts linger on)."""
        if self._stop.is_set():
            return 0
        pending = self.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=5)
        if pending == 0:
            # With messages still queued, close() would block on a flush of its own.
            self._producer.close()
        return pending

    def cluster_reachable(self, timeout: float = 2.0) -> bool:
        try:
            self._producer.list_topics(timeout=timeout)
        except Exception:
            return False
        return True


def _partitions(consumer: Consumer, topic_names: Sequence[str], timeout: float) -> list[Any]:
    metadata = consumer.list_topics(timeout=timeout)
    return [
        TopicPartition(name, p)
        for name in topic_names
        if name in metadata.topics
        for p in metadata.topics[name].partitions
    ]


def topic_sizes(
    cfg: KafkaConfig, bootstrap: str, topic_names: Sequence[str], timeout: float = 10.0
) -> dict[str, int | None]:
    """Records currently held per topic (high minus low watermark); None for a missing topic."""
    consumer = Consumer({**base_config(cfg, bootstrap), "group.id": "hl7bus-inspect"})
    try:
        sizes: dict[str, int | None] = dict.fromkeys(topic_names)
        for tp in _partitions(consumer, topic_names, timeout):
            low, high = _watermarks(consumer, tp, timeout)
            sizes[tp.topic] = (sizes[tp.topic] or 0) + high - low
        return sizes
    finally:
        consumer.close()


_T = TypeVar("_T")

# librdkafka does not mark these retriable, yet they only mean "not served yet": a partition
# created a moment ago is in the metadata before its leader serves it, and a group's
# coordinator moves or loads its offsets after a broker (re)start.
_TRANSIENT_ERRORS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


def until_served(call: Callable[[], _T], timeout: float) -> _T:
    """`call()`, again while it fails with a transient error, until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _TRANSIENT_ERRORS
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _watermarks(consumer: Consumer, tp: Any, timeout: float) -> tuple[int, int]:
    low, high = until_served(lambda: consumer.get_watermark_offsets(tp, timeout=timeout), timeout)
    return int(low), int(high)


def group_lag(
    cfg: KafkaConfig,
    bootstrap: str,
    group_id: str,
    topic_names: Sequence[str],
    timeout: float = 10.0,
) -> int:
    """Records of the topics that the consumer group has not committed yet."""
    consumer = Consumer({**base_config(cfg, bootstrap), "group.id": group_id})
    try:
        partitions = _partitions(consumer, topic_names, timeout)
        committed = until_served(lambda: consumer.committed(partitions, timeout=timeout), timeout)
        lag = 0
        for tp in committed:
            low, high = _watermarks(consumer, tp, timeout)
            position = tp.offset if tp.offset >= 0 else low
            lag += max(0, high - position)
        return lag
    finally:
        consumer.close()


def reader_config(cfg: KafkaConfig, bootstrap: str, group_id: str) -> dict[str, Any]:
    """A consumer that only reads the partitions it is assigned: it never commits an offset
    (operator tools: `hl7bus dlq`, `hl7bus replay`), so it moves no group's position."""
    return {
        **base_config(cfg, bootstrap),
        "group.id": group_id,
        "enable.auto.commit": False,
        # The end of a partition is reported, so a reader stops there even when the last
        # offsets hold no record (compacted away, or a transaction marker).
        "enable.partition.eof": True,
    }


def partition_ranges(
    consumer: Consumer, topic: str, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) watermarks of a topic; a missing topic raises KeyError naming
    it."""
    metadata = consumer.list_topics(topic, timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise KeyError(f"topic {topic!r} does not exist (run `hl7bus topics apply`)")
    return {p: _watermarks(consumer, TopicPartition(topic, p), timeout) for p in found.partitions}


def offsets_at(
    consumer: Consumer, topic: str, partitions: Sequence[int], ms: int, timeout: float = 10.0
) -> dict[int, int]:
    """partition -> the first offset whose record time is at or after `ms` (epoch
    milliseconds); the high watermark where there is none."""
    asked = [TopicPartition(topic, p, ms) for p in partitions]
    found = until_served(lambda: consumer.offsets_for_times(asked, timeout=timeout), timeout)
    out = {}
    for tp in found:
        out[tp.partition] = tp.offset if tp.offset >= 0 else _watermarks(consumer, tp, timeout)[1]
    return out


def read_ranges(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout: float = 30.0
) -> list[Message]:
    """Every record of `topic` in [start, end) of each partition (`ranges`: partition ->
    (start, end)), in partition-then-offset order. Raises TimeoutError when the broker stops
    handing records out before the ends are reached (records deleted meanwhile are skipped)."""
    wanted = {p: (s, e) for p, (s, e) in ranges.items() if e > s}
    if not wanted:
        return []
    consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in wanted.items()])
    got: dict[int, list[Message]] = {p: [] for p in wanted}
    open_parts = set(wanted)
    deadline = time.monotonic() + timeout
    try:
        while open_parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: no records for {timeout:g} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(message.partition() or 0)
                    continue
                raise KafkaException(error)
            p, offset = message.partition() or 0, message.offset() or 0
            if p not in open_parts:
                continue
            end = wanted[p][1]
            if offset < end:
                got[p].append(message)
                deadline = time.monotonic() + timeout
            if offset >= end - 1:
                open_parts.discard(p)
    finally:
        consumer.unassign()
    return [m for p in sorted(got) for m in got[p]]


def message_headers(message: Message) -> list[tuple[str, bytes]]:
    """A consumed record's headers as (name, bytes) pairs (a null value as b"")."""
    found = message.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return [
        (name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs
    ]


def wire_headers(headers: Headers) -> list[tuple[str, str | bytes | None]]:
    """Headers in the form Producer.produce takes."""
    return list(headers)


def valued_records(records: Sequence[Message], log: logging.Logger) -> list[Message]:
    """The records of a consumed batch that carry a value. A fatal client error raises; an
    end-of-partition notice is skipped; any other error is logged by name and skipped (the
    client retries it)."""
    kept: list[Message] = []
    for record in records:
        error = record.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer: %s", error.name())
            continue
        if record.value() is not None:
            kept.append(record)
    return kept
