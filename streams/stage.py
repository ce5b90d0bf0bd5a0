"""The worker's stage logic as a plain object over batches of plain records.

A batch of consumed records goes in; what to emit, which sends were duplicates and what to
count come out. streams/runtime.py (the faust adapter) only moves records: it hands each
batch to :meth:`Stages.process`, sends :attr:`Batch.outputs` in order, waits until Kafka has
confirmed every one, then calls :meth:`Stages.delivered` and only after that acks the batch's
offsets. So everything decided here is tested without Kafka or faust (tests/test_stage.py).

Duplicate sends (same feed, MSH-10 and content within the window) are checked against a
:class:`DedupeStore`; a sighting is remembered only in :meth:`Stages.delivered`, after the
outputs are confirmed: a crash in between re-emits the message (same event ids, sinks upsert)
rather than dropping it as a duplicate of itself. A raw record seen again after its sighting
was remembered (a crash or rebalance before its offset was committed) is a redelivery: its
outputs are on Kafka already, so it is counted apart from sender resends and not re-emitted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Protocol

from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from hl7bus.schemas import codec, telemetry, topics
from hl7bus.streams.steps import (
    DEID_STAGE,
    DeidSettings,
    Output,
    Sighting,
    Verdict,
    dedupe_check,
    deidentify_step,
    parse_step,
)
from hl7bus.streams.terminology import Terminology

RECORDS = PromCounter(
    "hl7bus_stream_records_total", "Records out of a stage, by outcome.", ["stage", "outcome"]
)
RECORDS_IN = PromCounter("hl7bus_stream_in_records_total", "Records into a stage.", ["stage"])
ERRORS = PromCounter(
    "hl7bus_stream_errors_total",
    "Records a stage sent to the DLQ, by error code.",
    ["stage", "code"],
)
DUPLICATES = PromCounter(
    "hl7bus_stream_duplicates_total",
    "Duplicate sends (same feed, MSH-10 and content within the window) not re-emitted.",
    ["feed"],
)
REDELIVERIES = PromCounter(
    "hl7bus_stream_redeliveries_total",
    "Raw records seen again after a crash or rebalance, their outputs already confirmed: "
    "not re-emitted.",
    ["feed"],
)
REUSED = PromCounter(
    "hl7bus_stream_control_id_reused_total",
    "Messages with a control id (MSH-10) seen within the window with other content: processed.",
    ["feed"],
)
LATENCY = Histogram(
    "hl7bus_stream_latency_seconds",
    "Time from a record's arrival at a stage to the delivery of all its outputs.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

log = logging.getLogger(__name__)

# Sightings a store keeps per feed|MSH-10: a control id reused more often than this within the
# window may take a resend of its oldest content for new content (processed again, upserted).
SIGHTINGS_KEPT = 8

VERDICT_COUNTERS = {
    Verdict.RESENT: DUPLICATES,
    Verdict.REDELIVERED: REDELIVERIES,
    Verdict.REUSED: REUSED,
}

PARSE = "parse"
DEIDENTIFY = "deidentify"

#: The shared vocabulary (schemas/telemetry.py) of each stage, component ``worker``; its stage
#: label is the hl7bus.stage header of the stage's DLQ records.
VOCABULARY = {
    PARSE: telemetry.StageMetrics("worker", "parsing"),
    DEIDENTIFY: telemetry.StageMetrics("worker", DEID_STAGE),
}


@dataclass(frozen=True)
class Record:
    """One consumed record as the stages see it."""

    key: bytes | None
    value: bytes
    topic: str
    partition: int
    offset: int
    # Carries the hl7bus.replay header: an operator's replay or resubmit, never a duplicate.
    replay: bool = False
    # The adapter's own handle on the record (faust's event), handed back to the store when a
    # sighting is remembered; never read here.
    origin: Any = field(default=None, compare=False, repr=False)


class DedupeStore(Protocol):
    """The last sightings (resends excluded) of each feed|MSH-10, oldest first, kept across
    restarts; a store may forget all but the last few (SIGHTINGS_KEPT).

    The runtime's store is a faust table backed by a changelog topic: ``remember`` gets the
    record the sighting came from, because the table writes its changelog to that record's
    partition (the partition it restores on the worker that gets the record's partition).
    """

    def seen(self, key: str) -> Sequence[Sighting]: ...

    def remember(self, sighting: Sighting, source: Record) -> None: ...


@dataclass
class Counts:
    """What a batch adds to the stream metrics once its outputs are delivered."""

    records_in: Counter[str] = field(default_factory=Counter)  # stage
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, ok|dlq)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, code)
    verdicts: Counter[tuple[Verdict, str]] = field(default_factory=Counter)  # (verdict, feed)


@dataclass
class Batch:
    """One processed batch: the outputs to send, in order, and what follows their delivery."""

    stage: str
    records: list[Record]
    outputs: list[Output]
    counts: Counts
    # Sightings to remember once the outputs are delivered, with their source record.
    sightings: list[tuple[Record, Sighting]] = field(default_factory=list)


class Progress:
    """Where each source partition got to, for /readyz: stalled processing, stalled commits.

    A partition is stalled when records are waiting in it (high watermark beyond the next
    offset to process) and none of them was processed for the timeout: a partition that stopped
    fetching after a rebalance (faust #629) or an agent that died (#523). An idle partition
    is never stalled; its clock starts when records begin to wait. Partitions are any hashable
    key; the runtime uses (topic, partition).
    """

    def __init__(self) -> None:
        self._next: dict[Any, int] = {}
        self._since: dict[Any, float] = {}
        self._commit: dict[Any, tuple[int | None, float]] = {}  # last committed, seen since

    def processed(self, tp: Any, offset: int, now: float) -> None:
        self._next[tp] = offset + 1
        self._since[tp] = now

    def next_offset(self, tp: Any) -> int | None:
        """The offset after the last one processed in `tp` (None: nothing processed)."""
        return self._next.get(tp)

    def stalled(
        self,
        highwaters: Mapping[Any, int | None],
        committed: Mapping[Any, int | None],
        now: float,
        timeout: float,
    ) -> list[Any]:
        found = []
        for tp, high in highwaters.items():
            # The committed offset counts too: a partition back from another worker may have
            # been processed past where this worker left it.
            start = max(self._next.get(tp) or 0, committed.get(tp) or 0)
            if high is None or high <= start:
                self._since[tp] = now
                continue
            if now - self._since.setdefault(tp, now) > timeout:
                found.append(tp)
        return found

    def paused(self, now: float) -> None:
        """A rebalance or table recovery is going on: no partition can move or commit, so every
        clock starts again when it ends (a long recovery does not make a stall)."""
        for tp in self._since:
            self._since[tp] = now
        self._commit = {tp: (offset, now) for tp, (offset, _) in self._commit.items()}

    def commit_stalled(
        self, committed: Mapping[Any, int | None], now: float, timeout: float
    ) -> list[Any]:
        """Partitions whose processed records have waited for an offset commit for longer
        than the timeout: the committed offset trails what was processed and has not moved.
        Their outputs are on Kafka, but a crash now would redo all of them."""
        found = []
        for tp, offset in committed.items():
            last, since = self._commit.setdefault(tp, (offset, now))
            if offset != last or (self._next.get(tp) or 0) <= (offset or 0):
                self._commit[tp] = (offset, now)  # moved, or nothing waits for a commit
                continue
            if now - since > timeout:
                found.append(tp)
        return found


class Stages:
    """The parse and deidentify stages of one worker over batches of records.

    ``parse`` takes hl7.raw records: duplicate sends are counted and dropped, the rest parsed
    into hl7.events outputs (or a DLQ record), and, when the worker also runs ``deidentify``
    (``fused``), each event's research form is made beside it from the event in memory.
    ``deidentify`` on its own takes hl7.events records to their research form (or the DLQ).
    ``identified_output=False`` (fused only): the parse stage writes no hl7.events records,
    only the research forms and the DLQ.
    """

    def __init__(
        self,
        zone: tzinfo,
        deid: DeidSettings,
        store: DedupeStore,
        dedupe_window_s: int,
        fused: bool,
        identified_output: bool = True,
        terms: Terminology | None = None,
    ) -> None:
        if not identified_output and not fused:
            raise ValueError("identified_output=False needs both stages (fused)")
        self.zone = zone
        self.deid = deid
        self.store = store
        self.window_us = dedupe_window_s * 1_000_000
        self.fused = fused
        self.identified_output = identified_output
        self.terms = terms  # None: the packaged code maps
        self.progress = Progress()

    def process(self, stage: str, records: Sequence[Record]) -> Batch:
        if stage in VOCABULARY:  # until delivered(): the batch is in flight
            VOCABULARY[stage].in_flight.inc(len(records))
        if stage == PARSE:
            return self._parse(records)
        if stage == DEIDENTIFY:
            return self._deidentify(records)
        raise ValueError(f"unknown stage {stage!r}; the stages are {PARSE}, {DEIDENTIFY}")

    def delivered(self, batch: Batch, now: float, elapsed_s: float) -> None:
        """Every output of `batch` is confirmed by Kafka: remember its sightings, note the
        progress of its partitions (`now`: a monotonic clock) and count it (`elapsed_s`: from
        its arrival to the last confirmation). The runtime acks the offsets after this."""
        for source, sighting in batch.sightings:
            self.store.remember(sighting, source)
        for record in batch.records:
            self.progress.processed((record.topic, record.partition), record.offset, now)
        count(batch.counts)
        LATENCY.labels(batch.stage).observe(elapsed_s)
        vocabulary = VOCABULARY[batch.stage]
        vocabulary.in_flight.dec(len(batch.records))
        vocabulary.latency.observe(elapsed_s)

    def _parse(self, records: Sequence[Record]) -> Batch:
        counts = Counts()
        counts.records_in[PARSE] = len(records)
        outputs: list[Output] = []
        sightings: list[tuple[Record, Sighting]] = []
        in_batch: dict[str, list[Sighting]] = {}  # sightings of this batch, not yet stored

        def seen(key: str) -> Sequence[Sighting]:
            return [*self.store.seen(key), *in_batch.get(key, ())]

        deid = self.deid if self.fused else None
        for record in records:
            if record.replay:
                # A replay re-runs a message on purpose (after a map or policy change): it is
                # processed as new and not remembered, so it neither counts as a resend nor
                # turns the sender's next real resend into new content.
                outputs += parse_step(
                    record.key,
                    record.value,
                    self.zone,
                    deid,
                    self.identified_output,
                    terms=self.terms,
                )
                continue
            try:
                envelope: dict[str, Any] | None = codec.decode(record.value)[1]
            except codec.CodecError:
                envelope = None  # the parse step sends it to the DLQ
            source = (record.partition, record.offset)
            sighting, verdict = dedupe_check(envelope, source, seen, self.window_us)
            if sighting is not None and verdict is not Verdict.NEW:
                counts.verdicts[verdict, sighting.feed] += 1
            if verdict in (Verdict.RESENT, Verdict.REDELIVERED):
                continue
            outputs += parse_step(
                record.key,
                record.value,
                self.zone,
                deid,
                self.identified_output,
                envelope,
                self.terms,
            )
            if sighting is not None:
                in_batch.setdefault(sighting.key, []).append(sighting)
                sightings.append((record, sighting))
        _count_outputs(PARSE, outputs, counts)
        if self.fused:
            # One research record or de-identification DLQ record per event made.
            made = counts.outcomes[DEIDENTIFY, "ok"] + counts.outcomes[DEIDENTIFY, "dlq"]
            counts.records_in[DEIDENTIFY] = made
        return Batch(PARSE, list(records), outputs, counts, sightings)

    def _deidentify(self, records: Sequence[Record]) -> Batch:
        counts = Counts()
        counts.records_in[DEIDENTIFY] = len(records)
        outputs: list[Output] = []
        deid = self.deid
        for record in records:
            outputs += deidentify_step(
                record.value, deid.policy, deid.pseudonymize, deid.leak_check
            )
        _count_outputs(DEIDENTIFY, outputs, counts)
        return Batch(DEIDENTIFY, list(records), outputs, counts)


def count(counts: Counts) -> None:
    """Add a delivered batch's counts to the Prometheus metrics (once per batch and label)."""
    for stage, n in counts.records_in.items():
        RECORDS_IN.labels(stage).inc(n)
        VOCABULARY[stage].received.inc(n)
    for (stage, outcome), n in counts.outcomes.items():
        RECORDS.labels(stage, outcome).inc(n)
        if outcome == "ok":
            VOCABULARY[stage].sent.inc(n)
    for (stage, code), n in counts.errors.items():
        ERRORS.labels(stage, code).inc(n)
        vocabulary = VOCABULARY[stage]
        vocabulary.dlq(code, n)  # a stage's errors are the records it sent to the DLQ
        log.warning(
            "worker: %d record(s) went to the DLQ (stage %s, reason %s)", n, vocabulary.stage, code
        )
    for (verdict, feed), n in counts.verdicts.items():
        VERDICT_COUNTERS[verdict].labels(feed).inc(n)


def _count_outputs(stage: str, outputs: Sequence[Output], counts: Counts) -> None:
    ok: Counter[str] = Counter()  # stage -> outputs to topics other than the DLQ
    for out in outputs:
        # The fused parse stage also makes de-identification's outputs: count them there.
        if out.topic_id == topics.DLQ:
            headers = dict(out.headers)
            by = DEIDENTIFY if headers.get("hl7bus.stage") == _DEID_STAGE else stage
            counts.outcomes[by, "dlq"] += 1
            counts.errors[by, headers.get("hl7bus.reason", b"?").decode()] += 1
        else:
            ok[DEIDENTIFY if out.topic_id.startswith(_RESEARCH) else stage] += 1
    for by, n in ok.items():
        counts.outcomes[by, "ok"] += n


_DEID_STAGE = DEID_STAGE.encode()
_RESEARCH = topics.research("")  # the catalog ids of the research topics start with it
