"""The faust adapter: the one module that imports faust.

It builds the faust app (topics, agents, the dedupe table), feeds each agent's batches to the
stage logic of streams/stage.py, sends the outputs, and acks the offsets only after Kafka has
confirmed every output. Everything the stages decide is in streams/stage.py and tested without
Kafka; what is left here is wiring.

Processing is at-least-once: each stage takes records in batches (take_events), sends all
their outputs, waits until Kafka has confirmed every one, and only then are the batch's offsets
acked for faust's periodic commit. The producer is idempotent, so its own retries write no
record twice. Sinks upsert by event id, so a redelivered record changes nothing. A killed
worker re-emits at most the records past the last commit (tests/test_worker_faults.py says
exactly what is guaranteed).

The worker serves /metrics, /healthz and /readyz (ready: source partitions assigned, no
rebalance or table recovery going on, no partition stalled) on worker.metrics_port. A worker
stuck for worker.watchdog_s exits with EXIT_STUCK for its supervisor to restart it
(streams/watchdog.py); a failed batch ends the worker with EXIT_BATCH_FAILED, never acked.

Every use of something faust does not document (a leading underscore, or an attribute its
docs do not promise) is in the section "faust's private parts" at the end of this module, and
tests/test_faust_private.py checks each against the installed faust.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from hl7bus.schemas import topics
from hl7bus.schemas.gc_settings import settle_gc
from hl7bus.schemas.topics import TopicCatalog
from hl7bus.streams.broker_auth import BrokerAuth
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.stage import SIGHTINGS_KEPT, Record, Stages
from hl7bus.streams.steps import REPLAY_HEADER, DeidSettings, Output, Sighting
from hl7bus.streams.terminology import Terminology
from hl7bus.streams.watchdog import Watchdog
from hl7bus.streams.worker_config import DEDUPE_TABLE, WorkerConfig, source_topics

log = logging.getLogger(__name__)

#: Serves /metrics and /readyz on (host, port) with the given readiness check until cancelled.
ServeHealth = Callable[[str, int, Callable[[], Awaitable[bool]]], Awaitable[None]]

#: Exit code of a worker that found itself stuck (WorkerConfig.watchdog_s): restart it.
EXIT_STUCK = 75
#: Exit code of a worker whose batch failed (its outputs not all confirmed): restart it; it
#: redoes the batch from the last committed offset.
EXIT_BATCH_FAILED = 70

#: Largest record batch the worker's producer makes (bytes; see build_app).
PRODUCER_BATCH_BYTES = 512 * 1024


def build_app(
    cfg: WorkerConfig,
    bootstrap: str,
    catalog: TopicCatalog,
    policy: Policy,
    pseudonymize: Pseudonymizer,
    leak_check: bool,
    stages: tuple[str, ...] | None = None,
    serve_health: ServeHealth | None = None,
    auth: BrokerAuth | None = None,
    terms: Terminology | None = None,
) -> Any:
    """The faust app of the worker. `stages` (default: cfg.stages) selects the agents: parse
    (hl7.raw -> hl7.events) and deidentify (hl7.events -> research.*; with parse, it runs inside
    the parse agent instead, on the events in memory); none for (). `serve_health`, given by
    the composition root, serves /metrics and /readyz on worker.metrics_port while the app
    runs. `auth` (default: PLAINTEXT) is how its clients reach the brokers: the `kafka.client`
    settings every other client of the bus uses."""
    import faust

    brokers = ";".join(f"kafka://{host}" for host in bootstrap.split(","))
    app = faust.App(
        cfg.app_id,
        broker=brokers,
        **_broker_settings(auth or BrokerAuth()),
        # Tables live in memory and are rebuilt from their changelog topic on start.
        store="memory://",
        # faust's leader-assignor topic fails to be created on Kafka 4 brokers; we need none.
        topic_disable_leader=True,
        web_enabled=False,
        datadir=str(cfg.data_dir),
        stream_buffer_maxsize=cfg.stream_buffer_maxsize,
        producer_acks=-1,
        topic_allow_declare=False,
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
        # On the timer only: faust's commit_every commits inside its fetch loop, and a commit
        # that waits on a rebalance there stalled the survivor of a killed worker for good.
        broker_commit_interval=cfg.commit_interval_s,
        # aiokafka sends one produce request per broker at a time, holding one record batch per
        # partition: at faust's 16 KiB, a 500-record batch's outputs went out in about a
        # hundred requests one after the other (BENCHMARKS.md, worker). Below Kafka's default
        # limit of a record batch (message.max.bytes, 1 MiB).
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
    )
    # Before anything touches app.transport (declaring an agent does).
    _use_idempotent_producer(app)

    def topic(topic_id: str) -> Any:
        return app.topic(
            catalog.name(topic_id),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    outputs = {tid: topic(tid) for tid in catalog.specs}
    names = {tid: catalog.name(tid) for tid in catalog.specs}
    # feed|MSH-10 -> its last sighting (_TableStore); changelog-backed: survives restarts.
    seen = app.Table(
        DEDUPE_TABLE,
        default=None,
        partitions=catalog.specs[topics.RAW].partitions,
        key_type=str,
        # No type: JSON as written. faust takes any type but its scalars for a model class.
        value_type=None,
        help="Last sighting of each feed|MSH-10, for duplicate-send detection.",
    )
    selected = tuple(cfg.stages) if stages is None else stages
    fused = "parse" in selected and "deidentify" in selected
    core = Stages(
        ZoneInfo(cfg.timezone),
        DeidSettings(policy, pseudonymize, leak_check),
        _TableStore(seen),
        cfg.dedupe_window_s,
        fused,
        cfg.identified_output,
        terms,
    )
    sources = {catalog.name(tid) for tid in source_topics(selected)}

    async def emit(produced: list[Output]) -> None:
        """Send every output of a batch, then wait for all of Kafka's confirmations.

        A failed delivery raises: the worker exits (EXIT_BATCH_FAILED) with the batch's offsets
        uncommitted, and its replacement redoes the batch. The outputs
        go to the app's (idempotent) aiokafka producer as record batches, one run per topic and
        partition in output order, each key's partition picked by the partitioner the producer
        itself uses: sent one by one (faust's Topic.send, or even the producer's send), each
        record cost more CPU than making it (BENCHMARKS.md, worker). Records without a key
        (any partition) go through the producer's send.
        """
        producer = await app.maybe_start_producer()
        client = _aiokafka_producer(producer)
        partitioner = _partitioner()
        pending = []
        runs: dict[tuple[str, int], list[Output]] = {}
        partitions: dict[str, list[int]] = {}
        chosen: dict[tuple[str, bytes], int] = {}  # a message's outputs share a few keys
        for out in produced:
            topic = names[out.topic_id]
            if out.key is None:
                pending.append(await producer.send(topic, None, out.value, None, None, out.headers))
                continue
            partition = chosen.get((topic, out.key))
            if partition is None:
                if topic not in partitions:
                    partitions[topic] = list(await client.partitions_for(topic))
                every = partitions[topic]
                partition = chosen[(topic, out.key)] = partitioner(out.key, every, every)
            runs.setdefault((topic, partition), []).append(out)
        for (topic, partition), outs in runs.items():
            batch = client.create_batch()
            for out in outs:
                while (
                    batch.append(key=out.key, value=out.value, timestamp=None, headers=out.headers)
                    is None
                ):
                    # Full: send it; a record always fits an empty batch.
                    pending.append(await client.send_batch(batch, topic, partition=partition))
                    batch = client.create_batch()
            pending.append(await client.send_batch(batch, topic, partition=partition))
        for sent in pending:
            await sent

    def agent_of(stage: str) -> Callable[[Any], Awaitable[None]]:
        async def agent(stream: Any) -> None:
            # take_events acks a batch's offsets after the loop body: after delivery.
            batches = stream.take_events(cfg.batch_max_records, cfg.batch_wait_ms / 1000.0)
            async for events in batches:
                try:
                    started = time.perf_counter()
                    batch = core.process(stage, [_record(event) for event in events])
                    await emit(batch.outputs)
                    core.delivered(batch, time.monotonic(), time.perf_counter() - started)
                    # The batch's sightings (the dedupe table's changelog writes, buffered by
                    # faust) reach Kafka before its offsets are acked: a worker killed later
                    # finds them, and its replacement counts the batch's uncommitted records as
                    # redeliveries instead of re-emitting them.
                    await app.producer.flush()
                except BaseException as exc:
                    # take_events acks the batch it yielded however the loop body ends, and
                    # faust restarts a crashed agent on the records after the batch: its
                    # offsets would be committed with its outputs unconfirmed (lost). So the
                    # batch is never acked, and a worker that is not stopping exits: its
                    # replacement redoes the batch from the last committed offset.
                    _never_ack(events)
                    if isinstance(exc, asyncio.CancelledError) and app.should_stop:
                        raise
                    await _exit(
                        app,
                        EXIT_BATCH_FAILED,
                        f"worker: a batch of {len(events)} records of stage {stage} failed "
                        f"({type(exc).__name__}); exiting without committing it, for a restart "
                        "that redoes it",
                    )

        return agent

    @app.task  # type: ignore[untyped-decorator]
    async def quiet_value_logs() -> None:
        # faust logs every sent key and value at DEBUG (PHI in logs, and costly even when the
        # record is dropped later): never below INFO for these loggers, whatever --loglevel.
        for name in _VALUE_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(max(logging.INFO, logger.getEffectiveLevel()))

    sources_of = {"parse": topics.RAW, "deidentify": topics.EVENTS}
    for stage in selected:
        if fused and stage == "deidentify":
            continue  # done by the parse agent
        app.agent(outputs[sources_of[stage]], name=stage)(agent_of(stage))

    def look(
        now: float, stall_timeout_s: float, commit_timeout_s: float
    ) -> tuple[bool, list[Any], list[Any]]:
        """(busy, stalled partitions, partitions whose commit stalled) of the source
        partitions, (topic, partition) each; busy: no partitions, or a rebalance or table
        recovery going on (then no partition is looked at, and their clocks start again)."""
        consumer = app.consumer
        assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        if not assigned or _busy(app):
            core.progress.paused(now)
            return True, [], []
        found = _committed_offsets(consumer)
        committed = {(tp.topic, tp.partition): found.get(tp) for tp in assigned}
        highwaters = {(tp.topic, tp.partition): consumer.highwater(tp) for tp in assigned}
        return (
            False,
            core.progress.stalled(highwaters, committed, now, stall_timeout_s),
            core.progress.commit_stalled(committed, now, commit_timeout_s),
        )

    async def ready() -> bool:
        """Source partitions assigned, no rebalance or table recovery going on, none stalled,
        no processed records waiting too long for their offset commit."""
        busy, stalled, commit_stalled = look(
            time.monotonic(), cfg.stall_timeout_s, cfg.commit_timeout_s
        )
        return not (busy or stalled or commit_stalled)

    if cfg.watchdog_s is not None:
        watchdog = Watchdog(cfg.watchdog_s)
        limit = cfg.watchdog_s

        @app.task  # type: ignore[untyped-decorator]
        async def watch() -> None:
            while True:
                await asyncio.sleep(min(5.0, limit / 4))
                now = time.monotonic()
                busy, stalled, commit_stalled = look(now, limit, limit)
                reason = watchdog.check(
                    now,
                    busy,
                    _busy_position(app),
                    [f"{topic}[{partition}]" for topic, partition in stalled],
                    [f"{topic}[{partition}]" for topic, partition in commit_stalled],
                )
                if reason is not None:
                    await _exit(
                        app,
                        EXIT_STUCK,
                        f"worker: stuck, exiting for a restart: {reason}; "
                        + "; ".join(describe(tp) for tp in stalled or commit_stalled),
                    )

        def describe(tp: tuple[str, int]) -> str:
            """Where a stuck partition is, for the report on faust (offsets only)."""
            consumer = app.consumer
            at = next((t for t in consumer.assignment() if (t.topic, t.partition) == tp), None)
            if at is None:
                return f"{tp[0]}[{tp[1]}]: no longer assigned"
            return (
                f"{tp[0]}[{tp[1]}]: high {consumer.highwater(at)}, next "
                f"{core.progress.next_offset(tp)}, committed "
                f"{_committed_offsets(consumer).get(at)}, fetch {_fetch_state(consumer, at)}"
            )

    if cfg.metrics_port is not None and serve_health is not None:
        serve, host, port = serve_health, cfg.metrics_host, cfg.metrics_port

        @app.task  # type: ignore[untyped-decorator]
        async def health() -> None:
            await serve(host, port, ready)

    return app


def _broker_settings(auth: BrokerAuth) -> dict[str, Any]:
    """faust's settings for `auth`: its consumer, producer and topic admin all take them."""
    import faust

    settings: dict[str, Any] = {}
    if auth.client_id is not None:
        settings["broker_client_id"] = auth.client_id
    if auth.sasl_mechanism is not None:
        # With a TLS context faust speaks SASL_SSL, without one SASL_PLAINTEXT.
        settings["broker_credentials"] = faust.SASLCredentials(
            username=auth.username,
            password=auth.password,
            ssl_context=auth.ssl_context,
            mechanism=auth.sasl_mechanism,
        )
    elif auth.ssl_context is not None:
        settings["broker_credentials"] = faust.SSLCredentials(auth.ssl_context)
    return settings


def run(app: Any, loglevel: str = "warning", logging_config: dict[str, Any] | None = None) -> None:
    """Run the worker until SIGINT/SIGTERM; faust handles the signals and a clean stop.
    ``logging_config`` (a logging.config.dictConfig dict) replaces faust's colored log lines
    (the composition root's `log.format`)."""
    import faust

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, logging_config=logging_config)
    _without_spinner(worker)
    settle_gc()
    worker.execute_from_commandline()


def _record(event: Any) -> Record:
    message = event.message
    return Record(
        event.key,
        event.value,
        message.topic,
        message.partition,
        message.offset,
        replay=_is_replay(event.headers),
        origin=event,
    )


def _is_replay(headers: Any) -> bool:
    """Whether a record's headers (faust gives a mapping or (name, value) pairs) mark a replay."""
    if not headers:
        return False
    names = headers.keys() if isinstance(headers, Mapping) else (name for name, _ in headers)
    return any(
        (name.decode() if isinstance(name, bytes) else name) == REPLAY_HEADER for name in names
    )


# How long an exiting worker waits for the broker to take its leave of the consumer group.
LEAVE_GROUP_TIMEOUT_S = 5.0


async def _exit(app: Any, code: int, message: str) -> None:
    """Log `message`, leave the consumer group, and end the process at once with `code`, as a
    kill -9 would: faust's clean stop could hang (faust #324) or commit, and nothing here needs
    it (only offsets of confirmed outputs were ever acked).

    Leaving (a LeaveGroup request; it commits nothing) spares the restarted worker a second
    rebalance: a member that just vanishes stays in the group for the session timeout, and its
    replacement is assigned the partitions once when it joins and again when the dead member
    expires. A leave that fails or takes longer than LEAVE_GROUP_TIMEOUT_S is given up."""
    log.critical(message)
    try:
        await asyncio.wait_for(_leave_group(app), LEAVE_GROUP_TIMEOUT_S)
    except Exception as exc:  # exiting anyway: the member expires after the session timeout
        log.warning("worker: leaving the consumer group failed (%s)", type(exc).__name__)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(code)


class _TableStore:
    """The dedupe store on the faust table (changelog-backed: it survives restarts).

    A value is a list of sightings, oldest first, each [received µs, content digest, raw
    partition, raw offset] (JSON); a bare int is one sighting remembered before digests were
    kept, taken as the same content.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def seen(self, key: str) -> list[Sighting]:
        found = self.table.get(key)
        feed = key.split("|", 1)[0]
        if found is None:
            return []
        if isinstance(found, int):
            return [Sighting(key, feed, found, None)]
        return [
            Sighting(key, feed, int(received_us), digest, (int(partition), int(offset)))
            for received_us, digest, partition, offset in found
        ]

    def remember(self, sighting: Sighting, source: Record) -> None:
        kept = [
            [s.received_us, s.digest, *s.source]
            for s in self.seen(sighting.key)
            if s.source is not None
        ]
        new = [sighting.received_us, sighting.digest, source.partition, source.offset]
        # The table writes its changelog to the partition of the current event: the source's.
        _set_current_event(source.origin)
        self.table[sighting.key] = [*kept, new][-SIGHTINGS_KEPT:]


# -- faust's private parts ----------------------------------------------------------------------
# Everything here relies on faust internals that its documentation does not promise. Each is
# checked against the installed faust by tests/test_faust_private.py; a faust upgrade that
# changes one fails that test, not a running worker.

# The loggers that write every sent record's key and value at DEBUG (faust's and aiokafka's
# module names), with the text of the log call that does it.
_VALUE_LOGS = {
    "faust.topics": '"send: topic=%r k=%r v=%r',
    "faust.transport.drivers.aiokafka": '"send: topic=%r k=%r v=%r',
    "aiokafka.producer.producer": '"Sending (key=%s value=%s) to %s"',
}
_VALUE_LOGGERS = tuple(_VALUE_LOGS)


def _without_spinner(worker: Any) -> None:
    """Drop the terminal spinner faust's Worker always makes (Worker.spinner).

    With a spinner and a log level of WARN or above, the worker puts the root logger at DEBUG
    and adds a handler that turns the spinner on every record (Worker.on_setup_root_logger):
    every debug call of faust, mode and aiokafka then builds a LogRecord that only the spinner
    sees, after startup too (aiokafka's producer alone logs each record it sends: about 30
    records per message in the fused worker; BENCHMARKS.md, worker). Without it the root
    logger stays at the worker's log level."""
    worker.spinner = None


def _set_current_event(event: Any) -> None:
    """Make `event` faust's current event: a table picks the changelog partition of a write
    from it (faust.streams.current_event()), and take_events leaves the batch's last event."""
    import weakref

    from faust.streams import _current_event

    _current_event.set(weakref.ref(event))


def _committed_offsets(consumer: Any) -> Mapping[Any, int | None]:
    """The offsets faust last committed (or found committed at assignment) per TP: the next
    offset to process. faust keeps them in Consumer._committed_offset, a defaultdict(None)."""
    committed: Mapping[Any, int | None] = consumer._committed_offset
    return committed


def _fetch_state(consumer: Any, tp: Any) -> str:
    """Whether faust's consumer fetches `tp` (its Consumer._active_partitions, _paused_partitions
    and _buffered_partitions): active, paused, buffer full (off the fetch until its stream
    buffer drains) or off."""
    if tp in consumer._paused_partitions:
        return "paused"
    if tp in consumer._buffered_partitions:
        return "buffer full"
    return "active" if tp in consumer._get_active_partitions() else "off"


def _busy_position(app: Any) -> tuple[int, int]:
    """What moves while a rebalance or table recovery makes progress: faust's count of
    rebalances (App.rebalancing_count) and how far its recovery read the active changelog
    partitions (Recovery.active_offsets, the last offset read per partition, None unread)."""
    offsets = app.tables.recovery.active_offsets
    return app.rebalancing_count, sum(offset or 0 for offset in offsets.values())


def _never_ack(events: Sequence[Any]) -> None:
    """Make faust's acks of `events` no-ops, so their offsets are never committed: a message
    marked acked (faust's Message.acked) is skipped by Message.ack and Consumer.ack, and
    dropped from the messages a stopping consumer waits for."""
    for event in events:
        event.message.acked = True


async def _leave_group(app: Any) -> None:
    """Send the consumer group a LeaveGroup for the worker's consumer, without the revoke
    callbacks or commits of a clean stop: aiokafka's GroupCoordinator._maybe_leave_group (a
    minimal, unretried attempt; nothing if not in a generation), on the thread faust runs its
    AIOKafkaConsumer in (Consumer._thread, a mode ServiceThread: call_thread)."""
    thread = app.consumer._thread
    coordinator = thread._ensure_consumer()._coordinator
    await thread.call_thread(coordinator._maybe_leave_group)


def _busy(app: Any) -> bool:
    """A rebalance or a table recovery is going on (attributes of faust's AppT, set by its
    consumer and its table recovery service, not in its docs)."""
    return bool(app.rebalancing or app.in_recovery)


@cache
def _partitioner() -> Any:
    """What faust's producer partitions keyed records with: faust's aiokafka driver gives the
    AIOKafkaProducer aiokafka's DefaultPartitioner when producer_partitioner is not set (as in
    the worker)."""
    from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

    return DefaultPartitioner()


def _aiokafka_producer(producer: Any) -> Any:
    """The AIOKafkaProducer of faust's started producer (its Producer._producer), for aiokafka's
    batch API (create_batch, send_batch), which faust's Producer does not pass on."""
    return producer._producer


def _use_idempotent_producer(app: Any) -> None:
    """Give the app an aiokafka transport whose producer is idempotent and whose consumer
    commits only offsets it knows to follow the committed one (_safe_consumer).

    faust passes enable_idempotence to aiokafka only with processing_guarantee=exactly_once
    (whose transactions are unreliable, faust #136); at-least-once gets no setting for it. Its
    Producer merges _settings_extra() into the AIOKafkaProducer arguments, so a subclass adds
    it there (acks=-1 is set by producer_acks, as idempotence requires).
    """
    app.transport = _idempotent_transport()(app.conf.broker_consumer, app)


@cache
def _idempotent_transport() -> type[Any]:
    from faust.transport.drivers import aiokafka

    class IdempotentProducer(aiokafka.Producer):
        def _settings_extra(self) -> Mapping[str, Any]:
            return {**super()._settings_extra(), "enable_idempotence": True}

    class IdempotentTransport(aiokafka.Transport):
        Producer = IdempotentProducer
        Consumer = _safe_consumer()

    return IdempotentTransport


@cache
def _safe_consumer() -> type[Any]:
    """faust's aiokafka Consumer, without the ways it commits past records never processed.

    faust commits, per partition, the run of consecutive acked offsets that starts at the
    committed one (Consumer._new_offset over Consumer._acked and _committed_offset). Four
    holes, each able to commit past records under a rebalance (research records were seen
    missing once the lag was 0):

    - Between a revoke, which forgets the partition's committed offset, and the seek after the
      table recovery, which reads it again (Consumer.perform_seek), faust takes any acked run
      as committable: an ack in that window (an event fetched before the rebalance, which the
      stream skips and acks as stale, or processes; faust #236, #221) moved the group's offset
      past the records cleared from the stream buffers at the revoke, never processed. Here a
      partition's acks in that window commit only as a run from the committed offset faust
      knew at the revoke (the batches it waits for then), or wait for the seek.
    - Its check that the run starts at the committed offset lets one missing offset through
      (min(acked) - committed > 1, faust #606). Here the run must start at or below it.
    - Records fetched before a rebalance are acked after it: the ones the stream skips as
      stale (Stream.__aiter__ acks what it skips), and the ones still being processed. Either
      ack could let a commit pass a record before it is processed again. Here an ack of a
      message from an earlier rebalance generation (ConsumerMessage.generation_id) is ignored;
      the record comes again after the seek. So is the ack of a record of the current
      generation that the stream skipped because the flow was stopped (during a table recovery,
      before the resume that clears the buffers): the seek after that clear fetches it again.
    - Offsets the fetcher skipped are counted as acked (Consumer._add_gap: meant for compacted
      topics and transaction markers). The worker's sources have neither (hl7.raw, hl7.events:
      not compacted, no transactions), so a skip is records dropped by a race (faust #216):
      never acked here, the commit waits and the watchdog restarts a worker that stays stuck.

    The cause of those skips, seen in the worker's logs (a fresh worker restarted after a
    kill -9, branch faust-hang-2): faust's flow control clears the stream buffers whenever it
    resumes (FlowControlEvent.resume; at the end of a table recovery, after the seek), and the
    recovery had it running already (for the changelog records). The stream partitions are
    resumed before the seek, so the fetch loop delivers their records into the buffers, moves
    its read offsets past them, and the clear then drops the ones not yet taken: a hole at the
    committed offset (offsets 8-17 cleared, 0-7 and 18-183 processed); the seek does not bring
    them back (none at all for a partition never committed; otherwise the fetch still under way
    moves the read offset past the records fetched again, which are dropped). The commit waited
    at the hole for good, and a restarted worker met the same race. Here, after a clear, the
    stream partitions seeked since their assignment are seeked back to their committed offsets
    before the next fetch (from the fetch loop, so no fetch under way moves the read offset
    after it), and the stream records of the fetch during which the clear came are not
    delivered (they come again). Records processed twice are re-emitted; sinks upsert.
    Resuming only after the seek was tried: faust's fetch loop also seeks when a rebalance
    stops the flow under it, and partitions resumed later were seen not to fetch at all.

    And one way it fetches stream records during a table recovery, when only changelog records
    should flow: a partition taken off the fetch because its stream buffer was full goes back
    on when the buffer drains (Consumer.on_buffer_drop), even if it was paused for the
    recovery meanwhile (the buffers are cleared at the revoke, so the first read of the empty
    buffer does it). Here a paused partition stays paused; the end of the recovery resumes it
    (Consumer.resume_partitions). A full stream buffer during recovery is what faust #74's
    recovery hang needs.
    """
    from faust.transport.drivers import aiokafka

    class SafeConsumer(aiokafka.Consumer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._seeked: set[Any] = set()  # partitions seeked since they were assigned
            self._at_revoke: dict[Any, int | None] = {}  # committed offsets faust forgot
            self._waits: dict[Any, int] = {}  # partition -> committed offset a commit waits at
            self._clears = 0  # how often faust cleared the stream buffers (FlowControlEvent.clear)
            self._refetched = 0  # the clears that the stream partitions were seeked back after

        async def on_partitions_revoked(self, revoked: Any) -> None:
            self._seeked.difference_update(revoked)
            # Kept for the batches that finish during the revoke (faust waits for its streams
            # to empty, then commits): a run of their acks from this offset may commit.
            self._at_revoke.update({tp: self._committed_offset[tp] for tp in revoked})
            await super().on_partitions_revoked(revoked)

        async def perform_seek(self) -> None:
            assignment = set(self.assignment())
            await super().perform_seek()
            self._seeked.update(assignment)

        async def getmany(self, timeout: float) -> Any:
            # faust clears the stream buffers when its flow control resumes (the last time at
            # the end of a table recovery, after the seek) while its fetch loop may be
            # delivering records: the records cleared are gone, and the fetch loop's read
            # offset is already past them. So after a clear the stream partitions are seeked
            # back to their committed offsets before the next fetch, and the rest of the stream
            # records of the fetch that delivered into the cleared buffers are left to it
            # (changelog records still go to the table recovery).
            _watch_clears(self)
            if self._refetched != self._clears:
                await self._refetch_after_clear()
            clears = self._clears
            async for tp, message in super().getmany(timeout):
                if self._clears != clears and not self._is_changelog_tp(tp):
                    continue
                yield tp, message

        async def _refetch_after_clear(self) -> None:
            """Seek the stream partitions seeked since their assignment back to their committed
            offsets (0: never committed; the reset policy then picks the first record). The
            others are seeked at the end of their table recovery, which clears the buffers
            again, and come here after it."""
            clears = self._clears
            tps = {
                tp for tp in self._seeked & set(self.assignment()) if not self._is_changelog_tp(tp)
            }
            if not tps:
                return
            # faust's seek_wait also moves its read offsets (below which it drops records).
            await self.seek_wait({tp: self._committed_offset[tp] or 0 for tp in tps})
            self._refetched = clears

        async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
            return None

        def ack(self, message: Any) -> bool:
            generation = message.generation_id
            stale = generation is not None and generation != self.app.consumer_generation_id
            # A message the stream never took up (ConsumerMessage.tracked is set when it does)
            # acked while the flow is stopped is one it skipped for that: not processed.
            skipped = not message.tracked and not self.app.flow_control.is_active()
            if stale or skipped:
                message.acked = True  # done with, never committed: fetched again after the seek
                return False
            acked: bool = super().ack(message)
            return acked

        def on_buffer_drop(self, tp: Any) -> None:
            if tp in self._paused_partitions:
                self._buffered_partitions.discard(tp)  # resume_partitions puts it back
                return
            super().on_buffer_drop(tp)

        def _new_offset(self, tp: Any) -> int | None:
            acked, committed = self._acked[tp], self._committed_offset[tp]
            if tp not in self._seeked:
                committed = committed if committed is not None else self._at_revoke.get(tp)
                if committed is None:
                    return None  # not known until the seek reads it again
            if acked and committed is not None and min(acked) > committed:
                # The committed record itself is not acked yet (said once per offset).
                if self._waits.get(tp) != committed:
                    self._waits[tp] = committed
                    log.info(
                        "worker: the commit of %s[%d] waits for offset %d (acked from %d)",
                        tp.topic,
                        tp.partition,
                        committed,
                        min(acked),
                    )
                return None
            new: int | None = super()._new_offset(tp)
            return new

    def _watch_clears(consumer: Any) -> None:
        """Count the clears of the app's stream buffers on `consumer` (FlowControlEvent.clear,
        called by its resume and by a revoke)."""
        flow_control = consumer.app.flow_control
        if getattr(flow_control, "_counted_by", None) is consumer:
            return
        clear = type(flow_control).clear.__get__(flow_control)

        def counted_clear() -> None:
            consumer._clears += 1
            clear()

        flow_control.clear = counted_clear
        flow_control._counted_by = consumer

    return SafeConsumer
