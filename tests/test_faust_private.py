"""What the faust adapter (streams/runtime.py) assumes of faust internals, checked against the
installed faust: each helper of its section "faust's private parts" has a test here that fails
if faust changes what the helper relies on. No broker: the app is built, not started, and the
calls that would reach Kafka (the consumer's seek and commit) answer from the test.

The running worker is covered on the real broker by tests/test_worker_*.py,
tests/test_deid_broker.py and tests/test_end_to_end.py.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import importlib
import logging
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust.streams
import faust.transport.consumer
import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from hl7bus.schemas import topics
from hl7bus.streams import deid, runtime, worker_config
from hl7bus.streams.stage import SIGHTINGS_KEPT, Record
from hl7bus.streams.steps import Sighting

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("hl7v2", "schemas", "streams", "connectors", "ops")
CATALOG = topics.TopicCatalog.load(topics.TopicsConfig(prefix="private."))
RAW = CATALOG.name(topics.RAW)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    """The worker's faust app, as `hl7bus worker` builds it (both stages), never started."""
    cfg = worker_config.WorkerConfig(app_id="private-test", data_dir=tmp_path, metrics_port=None)
    key = deid.Pseudonymizer(secrets.token_bytes(32), "k")
    yield runtime.build_app(cfg, "127.0.0.1:1", CATALOG, deid.Policy.load(None), key, False)


class _Event:
    """What a table reads of faust's current event: its message's topic and partition
    (weakly referenced, as faust does)."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def test_exactly_one_module_of_the_package_imports_faust() -> None:
    importers = set()
    for folder in PACKAGE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n == "faust" or n.startswith("faust.") for n in names):
                    importers.add(str(path.relative_to(REPO)))
    assert importers == {"streams/runtime.py"}


def test_a_remembered_sighting_is_written_to_the_changelog_partition_of_its_record(
    app: Any,
) -> None:
    """_set_current_event: the table picks a write's changelog partition from faust's current
    event (faust.streams._current_event), which the store sets to the sighting's record."""
    table = app.tables[worker_config.DEDUPE_TABLE]
    sent: list[tuple[int | None, Any, Any]] = []

    def send_changelog(partition: int | None, key: Any, value: Any, *_: Any) -> Any:
        sent.append((partition, key, value))
        return SimpleNamespace(message=SimpleNamespace(partition=partition))

    table.send_changelog = send_changelog
    store = runtime._TableStore(table)
    origin = _Event(RAW, 3)
    source = Record(b"k", b"v", RAW, 3, 17, origin=origin)

    sighting = Sighting("feed|MSG1", "feed", 1234, "d1gest", (3, 17))

    def write() -> None:
        store.remember(sighting, source)
        current: object = faust.streams.current_event()
        assert current is origin
        table["feed|OLD"] = 99  # a sighting written before digests were kept
        for offset in range(18, 18 + SIGHTINGS_KEPT):  # the control id reused often
            store.remember(
                Sighting("feed|MSG1", "feed", 1234 + offset, f"d{offset}", (3, offset)),
                Record(b"k", b"v", RAW, 3, offset, origin=origin),
            )

    contextvars.copy_context().run(write)  # the current event stays in that context
    assert sent[0] == (3, "feed|MSG1", [[1234, "d1gest", 3, 17]])
    assert [s.digest for s in store.seen("feed|MSG1")] == [
        f"d{offset}" for offset in range(18, 18 + SIGHTINGS_KEPT)
    ]  # the last few kept, oldest first
    assert store.seen("feed|other") == []
    assert store.seen("feed|OLD") == [Sighting("feed|OLD", "feed", 99, None)]


def test_committed_offsets_are_the_ones_faust_found_and_committed(app: Any) -> None:
    """_committed_offsets reads Consumer._committed_offset: None for a partition with no
    commit, the committed offset found when partitions are assigned (perform_seek), and the
    offset faust's own commit wrote."""
    consumer = app.consumer
    tp, fresh = TP(RAW, 1), TP(RAW, 2)
    committed_by_kafka: list[Mapping[TP, int]] = []

    async def seek_to_committed() -> Mapping[TP, int]:  # what Kafka answers at assignment
        return {tp: 42}

    async def commit_to_kafka(offsets: Mapping[TP, int]) -> bool:
        committed_by_kafka.append(dict(offsets))
        return True

    consumer.seek_to_committed = seek_to_committed
    consumer._commit = commit_to_kafka
    consumer.assignment = lambda: {tp, fresh}

    async def scenario() -> None:
        assert runtime._committed_offsets(consumer).get(fresh) is None
        await consumer.perform_seek()
        assert runtime._committed_offsets(consumer).get(tp) == 42
        assert await consumer._commit_offsets({tp: 45})
        assert committed_by_kafka == [{tp: 45}]
        assert runtime._committed_offsets(consumer).get(tp) == 45
        assert runtime._committed_offsets(consumer).get(fresh) is None

    asyncio.run(scenario())


def test_busy_follows_faust_rebalances_and_table_recoveries(app: Any) -> None:
    """_busy reads AppT.rebalancing (set by the app's rebalance hooks) and AppT.in_recovery
    (set by the table recovery service)."""
    assert runtime._busy(app) is False
    app.on_rebalance_start()
    assert runtime._busy(app) is True
    app.on_rebalance_end()
    assert runtime._busy(app) is False
    recovery = app.tables.recovery
    recovery._set_recovery_started()
    assert runtime._busy(app) is True
    recovery._set_recovery_ended()
    assert runtime._busy(app) is False


def test_the_worker_producer_is_an_idempotent_aiokafka_producer(app: Any) -> None:
    """_use_idempotent_producer: faust's Producer merges _settings_extra() into the arguments of
    the AIOKafkaProducer it makes; the one it makes for the worker is idempotent (aiokafka keeps
    a transaction manager, which numbers the batches, exactly when idempotence is on) with
    acks=all. tests/test_worker_idempotence.py shows it on the real broker."""
    producer = app.producer
    assert producer._settings_extra()["enable_idempotence"] is True

    async def made() -> None:
        client = producer._new_producer()
        try:
            assert client._txn_manager is not None
            assert client._sender._acks == -1
        finally:
            await client.stop()

    asyncio.run(made())


def test_the_value_loggers_are_the_ones_that_log_sent_records() -> None:
    """_VALUE_LOGGERS names faust's and aiokafka's modules that log each sent key and value at
    DEBUG; the worker keeps them at INFO. A renamed module would let values through under
    --loglevel debug."""
    for name, call in runtime._VALUE_LOGS.items():
        module = importlib.import_module(name)
        logger = getattr(module, "logger", None) or module.log
        assert isinstance(logger, logging.Logger | logging.LoggerAdapter)
        assert getattr(logger, "name", None) == name
        assert call in Path(str(module.__file__)).read_text()


def test_the_dedupe_changelog_topic_is_named_as_declare_changelog_creates_it(app: Any) -> None:
    """declare_changelog creates faust's changelog topic itself (topic_allow_declare=False)."""
    table = app.tables[worker_config.DEDUPE_TABLE]
    assert table.changelog_topic.get_topic_name() == worker_config.changelog_topic("private-test")


def test_without_its_spinner_the_worker_keeps_the_root_logger_at_its_level(app: Any) -> None:
    """_without_spinner: faust's Worker makes a terminal spinner and, for a log level of WARN or
    above, sets the root logger to DEBUG so that the spinner sees every record (faust's
    Worker.on_setup_root_logger, run when mode's worker sets up logging); without the spinner
    the root logger stays at the worker's level and debug calls build no records."""
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)

    def root_level(drop_spinner: bool) -> int:
        worker = faust.Worker(app, loglevel="warning", quiet=True)
        if drop_spinner:
            runtime._without_spinner(worker)
        worker._setup_logging()
        return root.level

    try:
        assert root_level(drop_spinner=False) == logging.DEBUG
        assert root_level(drop_spinner=True) == logging.WARNING
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_the_worker_batches_records_on_the_aiokafka_producer_faust_started(app: Any) -> None:
    """_aiokafka_producer reads the AIOKafkaProducer faust's Producer keeps in _producer (what
    its own _ensure_producer returns) for aiokafka's batch API; _partitioner is the partitioner
    faust gives that producer when producer_partitioner is not set, so a key's records land in
    the partition Topic.send would have picked."""
    producer = app.producer
    assert app.conf.producer_partitioner is None

    async def made() -> None:
        client = producer._new_producer()
        try:
            producer._producer = client
            assert runtime._aiokafka_producer(producer) is producer._ensure_producer()
            assert callable(client.create_batch) and callable(client.send_batch)
            assert type(client._partitioner) is type(runtime._partitioner())
        finally:
            producer._producer = None
            await client.stop()

    asyncio.run(made())


def test_the_worker_producer_makes_record_batches_of_up_to_producer_batch_bytes(app: Any) -> None:
    """build_app passes PRODUCER_BATCH_BYTES to faust's producer_max_batch_size, which faust
    gives aiokafka as max_batch_size: a record batch the worker makes takes records until it
    holds that many bytes (faust's default, 16 KiB, made a produce request per 16 KiB of one
    partition), and stays under Kafka's default record batch limit (message.max.bytes)."""
    assert 16 * 1024 < runtime.PRODUCER_BATCH_BYTES < 1_048_588
    value = b"v" * 4096

    async def made() -> None:
        client = app.producer._new_producer()
        try:
            batch = client.create_batch()
            taken = 0
            while batch.append(key=b"k", value=value, timestamp=None, headers=[]) is not None:
                taken += 1
            assert runtime.PRODUCER_BATCH_BYTES - 2 * len(value) < taken * len(value)
            assert batch.size() <= runtime.PRODUCER_BATCH_BYTES
        finally:
            await client.stop()

    asyncio.run(made())


class _Message:
    """What faust's Consumer.ack reads of a consumed message."""

    def __init__(self, tp: TP, offset: int) -> None:
        self.tp, self.topic, self.offset = tp, tp.topic, offset
        self.acked = False
        self.tracked = True  # taken up by a stream (Stream.__aiter__ sets it)
        self.generation_id: int | None = None  # as faust's Message: unknown


def _stub_kafka(consumer: Any, tp: TP, committed: list[int]) -> list[int]:
    """Answer the consumer's calls to Kafka for one partition whose committed offset is the
    last of `committed`; returns the list of offsets the consumer commits."""
    commits: list[int] = []

    async def seek_to_committed() -> Mapping[TP, int]:
        return {tp: committed[-1]}

    async def commit_to_kafka(offsets: Mapping[TP, int]) -> bool:
        commits.append(offsets[tp])
        committed.append(offsets[tp])
        return True

    async def app_on_revoked(revoked: Any) -> None:  # the app's part (flow control, tables)
        return None

    consumer.seek_to_committed = seek_to_committed
    consumer._commit = commit_to_kafka
    consumer._on_partitions_revoked = app_on_revoked
    consumer.assignment = lambda: {tp}
    consumer.app.topics.acks_enabled_for = lambda topic: True
    return commits


def test_faust_commits_past_unprocessed_records_after_a_revoke_and_the_worker_does_not(
    app: Any,
) -> None:
    """_safe_consumer. faust's own consumer (faust's aiokafka Consumer class, as faust would
    make it) commits an offset acked between a revoke and the next seek (a stale event) as if
    every record before it was processed; the worker's consumer commits nothing then, and after
    the seek only a run of acks that starts at the committed offset. If faust stops doing the
    first, this test says so and the override can go."""
    from faust.transport.drivers import aiokafka

    tp = TP(RAW, 0)

    async def scenario(consumer: Any) -> list[int]:
        commits = _stub_kafka(consumer, tp, [100])
        await consumer.perform_seek()  # assigned: committed offset 100
        await consumer.on_partitions_revoked({tp})  # a rebalance: faust forgets it
        consumer.ack(_Message(tp, 150))  # a record fetched before the rebalance
        await consumer.commit()
        return commits

    faust_consumer = aiokafka.Consumer(app.transport, **_hooks())
    assert asyncio.run(scenario(faust_consumer)) == [151]  # 100..149 skipped

    consumer = app.consumer
    assert type(consumer) is runtime._safe_consumer()

    async def safely() -> list[int]:
        commits = await scenario(consumer)
        assert commits == []
        await consumer.perform_seek()  # after the recovery: committed 100 again
        await consumer.commit()
        assert commits == []  # 100..149 not processed yet
        consumer.ack(_Message(tp, 101))
        await consumer.commit()
        assert commits == []  # 100 itself is missing (faust would commit 102)
        for offset in range(100, 150):
            consumer.ack(_Message(tp, offset))
        await consumer.commit()
        return commits

    assert asyncio.run(safely()) == [151]


def test_batches_that_finish_during_a_revoke_still_commit_from_the_known_offset(
    app: Any,
) -> None:
    """_safe_consumer: faust waits for its streams to empty during a revoke and commits; acks
    of the batches that finish then commit as a run from the committed offset faust knew
    before the revoke, and nothing else does."""
    tp = TP(RAW, 0)
    consumer = app.consumer

    async def scenario() -> list[int]:
        commits = _stub_kafka(consumer, tp, [100])
        await consumer.perform_seek()
        await consumer.on_partitions_revoked({tp})
        consumer.ack(_Message(tp, 300))  # a stale record: no commit
        await consumer.commit()
        assert commits == []
        for offset in range(100, 120):  # the batch in flight at the revoke
            consumer.ack(_Message(tp, offset))
        await consumer.commit()
        return commits

    assert asyncio.run(scenario()) == [120]


def test_the_worker_consumer_never_counts_skipped_offsets_as_acked(app: Any) -> None:
    """_safe_consumer: faust counts offsets its fetcher skipped as acked (Consumer._add_gap,
    called from its fetch loop); the worker's consumer does not, so a commit waits for them."""
    from faust.transport.consumer import Consumer

    assert "await self._add_gap(tp, r_offset + 1, offset)" in _source(Consumer._drain_messages)
    tp = TP(RAW, 0)
    consumer = app.consumer

    async def scenario() -> list[int]:
        commits = _stub_kafka(consumer, tp, [10])
        await consumer.perform_seek()
        await consumer._add_gap(tp, 11, 19)  # the fetcher jumped from 10 to 20
        consumer.ack(_Message(tp, 10))
        consumer.ack(_Message(tp, 20))
        await consumer.commit()
        return commits

    assert asyncio.run(scenario()) == [11]


def test_a_batch_that_failed_is_never_acked(app: Any) -> None:
    """_never_ack: faust's take_events acks the batch it yielded in a finally (however the loop
    body ends); an event whose message is marked acked is skipped by Message.ack and
    Consumer.ack, so its offset is never committed."""
    assert "finally:" in _source(faust.Stream.take_events)
    assert "await self.ack(event)" in _source(faust.Stream.take_events)
    tp = TP(RAW, 0)
    consumer = app.consumer

    async def scenario() -> list[int]:
        commits = _stub_kafka(consumer, tp, [0])
        await consumer.perform_seek()
        message = _Message(tp, 0)
        runtime._never_ack([SimpleNamespace(message=message)])
        assert consumer.ack(message) is False
        await consumer.commit()
        return commits

    assert asyncio.run(scenario()) == []


def test_the_busy_position_moves_with_rebalances_and_recovery_reads(app: Any) -> None:
    """_busy_position reads App.rebalancing_count and the table recovery's active_offsets."""
    start = runtime._busy_position(app)
    app.on_rebalance_start()
    assert runtime._busy_position(app) == (start[0] + 1, start[1])
    app.tables.recovery.active_offsets[TP(RAW + "-changelog", 0)] = 41
    assert runtime._busy_position(app) == (start[0] + 1, start[1] + 41)
    app.on_rebalance_end()


def _hooks() -> dict[str, Any]:
    async def hook(*_: Any) -> None:
        return None

    return {"callback": hook, "on_partitions_revoked": hook, "on_partitions_assigned": hook}


def _source(function: Any) -> str:
    import inspect

    return inspect.getsource(function)


def test_a_partition_paused_for_recovery_stays_off_the_fetch_when_its_buffer_drains(
    app: Any,
) -> None:
    """_safe_consumer: faust puts a partition whose stream buffer drained back on the fetch
    (Consumer.on_buffer_drop) even when it was paused for a table recovery in between; the
    worker's consumer leaves it paused until the recovery resumes it."""
    from faust.transport.drivers import aiokafka

    tp = TP(RAW, 0)

    def fetched_after_drain(consumer: Any) -> bool:
        consumer.assignment = lambda: {tp}
        consumer._set_active_tps({tp})
        consumer.on_buffer_full(tp)  # the stream buffer filled: off the fetch
        assert tp not in consumer._get_active_partitions()
        consumer.pause_partitions({tp})  # a rebalance: paused for the table recovery
        consumer.on_buffer_drop(tp)  # the cleared buffer is read empty
        return tp in consumer._get_active_partitions()

    assert fetched_after_drain(aiokafka.Consumer(app.transport, **_hooks())) is True
    consumer = app.consumer
    assert fetched_after_drain(consumer) is False


def test_acks_of_records_fetched_before_the_last_rebalance_never_count(app: Any) -> None:
    """_safe_consumer: faust acks an event it skips as fetched in an earlier rebalance
    generation (Stream.__aiter__ acks skipped values), and a record of an earlier generation
    may still finish processing after the next assignment; such an ack would let a commit pass
    the record before it is processed again. The worker's consumer ignores acks of messages of
    an earlier generation (ConsumerMessage.generation_id, set when faust fetched it)."""
    import faust.streams as streams_module

    assert "or message.generation_id != self.app.consumer_generation_id" in _source(
        streams_module.Stream._py_aiter
    )
    tp = TP(RAW, 0)
    consumer = app.consumer

    async def scenario() -> list[int]:
        commits = _stub_kafka(consumer, tp, [100])
        app.consumer_generation_id = 4
        await consumer.perform_seek()
        stale = _Message(tp, 100)
        stale.generation_id = 3  # fetched before the rebalance that made generation 4
        assert consumer.ack(stale) is False
        await consumer.commit()
        assert commits == []
        fresh = _Message(tp, 100)
        fresh.generation_id = 4
        assert consumer.ack(fresh) is True
        await consumer.commit()
        return commits

    assert asyncio.run(scenario()) == [101]


def test_acks_of_records_skipped_while_the_flow_is_stopped_never_count(app: Any) -> None:
    """_safe_consumer: faust's stream skips an event of the current generation while its flow
    control is stopped (a table recovery: the stream partitions may still deliver), before it
    takes the message up (ConsumerMessage.tracked), and acks it; faust's consumer counts that
    ack, so a commit could pass a record never processed. The worker's consumer ignores it; a
    tracked message's ack (a batch finishing while the flow stops) still counts."""
    import faust.streams as streams_module

    source = _source(streams_module.Stream._py_aiter)
    skip = source.index("not self.app.flow_control.is_active()")
    assert skip < source.index("message.tracked = True")
    fetched = ConsumerMessage(
        topic=RAW,
        partition=0,
        offset=0,
        timestamp=0.0,
        timestamp_type=0,
        headers=None,
        key=None,
        value=b"",
        checksum=None,
    )
    assert fetched.tracked is False  # until a stream takes it up
    tp = TP(RAW, 0)
    consumer = app.consumer

    async def scenario() -> list[int]:
        commits = _stub_kafka(consumer, tp, [100])
        await consumer.perform_seek()
        app.flow_control.suspend()
        try:
            skipped = _Message(tp, 100)
            skipped.tracked = False
            assert consumer.ack(skipped) is False
            await consumer.commit()
            assert commits == []
            processed = _Message(tp, 100)  # taken up before the flow stopped
            assert consumer.ack(processed) is True
            await consumer.commit()
        finally:
            app.flow_control.resume()
        return commits

    assert asyncio.run(scenario()) == [101]


def test_the_fetch_state_of_a_partition_follows_faust_consumer_sets(app: Any) -> None:
    """_fetch_state reads Consumer._paused_partitions, _buffered_partitions and the active
    partitions, as pause_partitions, on_buffer_full and resume_partitions set them."""
    consumer = app.consumer
    tp = TP(RAW, 0)
    consumer.assignment = lambda: {tp}
    consumer._set_active_tps({tp})
    assert runtime._fetch_state(consumer, tp) == "active"
    consumer.on_buffer_full(tp)
    assert runtime._fetch_state(consumer, tp) == "buffer full"
    consumer.on_buffer_drop(tp)
    assert runtime._fetch_state(consumer, tp) == "active"
    consumer.pause_partitions({tp})
    assert runtime._fetch_state(consumer, tp) == "paused"
    consumer._paused_partitions.clear()
    assert runtime._fetch_state(consumer, tp) == "off"


def test_stream_partitions_are_fetched_again_from_the_committed_offset_after_a_clear(
    app: Any,
) -> None:
    """_safe_consumer: faust's flow control clears the stream buffers when it resumes
    (FlowControlEvent.resume; the end of a table recovery does it after the seek) while its
    fetch loop may have delivered records into them and moved its read offset past them: they
    were lost (a hole at the committed offset the commit waited at for good). After a clear the
    worker's consumer seeks the stream partitions back to their committed offsets before its
    next fetch, and drops the stream records left in the fetch that was delivering then."""
    from mode.utils.queues import FlowControlEvent

    assert "self.clear()" in _source(FlowControlEvent.resume)
    assert "await self.getmany(" not in _source(faust.transport.consumer.Consumer._drain_messages)
    assert "getmany = self.getmany" in _source(faust.transport.consumer.Consumer._drain_messages)
    # The seek back moves faust's read offset too (records below it are dropped as read).
    assert "self.consumer._read_offset[tp] = offset" in _source(AIOKafkaConsumerThread._seek_wait)
    tp, other = TP(RAW, 0), TP(RAW, 1)
    changelog = TP(worker_config.changelog_topic("private-test"), 0)
    consumer = app.consumer
    seeks: list[Mapping[TP, int]] = []

    async def seek_wait(offsets: Mapping[TP, int]) -> None:
        seeks.append(dict(offsets))

    async def fetched(*_: Any, **__: Any) -> Any:
        app.flow_control.resume()  # a clear while the fetch delivers
        return {
            tp: [_record(tp, 5), _record(tp, 6)],
            other: [_record(other, 9)],
            changelog: [_record(changelog, 3)],
        }

    async def scenario() -> list[tuple[TP, int]]:
        _stub_kafka(consumer, tp, [5])
        consumer.assignment = lambda: {tp}
        consumer.seek_wait = seek_wait
        consumer._getmany = fetched
        consumer.highwater = lambda _: 10
        consumer._set_active_tps({tp, other, changelog})
        await consumer.perform_seek()
        delivered = [(t, m.offset) async for t, m in consumer.getmany(timeout=0.1)]
        assert seeks == []  # the clear came during this fetch
        consumer._getmany = lambda *_, **__: asyncio.sleep(0, {})
        _ = [m async for m in consumer.getmany(timeout=0.1)]
        assert seeks == [{tp: 5}]  # back to the committed offset, before the next fetch
        return delivered

    # Only the changelog record: the stream records come again after the seek back.
    assert asyncio.run(scenario()) == [(changelog, 3)]


def _record(tp: TP, offset: int) -> Any:
    """What faust's aiokafka Consumer._to_message reads of an aiokafka ConsumerRecord."""
    return SimpleNamespace(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        headers=[],
        key=b"k",
        value=b"v",
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=1,
    )


def test_leaving_the_group_goes_to_aiokafka_on_faust_consumer_thread() -> None:
    """_leave_group: faust's aiokafka Consumer runs its AIOKafkaConsumer on a thread
    (ThreadDelegateConsumer._thread, a QueueServiceThread: call_thread, _ensure_consumer),
    whose group coordinator leaves the group with _maybe_leave_group (no retry, no commit)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator  # type: ignore[import-untyped]
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode.threads import QueueServiceThread

    assert asyncio.iscoroutinefunction(GroupCoordinator._maybe_leave_group)
    assert "LeaveGroupRequest" in _source(GroupCoordinator._maybe_leave_group)
    assert "commit" not in _source(GroupCoordinator._maybe_leave_group)
    assert issubclass(AIOKafkaConsumerThread, QueueServiceThread)
    assert callable(AIOKafkaConsumerThread._ensure_consumer)
    assert callable(QueueServiceThread.call_thread)
