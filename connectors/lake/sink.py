"""The lake sink: research topics -> a MEDS 0.4 dataset on Parquet (docs/ai-sink.md).

The same shape as the warehouse sink (connectors/warehouse/sink.py): a runtime object with
run/ready, given its Kafka client configs, topic names and the health server by the
composition root. Kafka, key-map and file calls block, so they run on one worker thread, in
order; the event loop only serves /metrics, /healthz and /readyz.

Per batch: consume up to `batch_size` records, publish their rows as one append file
(writer.py), send the records that cannot become rows to the DLQ and wait for Kafka to confirm
them, and only then store the batch's offsets. Every `compact_interval_s`, and once on stop,
a compaction pass folds the append files into the shards. A crash anywhere replays at most
the batches whose offsets were not stored, which compaction absorbs (a fact's newest version
wins); a crash mid-pass leaves every shard old or new, and the next pass redoes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, Producer

from hl7bus.connectors import kafka_clients, sink_dlq
from hl7bus.connectors.lake import metrics
from hl7bus.connectors.lake.compaction import compact
from hl7bus.connectors.lake.config import LakeConfig
from hl7bus.connectors.lake.keys import WarehouseKeys
from hl7bus.connectors.lake.metadata import SPLITS_FILE
from hl7bus.connectors.lake.store import LakeStore
from hl7bus.connectors.lake.writer import ROWS, LakeWriter
from hl7bus.connectors.mllp.service import StartHttp
from hl7bus.connectors.warehouse.writer import DLQ, Incoming, Outcome

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class LakeSink:
    def __init__(
        self,
        cfg: LakeConfig,
        keys: WarehouseKeys,
        consumer_config: dict[str, Any],
        producer_config: dict[str, Any],
        topics: Sequence[str],
        dlq_topic: str,
        *,
        start_http: StartHttp | None = None,
    ) -> None:
        """`keys` resolves subjects through the warehouse's key map; `start_http`, given by
        the composition root, serves the health endpoints on lake.metrics_port."""
        self.cfg = cfg
        self.store = LakeStore(cfg.path, cfg.layout())
        self._keys = keys
        self._consumer_config = consumer_config
        self._producer_config = producer_config
        self._topics = list(topics)
        self._dlq_topic = dlq_topic
        self._start_http = start_http
        self._writer = LakeWriter(self.store, keys)
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._http: Any = None
        self._running = False
        self._healthy = False
        self._last_pass = 0.0
        self._lake_open = False
        self._newest_pending = 0.0  # Kafka timestamp of the newest record in an append file

    def open_lake(self) -> None:
        """Check the lake folder and the key map before anything is consumed: a folder that
        is not writable or a key map that cannot be opened stops the start (LakeError)."""
        if not self._lake_open:
            self.store.open()
            self._keys.open()
            self._lake_open = True

    @property
    def http_port(self) -> int | None:
        if self._http is None:
            return None
        addresses: Sequence[Any] = self._http.addresses
        return int(addresses[0][1]) if addresses else None

    async def ready(self) -> bool:
        """Ready: subscribed, and the last append and compaction (if any) succeeded."""
        return self._running and self._healthy

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, append and compact until `stop` is set; raises when the lake fails."""
        loop = asyncio.get_running_loop()
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake")

        def call(fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
            return loop.run_in_executor(worker, fn, *args)

        opened = False
        try:
            await call(self._open)
            opened = True
            if self.cfg.metrics_port is not None and self._start_http is not None:
                self._http = await self._start_http(
                    self.cfg.metrics_host, self.cfg.metrics_port, self.ready
                )
            self._running = True
            while not stop.is_set():
                await call(self._step)
        finally:
            self._running = False
            await call(self._close, opened)
            worker.shutdown(wait=True)
            if self._http is not None:
                await self._http.cleanup()
                self._http = None

    def _open(self) -> None:
        self.open_lake()
        self._compact()  # what a killed run left in append files (and metadata of a new lake)
        self._producer = Producer(self._producer_config)
        self._consumer = Consumer(self._consumer_config)
        self._consumer.subscribe(self._topics)

    def _close(self, opened: bool) -> None:
        try:
            if self._consumer is not None:
                self._consumer.close()  # commits the stored offsets
            if self._producer is not None:
                self._producer.flush(10)
            if opened and self.store.pending_files():
                try:
                    self._compact()  # leave the shards current
                except Exception as exc:
                    # The append files stay for the next start; the error that stopped the
                    # sink (if any) is the one to report.
                    log.warning("compaction on stop failed: %s", type(exc).__name__)
        finally:
            self._keys.close()
            self._lake_open = False

    def _step(self) -> None:
        assert self._consumer is not None
        records = self._consumer.consume(self.cfg.batch_size, self.cfg.poll_timeout_s)
        if records:
            self.process(records)
        due = time.monotonic() - self._last_pass >= self.cfg.compact_interval_s
        if due and self.store.pending_files():
            self._compact()

    def process(self, records: Sequence[Message]) -> Outcome:
        """Append one consumed batch, DLQ what cannot become rows, store the offsets."""
        assert self._consumer is not None
        started = time.monotonic()
        kept = kafka_clients.valued_records(records, log)
        metrics.STAGE.in_flight.inc(len(kept))
        try:
            outcome = self._writer.write(
                [Incoming(record.value() or b"", record.topic()) for record in kept]
            )
        except Exception as exc:
            self._health(False)
            metrics.ERRORS.labels(type(exc).__name__).inc()
            metrics.STAGE.error(type(exc).__name__, len(kept))
            raise
        finally:
            metrics.STAGE.in_flight.dec(len(kept))
        self._health(True)
        self._send_dlq(kept, outcome)
        for record in records:
            if record.error() is None:
                self._consumer.store_offsets(message=record)
        self._count(kept, outcome)
        metrics.PENDING_FILES.set(len(self.store.pending_files()))
        elapsed = time.monotonic() - started
        metrics.BATCH_LATENCY.observe(elapsed)
        metrics.STAGE.latency.observe(elapsed)
        return outcome

    def _health(self, ok: bool) -> None:
        """The last append or compaction succeeded (ok) or failed: /readyz and sink_up."""
        self._healthy = ok
        metrics.SINK_UP.set(1 if ok else 0)

    def _compact(self) -> None:
        started = time.monotonic()
        newest = self._newest_pending
        try:
            done = compact(self.store, dataset_name=self.cfg.dataset_name)
        except Exception as exc:
            self._health(False)
            metrics.ERRORS.labels(type(exc).__name__).inc()
            raise
        self._health(True)
        self._last_pass = time.monotonic()
        metrics.LAST_PUBLISH.set(time.time())
        if done.files:
            metrics.COMPACTION.observe(self._last_pass - started)
            if newest:
                metrics.NEWEST_RECORD.set(newest)
        self._stats()

    def _stats(self) -> None:
        """Shards, rows and subjects of the lake, from the files' footers."""
        store = self.store
        shards = store.shard_paths()
        metrics.SHARDS.set(len(shards))
        metrics.LAKE_ROWS.set(sum(store.num_rows(path) for path in shards))
        splits = store.path(SPLITS_FILE)
        if store.exists(splits):
            metrics.SUBJECTS.set(store.num_rows(splits))
        metrics.PENDING_FILES.set(len(self.store.pending_files()))

    def _send_dlq(self, kept: Sequence[Message], outcome: Outcome) -> None:
        """Send the records that cannot become rows to the DLQ and wait until Kafka has them."""
        refused = outcome.refused(kept)
        if refused:
            assert self._producer is not None
            sink_dlq.send_refused(self._producer, self._dlq_topic, refused)

    def _count(self, kept: Sequence[Message], outcome: Outcome) -> None:
        metrics.SINK_LAST_COMMIT.set(time.time())
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
            else:  # written to an append file, or skipped on purpose: done with either way
                stage.sent.inc()
            kind, stamp = record.timestamp()
            if kind != 0 and stamp > 0:  # 0: TIMESTAMP_NOT_AVAILABLE
                self._newest_pending = max(self._newest_pending, stamp / 1000)
        metrics.ROWS.inc(outcome.rows[ROWS])
        sink_dlq.log_refused(log, "lake", refused)
