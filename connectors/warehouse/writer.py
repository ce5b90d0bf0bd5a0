"""One batch of research records -> one warehouse transaction.

Decode, map (omop.py), resolve every source key to its id (keymap.py), fold the row changes
(fold.py) and write each table's rows in bulk (those whose id is new in this transaction
appended, the others with one merge); merges and cancellations run as
statements in event order between bulk writes; then the observation periods of every person
the batch touched, and the detail ends of every visit, are recomputed. The codes that mapped to
concept 0 are counted per feed and added to hl7bus_unmapped, and each person's feeds noted
(feeds.py), in the same transaction.

Redelivery changes nothing: every row's id comes from its source key, and writing a row
overwrites it. A record that cannot be written (undecodable, unmappable, a required column
missing, a constraint the database refuses) is reported for the DLQ and the others are
written: a refused batch is split in halves until the one record is found.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from hl7bus.connectors.warehouse import feeds, fold, keymap, statements
from hl7bus.connectors.warehouse.changes import (
    PERSON,
    CancelTransfer,
    CancelVisit,
    Change,
    Delete,
    EventChanges,
    MappingError,
    MergePersons,
    Ref,
    Row,
    id_column,
)
from hl7bus.connectors.warehouse.concepts import ConceptLookup, Mapped
from hl7bus.connectors.warehouse.engine import Engine, WarehouseDataError, transaction
from hl7bus.connectors.warehouse.omop import DEFAULT_STATUSES, ResultStatuses, map_event
from hl7bus.connectors.warehouse.vocabulary import UnmappedCounter, record_unmapped
from hl7bus.schemas import codec

WRITTEN, SKIPPED, DLQ = "written", "skipped", "dlq"


@dataclass(frozen=True)
class Incoming:
    """One consumed record: its value, and its topic (the registry mode decodes by it)."""

    value: bytes
    topic: str | None = None


_T = TypeVar("_T")


@dataclass
class Outcome:
    """What became of each record of a batch, and the rows written per (table, op)."""

    event_types: list[str | None]
    results: list[str]
    reasons: list[str | None]
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Each event's received_at (Unix seconds), as its research record carries it: the time the
    # bus received the message, or that time de-identified (shifted, truncated) by the policy.
    received_at: list[float | None] = field(default_factory=list)

    @classmethod
    def empty(cls, size: int) -> Outcome:
        return cls([None] * size, [WRITTEN] * size, [None] * size, received_at=[None] * size)

    def mark(self, index: int, result: str, reason: str) -> None:
        self.results[index], self.reasons[index] = result, reason

    @property
    def dlq(self) -> list[int]:
        return [i for i, result in enumerate(self.results) if result == DLQ]

    def refused(self, consumed: Sequence[_T]) -> list[tuple[_T, str]]:
        """The batch's records (`consumed`, in batch order) that go to the DLQ, each with its
        reason code."""
        return [(consumed[i], self.reasons[i] or "unknown") for i in self.dlq]


class _FeedConcepts:
    """The lookup as one event's mapping sees it, noting every code that gets concept 0 with
    the event's feed (the lookup itself does not know the feed). Only noted here: the codes are
    counted for the events the batch writes (_record_unmapped)."""

    def __init__(self, concepts: ConceptLookup, feed: str) -> None:
        self._concepts = concepts
        self._feed = feed
        self.unmapped: list[tuple[str, str | None, str | None]] = []

    def map(self, system: str | None, code: str | None) -> Mapped:
        found = self._concepts.map(system, code)
        if found.concept_id == 0:
            self.unmapped.append((self._feed, system, code))
        return found


@dataclass
class _Applied:
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    dropped: dict[int, str] = field(default_factory=dict)
    # Ids the key map handed out in this transaction and no row has yet: rows with one are
    # appended (engine.bulk_insert), not merged, and have no stored row to read.
    fresh: set[int] = field(default_factory=set)


class BatchWriter:
    def __init__(
        self,
        engine: Engine,
        concepts: ConceptLookup,
        statuses: ResultStatuses = DEFAULT_STATUSES,
    ) -> None:
        self.engine = engine
        self.concepts = concepts
        self.statuses = statuses

    def write(self, records: Sequence[Incoming]) -> Outcome:
        """Write a batch in one transaction (more when a refused batch is split). Raises only
        when the database itself fails (not the data): then nothing of the batch is kept."""
        with _no_cyclic_gc():
            return self._write(records)

    def _write(self, records: Sequence[Incoming]) -> Outcome:
        outcome = Outcome.empty(len(records))
        mapped: list[tuple[int, EventChanges]] = []
        unmapped: dict[int, list[tuple[str, str | None, str | None]]] = {}
        feed_of: dict[int, str] = {}
        for index, record in enumerate(records):
            try:
                event_type, event = codec.decode(record.value, record.topic)
            except codec.CodecError:
                outcome.mark(index, DLQ, "undecodable")
                continue
            outcome.event_types[index] = event_type
            received = event.get("received_at")
            if isinstance(received, datetime):
                outcome.received_at[index] = received.timestamp()
            feed_of[index] = str(event.get("feed") or "")
            concepts = _FeedConcepts(self.concepts, feed_of[index])
            try:
                changes = map_event(event_type, event, concepts, self.statuses)
            except MappingError as exc:
                outcome.mark(index, DLQ, exc.code)
                continue
            if not changes.changes:
                outcome.mark(index, SKIPPED, changes.skipped or "no_change")
                continue
            mapped.append((index, changes))
            if concepts.unmapped:
                unmapped[index] = concepts.unmapped
        self._write_or_split(mapped, outcome, unmapped, feed_of)
        return outcome

    def _write_or_split(
        self,
        mapped: list[tuple[int, EventChanges]],
        outcome: Outcome,
        unmapped: dict[int, list[tuple[str, str | None, str | None]]],
        feed_of: dict[int, str],
    ) -> None:
        if not mapped:
            return
        try:
            with transaction(self.engine):
                applied = self._apply(mapped, feed_of)
                self._record_unmapped(mapped, applied, unmapped)
        except WarehouseDataError as exc:
            if len(mapped) == 1:
                outcome.mark(mapped[0][0], DLQ, exc.code)
                return
            # In order, so the halves end where the whole batch would have.
            middle = len(mapped) // 2
            self._write_or_split(mapped[:middle], outcome, unmapped, feed_of)
            self._write_or_split(mapped[middle:], outcome, unmapped, feed_of)
            return
        for index, reason in applied.dropped.items():
            outcome.mark(index, DLQ, reason)
        outcome.rows.update(applied.rows)

    def _apply(self, mapped: list[tuple[int, EventChanges]], feed_of: dict[int, str]) -> _Applied:
        engine = self.engine
        applied = _Applied()
        ids = keymap.resolve(engine, _refs(mapped), applied.fresh)
        visits: set[int] = set()
        segment: list[tuple[int, Row | Delete]] = []
        for index, event in mapped:
            for change in event.changes:
                if isinstance(change, Row | Delete):
                    segment.append((index, change))
                    continue
                self._write_segment(segment, ids, applied, visits)
                segment = []
                if index not in applied.dropped:
                    self._structural(change, ids, visits)
                    # A merge moves rows onto other ids (a death row onto the survivor's):
                    # from here on every row is merged, as before the fresh-id path existed.
                    applied.fresh.clear()
        self._write_segment(segment, ids, applied, visits)
        person_feeds = {
            (ids[event.person], feed_of[index])
            for index, event in mapped
            if event.person is not None and index not in applied.dropped
        }
        statements.recompute_visit_details(engine, visits)
        statements.recompute_observation_periods(engine, {p for p, _ in person_feeds})
        feeds.record(engine, person_feeds)
        return applied

    def _record_unmapped(
        self,
        mapped: list[tuple[int, EventChanges]],
        applied: _Applied,
        unmapped: dict[int, list[tuple[str, str | None, str | None]]],
    ) -> None:
        """Add the unmapped codes of the events written (not those sent to the DLQ)."""
        seen: Counter[tuple[str, str | None, str | None]] = Counter()
        for index, _ in mapped:
            if index in unmapped and index not in applied.dropped:
                seen.update(unmapped[index])
        if not seen:
            return
        counter = UnmappedCounter()
        for (feed, system, code), times in seen.items():
            counter.note(feed, system, code, times)
        now = datetime.now(UTC).replace(tzinfo=None)  # the column is a UTC TIMESTAMP
        engine = self.engine
        record_unmapped(engine.conn, engine.dialect, counter.drain(), now, engine.cdm_schema)

    def _structural(self, change: Change, ids: dict[Ref, int], visits: set[int]) -> None:
        if isinstance(change, MergePersons):
            retired, survivor = ids[change.retired], ids[change.survivor]
            statements.merge_persons(self.engine, retired, survivor)
            # Later events of this batch that name the retired person now mean the survivor.
            for ref, id_ in ids.items():
                if ref.kind == PERSON and id_ == retired:
                    ids[ref] = survivor
        elif isinstance(change, CancelVisit):
            statements.cancel_visit(self.engine, ids[change.visit])
        elif isinstance(change, CancelTransfer):
            visit = ids[change.visit]
            statements.cancel_transfer(
                self.engine, visit, change.cancelled_location, change.back_to
            )
            visits.add(visit)

    def _write_segment(
        self,
        segment: list[tuple[int, Row | Delete]],
        ids: dict[Ref, int],
        applied: _Applied,
        visits: set[int],
    ) -> None:
        """Fold and write a run of row changes; events whose rows cannot be completed are
        dropped (with all their changes) and the rest folded again."""
        if not segment:
            return
        fresh = applied.fresh
        while True:
            kept = [(i, change) for i, change in segment if i not in applied.dropped]
            pending = fold.fold(kept, ids)
            final = fold.finish(pending, self._stored(fold.merge_keys(pending), fresh))
            if not final.invalid:
                break
            applied.dropped.update(final.invalid)
        for table, gone in final.deletes.items():
            self.engine.delete(table, id_column(table), gone)
            applied.rows[(table, "delete")] += len(gone)
        for table, rows in final.upserts.items():
            columns = fold.COLUMNS[table]
            key = id_column(table)
            new: list[tuple[Any, ...]] = []
            old: list[tuple[Any, ...]] = []
            for r in rows:
                (new if r[key] in fresh else old).append(tuple(map(r.get, columns)))
            # The fold wrote each row once, so a new id's row is appended without a merge: the
            # same bulk path as a plain load (appender, COPY), no staging table.
            if new:
                self.engine.bulk_insert(table, columns, new)
            if old:
                self.engine.upsert(table, columns, key, old)
            applied.rows[(table, "upsert")] += len(rows)
        for _, id_ in pending:
            fresh.discard(id_)  # written (or deleted) now: a later segment merges it
        for table in ("visit_occurrence", "visit_detail"):
            visits.update(row["visit_occurrence_id"] for row in final.upserts.get(table, ()))

    def _stored(
        self, wanted: dict[str, list[int]], fresh: set[int]
    ) -> dict[fold.RowKey, dict[str, Any]]:
        stored: dict[fold.RowKey, dict[str, Any]] = {}
        for table, all_ids in wanted.items():
            table_ids = [id_ for id_ in all_ids if id_ not in fresh]  # a new id has no row
            if not table_ids:
                continue
            columns = fold.COLUMNS[table]
            key = id_column(table)
            for values in self.engine.query(
                f"SELECT {', '.join(columns)} FROM {self.engine.table(table)} "
                f"WHERE {self.engine.any_id(key)}",
                [table_ids],
            ):
                row = dict(zip(columns, values, strict=True))
                stored[(table, row[key])] = row
        return stored


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off for one batch. A batch allocates a few hundred
    thousand objects (decoded records, mapped rows) that stay alive until it ends, so the
    collector ran hundreds of times a batch, scanning them again each time: about a fifth of
    the writer's time (bench/warehouse.py). Reference counting frees them when the batch ends;
    any cycle among them is collected after it, when the collector runs as usual again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _refs(mapped: Iterable[tuple[int, EventChanges]]) -> list[Ref]:
    refs: list[Ref] = []
    for _, event in mapped:
        if event.person is not None:
            refs.append(event.person)
        for change in event.changes:
            if isinstance(change, Row):
                refs.append(change.ref)
                refs.extend(v for v in change.values.values() if isinstance(v, Ref))
            elif isinstance(change, Delete):
                refs.append(change.ref)
            elif isinstance(change, MergePersons):
                refs.extend((change.retired, change.survivor))
            else:
                refs.append(change.visit)
    return refs
