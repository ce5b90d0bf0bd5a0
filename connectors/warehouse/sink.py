"""The warehouse sink: research topics -> OMOP CDM v5.4 (DuckDB or PostgreSQL).

A runtime object with run/ready, as every component: the composition root gives it its Kafka
client configs, topic names and the health server. Kafka and database calls block, so they run
on one worker thread, in order; the event loop only serves /metrics, /healthz and /readyz.

Per batch: consume up to `batch_size` records, write them in one transaction (writer.py), send
the records the warehouse refused to the DLQ and wait for Kafka to confirm them, and only then
store the batch's offsets (committed by the consumer's auto-commit and on close). A crash
anywhere before that replays the batch, which changes nothing (docs/architecture.md, Delivery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from hl7bus.connectors.mllp.service import StartHttp
from hl7bus.connectors.warehouse import metrics
from hl7bus.connectors.warehouse.concepts import ConceptLookup
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.engine import Engine
from hl7bus.connectors.warehouse.omop import ResultStatuses
from hl7bus.connectors.warehouse.vocabulary import VocabularyLookup
from hl7bus.connectors.warehouse.writer import DLQ, BatchWriter, Incoming, Outcome

log = logging.getLogger(__name__)

DLQ_STAGE = "sinking"  # the hl7bus.stage header of the sink's DLQ records
# Headers the sink sets on a DLQ record (a resubmitted record's old ones are replaced).
_DLQ_HEADERS = frozenset(
    ("hl7bus.stage", "hl7bus.reason", "hl7bus.topic", "hl7bus.partition", "hl7bus.offset")
)
_DLQ_TIMEOUT_S = 30.0

_T = TypeVar("_T")


class DlqError(RuntimeError):
    """Kafka did not confirm the batch's DLQ records: its offsets are not stored."""


class WarehouseSink:
    def __init__(
        self,
        cfg: WarehouseConfig,
        consumer_config: dict[str, Any],
        producer_config: dict[str, Any],
        topics: Sequence[str],
        dlq_topic: str,
        *,
        concepts: Callable[[Engine], ConceptLookup] | None = None,
        start_http: StartHttp | None = None,
        open_database: Callable[[WarehouseConfig], Engine] = open_engine,
    ) -> None:
        """`concepts` makes the vocabulary lookup once the database is open (none: the
        vocabulary loaded in the warehouse database itself; with none loaded there, every code
        is concept 0 but sex and patient class). `start_http`, given by the composition root,
        serves the health endpoints on warehouse.metrics_port."""
        self.cfg = cfg
        self._consumer_config = consumer_config
        self._producer_config = producer_config
        self._topics = list(topics)
        self._dlq_topic = dlq_topic
        self._concepts = concepts
        self._start_http = start_http
        self._open_database = open_database
        self._statuses = ResultStatuses(
            frozenset(cfg.load_result_statuses), frozenset(cfg.delete_result_statuses)
        )
        self._engine: Engine | None = None
        self._lookup_conn: Any = None
        self._writer: BatchWriter | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._http: Any = None
        self._running = False
        self._database_ok = False

    @property
    def http_port(self) -> int | None:
        if self._http is None:
            return None
        addresses: Sequence[Any] = self._http.addresses
        return int(addresses[0][1]) if addresses else None

    async def ready(self) -> bool:
        """Ready: subscribed, and the last write to the database (if any) succeeded."""
        return self._running and self._database_ok

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and write until `stop` is set; raises when the database fails."""
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse")

        def call(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
            return loop.run_in_executor(worker, fn, *args)

        try:
            await call(self._open)
            if self.cfg.metrics_port is not None and self._start_http is not None:
                self._http = await self._start_http(
                    self.cfg.metrics_host, self.cfg.metrics_port, self.ready
                )
            self._running = True
            while not stop.is_set():
                await call(self._step)
        finally:
            self._running = False
            await call(self._close)
            worker.shutdown(wait=True)
            if self._http is not None:
                await self._http.cleanup()
                self._http = None

    def _open(self) -> None:
        self._engine = self._open_database(self.cfg)
        self._database_ok = True
        metrics.DATABASE_UP.set(1)
        metrics.SINK_UP.set(1)
        concepts = self._concepts(self._engine) if self._concepts else self._vocabulary()
        self._writer = BatchWriter(self._engine, concepts, self._statuses)
        self._producer = Producer(self._producer_config)
        self._consumer = Consumer(self._consumer_config)
        self._consumer.subscribe(self._topics)

    def _vocabulary(self) -> VocabularyLookup:
        """The lookup over the vocabulary tables of the sink's own database, read through a
        connection beside the one that writes the batches (vocabulary/lookup.py)."""
        assert self._engine is not None
        self._lookup_conn = self._engine.lookup_connection()
        return VocabularyLookup(self._lookup_conn, self._engine.dialect, self._engine.cdm_schema)

    def _close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()  # commits the stored offsets
        if self._producer is not None:
            self._producer.flush(10)
        if self._lookup_conn is not None:
            self._lookup_conn.close()
            self._lookup_conn = None
        if self._engine is not None:
            self._engine.close()

    def _step(self) -> None:
        assert self._consumer is not None
        records = self._consumer.consume(self.cfg.batch_size, self.cfg.poll_timeout_s)
        if records:
            self.process(records)

    def process(self, records: Sequence[Message]) -> Outcome:
        """Write one consumed batch, DLQ what the warehouse refused, store the offsets."""
        assert self._writer is not None and self._consumer is not None
        started = time.monotonic()
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
        metrics.STAGE.in_flight.inc(len(kept))
        try:
            try:
                outcome = self._writer.write(
                    [Incoming(record.value() or b"", record.topic()) for record in kept]
                )
            except Exception as exc:
                self._database_ok = False
                metrics.DATABASE_UP.set(0)
                metrics.SINK_UP.set(0)
                metrics.ERRORS.labels(type(exc).__name__).inc()
                metrics.STAGE.error(type(exc).__name__, len(kept))
                raise
            self._database_ok = True
            metrics.DATABASE_UP.set(1)
            metrics.SINK_UP.set(1)
            self._send_dlq(kept, outcome)
            for record in records:
                if record.error() is None:
                    self._consumer.store_offsets(message=record)
        finally:
            metrics.STAGE.in_flight.dec(len(kept))
        self._count(kept, outcome)
        elapsed = time.monotonic() - started
        metrics.BATCH_LATENCY.observe(elapsed)
        metrics.STAGE.latency.observe(elapsed)
        return outcome

    def _send_dlq(self, kept: Sequence[Message], outcome: Outcome) -> None:
        """Send the refused records to the DLQ and wait until Kafka has them all."""
        refused = outcome.dlq
        if not refused:
            return
        assert self._producer is not None
        failures: list[str] = []

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                failures.append(err.name())

        for index in refused:
            record = kept[index]
            headers = [
                (name, value) for name, value in _headers(record) if name not in _DLQ_HEADERS
            ]
            # Codes and positions only: never a value of the event (docs/architecture.md).
            headers += [
                ("hl7bus.stage", DLQ_STAGE.encode()),
                ("hl7bus.reason", (outcome.reasons[index] or "unknown").encode()),
                ("hl7bus.topic", (record.topic() or "").encode()),
                ("hl7bus.partition", str(record.partition()).encode()),
                ("hl7bus.offset", str(record.offset()).encode()),
            ]
            while True:
                try:
                    self._producer.produce(
                        self._dlq_topic,
                        key=record.key(),
                        value=record.value(),
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self._producer.poll(0)
        if self._producer.flush(_DLQ_TIMEOUT_S) or failures:
            raise DlqError(
                f"{len(refused)} DLQ records not confirmed by Kafka "
                f"({', '.join(sorted(set(failures))) or 'timeout'})"
            )

    def _count(self, kept: Sequence[Message], outcome: Outcome) -> None:
        now = time.time()
        metrics.LAST_COMMIT.set(now)
        metrics.SINK_LAST_COMMIT.set(now)
        stage = metrics.STAGE
        stage.received.inc(len(kept))
        refused: Counter[str] = Counter()
        for index, record in enumerate(kept):
            event_type = outcome.event_types[index] or "unknown"
            metrics.RECORDS_IN.labels(event_type).inc()
            result = outcome.results[index]
            metrics.RECORDS.labels(event_type, result).inc()
            if result == DLQ:
                reason = outcome.reasons[index] or "unknown"
                metrics.DLQ.labels(reason).inc()
                stage.dlq(reason)
                refused[reason] += 1
            else:  # written, or skipped on purpose: done with either way
                stage.sent.inc()
            kind, stamp = record.timestamp()
            if kind != 0 and stamp > 0:  # 0: TIMESTAMP_NOT_AVAILABLE
                metrics.FRESHNESS.observe(max(0.0, now - stamp / 1000))
        for (table, op), count in outcome.rows.items():
            metrics.ROWS.labels(table, op).inc(count)
        for reason, count in sorted(refused.items()):
            log.warning(
                "warehouse sink: %d record(s) went to the DLQ (stage %s, reason %s)",
                count,
                DLQ_STAGE,
                reason,
            )


def _headers(record: Message) -> list[tuple[str, str | bytes | None]]:
    headers = record.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)
