"""The warehouse sink: research topics -> OMOP CDM v5.4 (DuckDB or PostgreSQL).

A runtime object with run/ready, as every component: the composition root gives it its Kafka
client configs, topic names and the health server. Kafka and database calls block, so they run
on one worker thread, in order; the event loop only serves /metrics, /healthz and /readyz.

Per batch: consume up to `batch_size` records, write them in one transaction (writer.py), send
the records the warehouse refused to the DLQ and wait for Kafka to confirm them, and only then
store the batch's offsets (committed by the consumer's auto-commit and on close). A crash
anywhere before that replays the batch, which changes nothing (docs/architecture.md, Delivery).

An outage (database.outage_reason: the server down, the connection lost, the DuckDB file locked
by another process, a full disk), on start or mid-stream: the batch that failed is kept in
memory with its offsets unstored, every assigned partition is paused (the consumer is still
polled, so it stays in its group but fetches nothing), /readyz answers 503 with the reason, and
the sink reconnects with exponential backoff (`retry_initial_s` doubling up to `retry_max_s`).
Once a connection works the kept batch is written, its offsets stored, the partitions resumed.
Rows are upserted by their source keys, so a batch whose COMMIT reached the server before the
connection broke is written again without doubling anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from hl7bus.connectors import kafka_clients, sink_dlq
from hl7bus.connectors.warehouse import metrics
from hl7bus.connectors.warehouse.concepts import ConceptLookup
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine, outage_detail, outage_reason
from hl7bus.connectors.warehouse.engine import Engine
from hl7bus.connectors.warehouse.omop import ResultStatuses
from hl7bus.connectors.warehouse.vocabulary import VocabularyLookup
from hl7bus.connectors.warehouse.writer import DLQ, BatchWriter, Incoming, Outcome
from hl7bus.schemas import codec

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The readiness check answers True, or why the sink is not ready (ops/health.py serves it).
ReadyCheck = Callable[[], Awaitable[bool | str]]
StartHttp = Callable[[str, int, ReadyCheck], Awaitable[Any]]


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
        received_at_kept: bool = False,
    ) -> None:
        """`concepts` makes the vocabulary lookup once the database is open (none: the
        vocabulary loaded in the warehouse database itself; with none loaded there, every code
        is concept 0 but sex and patient class). `start_http`, given by the composition root,
        serves the health endpoints on warehouse.metrics_port. `received_at_kept`: the research
        contracts keep received_at as the bus received it (keeps_received_at), so freshness is
        measured from the listener's receipt rather than from the worker's produce."""
        self.cfg = cfg
        self._consumer_config = consumer_config
        self._producer_config = producer_config
        self._topics = list(topics)
        self._dlq_topic = dlq_topic
        self._concepts = concepts
        self._start_http = start_http
        self._open_database = open_database
        self._received_at_kept = received_at_kept
        self._statuses = ResultStatuses(
            frozenset(cfg.load_result_statuses), frozenset(cfg.delete_result_statuses)
        )
        self._engine: Engine | None = None
        self._lookup_conn: Any = None
        self._lookup: VocabularyLookup | None = None
        self._writer: BatchWriter | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._http: Any = None
        self._running = False
        # An outage: its reason (database.outage_reason), since when (monotonic), the wait
        # before the next attempt, and the consumed records not written yet.
        self._outage: str | None = None
        self._outage_since = 0.0
        self._delay = cfg.retry_initial_s
        self._pending: list[Message] = []
        metrics.OUTAGE_SECONDS.set_function(self._outage_seconds)

    @property
    def http_port(self) -> int | None:
        if self._http is None:
            return None
        addresses: Sequence[Any] = self._http.addresses
        return int(addresses[0][1]) if addresses else None

    async def ready(self) -> bool | str:
        """Ready: subscribed, and the database took the last write (or nothing was written
        yet); else why not."""
        if self._outage is not None:
            return (
                f"warehouse database {self._outage} for {self._outage_seconds():.0f} s; "
                "consumption paused, retrying"
            )
        if not self._running or self._consumer is None:
            return "connecting to the warehouse database"
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and write until `stop` is set. A database outage pauses consumption and is
        retried; anything else the database or Kafka raise stops the sink."""
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse")

        def call(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
            return loop.run_in_executor(worker, fn, *args)

        try:
            # Served from the start: /readyz says why while the database cannot be reached.
            if self.cfg.metrics_port is not None and self._start_http is not None:
                self._http = await self._start_http(
                    self.cfg.metrics_host, self.cfg.metrics_port, self.ready
                )
            self._running = True
            while not stop.is_set():
                wait = await call(self._step)
                if wait > 0:
                    with suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            self._running = False
            await call(self._close)
            worker.shutdown(wait=True)
            if self._http is not None:
                await self._http.cleanup()
                self._http = None

    def _connect(self) -> None:
        """Open the database and the writer over it; the vocabulary lookup made at the first
        connection is kept (with its cache) and pointed at the new one."""
        self._engine = self._open_database(self.cfg)
        if self._concepts is not None:
            concepts: ConceptLookup = self._concepts(self._engine)
        else:
            self._lookup_conn = self._engine.lookup_connection()
            if self._lookup is None:
                self._lookup = VocabularyLookup(
                    self._lookup_conn, self._engine.dialect, self._engine.cdm_schema
                )
            else:
                self._lookup.rebind(self._lookup_conn)
            concepts = self._lookup
        self._writer = BatchWriter(self._engine, concepts, self._statuses)

    def _disconnect(self) -> None:
        """Drop the database connections after a failure; closing a dead one may fail too."""
        for closable in (self._lookup_conn, self._engine):
            if closable is not None:
                try:
                    closable.close()
                except Exception as exc:
                    log.debug("closing a failed connection: %s", type(exc).__name__)
        self._lookup_conn = self._engine = self._writer = None

    def _subscribe(self) -> None:
        self._producer = Producer(self._producer_config)
        self._consumer = Consumer(self._consumer_config)
        self._consumer.subscribe(self._topics, on_revoke=self._revoked)

    def _revoked(self, _: Consumer, partitions: list[TopicPartition]) -> None:
        """A rebalance during an outage: records of partitions this sink no longer owns are not
        written by it (their new owner reads them from the committed offsets)."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._pending = [r for r in self._pending if (r.topic(), r.partition()) not in gone]

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

    def _step(self) -> float:
        """One round on the worker thread; returns the seconds to wait before the next."""
        if self._outage is not None or self._engine is None:
            return self._recover()
        assert self._consumer is not None
        records = self._consumer.consume(self.cfg.batch_size, self.cfg.poll_timeout_s)
        if not records:
            return 0.0
        try:
            self.process(records)
        except Exception as exc:
            reason = outage_reason(exc)
            if reason is None:
                raise
            self._pending = list(records)
            return self._failed(reason, exc)
        return 0.0

    def _recover(self) -> float:
        """Connect (at start, or after an outage) and write the records kept since."""
        if self._consumer is not None:
            # Polled while paused: it stays in its group and serves rebalances. Paused again
            # each time, since partitions a rebalance assigns come unpaused; a record fetched
            # before the pause took hold is kept with the others.
            stray = self._consumer.poll(0)
            if stray is not None:
                self._pending.append(stray)
            self._consumer.pause(self._consumer.assignment())
        try:
            if self._engine is None:
                self._connect()
            if self._pending:
                self.process(self._pending)
        except Exception as exc:
            reason = outage_reason(exc)
            if reason is None:
                raise
            return self._failed(reason, exc)
        self._pending = []
        if self._outage is not None:
            log.warning(
                "warehouse database back after %.1f s: consuming again", self._outage_seconds()
            )
            self._outage = None
        metrics.DATABASE_UP.set(1)
        metrics.SINK_UP.set(1)
        if self._consumer is None:
            self._subscribe()
        else:
            self._consumer.resume(self._consumer.assignment())
        self._delay = self.cfg.retry_initial_s
        return 0.0

    def _failed(self, reason: str, exc: Exception) -> float:
        """Enter (or stay in) an outage; returns the wait before the next attempt."""
        self._disconnect()
        metrics.DATABASE_UP.set(0)
        metrics.SINK_UP.set(0)
        if self._outage is None:
            self._outage_since = time.monotonic()
            self._delay = self.cfg.retry_initial_s
            metrics.OUTAGES.labels(reason).inc()
            if self._consumer is not None:
                self._consumer.pause(self._consumer.assignment())
            log.warning(
                "warehouse database %s (%s): consumption paused, %d records kept, retrying",
                reason,
                outage_detail(exc),
                len(self._pending),
            )
        else:
            self._delay = min(self._delay * 2, self.cfg.retry_max_s)
            log.info("warehouse database still %s (%s)", reason, outage_detail(exc))
        self._outage = reason
        return self._delay

    def _outage_seconds(self) -> float:
        return time.monotonic() - self._outage_since if self._outage is not None else 0.0

    def process(self, records: Sequence[Message]) -> Outcome:
        """Write one consumed batch, DLQ what the warehouse refused, store the offsets."""
        assert self._writer is not None and self._consumer is not None
        started = time.monotonic()
        kept = kafka_clients.valued_records(records, log)
        metrics.STAGE.in_flight.inc(len(kept))
        try:
            outcome = self._writer.write(
                [Incoming(record.value() or b"", record.topic()) for record in kept]
            )
        except Exception as exc:
            metrics.DATABASE_UP.set(0)
            metrics.SINK_UP.set(0)
            metrics.ERRORS.labels(type(exc).__name__).inc()
            metrics.STAGE.error(type(exc).__name__, len(kept))
            raise
        finally:
            metrics.STAGE.in_flight.dec(len(kept))
        metrics.DATABASE_UP.set(1)
        metrics.SINK_UP.set(1)
        self._send_dlq(kept, outcome)
        for record in records:
            if record.error() is None:
                self._consumer.store_offsets(message=record)
        self._count(kept, outcome)
        elapsed = time.monotonic() - started
        metrics.BATCH_LATENCY.observe(elapsed)
        metrics.STAGE.latency.observe(elapsed)
        return outcome

    def _send_dlq(self, kept: Sequence[Message], outcome: Outcome) -> None:
        """Send the refused records to the DLQ and wait until Kafka has them all."""
        refused = outcome.refused(kept)
        if refused:
            assert self._producer is not None
            sink_dlq.send_refused(self._producer, self._dlq_topic, refused)

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
            received = outcome.received_at[index] if self._received_at_kept else None
            kind, stamp = record.timestamp()
            if received is not None:
                metrics.FRESHNESS.observe(max(0.0, now - received))
            elif kind != 0 and stamp > 0:  # 0: TIMESTAMP_NOT_AVAILABLE
                metrics.FRESHNESS.observe(max(0.0, now - stamp / 1000))
        for (table, op), count in outcome.rows.items():
            metrics.ROWS.labels(table, op).inc(count)
        sink_dlq.log_refused(log, "warehouse", refused)


def keeps_received_at(contracts: Mapping[str, codec.EventSchema]) -> bool:
    """Whether every research contract carries received_at unchanged (the policy's action for it
    is keep, as in the limited profile). kr-pseudonym shifts it by the patient's secret offset
    and safe-harbor truncates it to the year: a freshness measured from those would be days or
    months off, so the sink measures from the research record's Kafka timestamp instead."""
    if not contracts:
        return False
    for contract in contracts.values():
        fields = {f["name"]: f for f in contract.definition["fields"]}
        if fields.get("received_at", {}).get("deid") != "keep":
            return False
    return True
