"""One batch of research records -> one append file of the lake (a plain object, no Kafka).

Decode, map (mapping.py), resolve every subject through the warehouse's key map in one round
trip, and publish the batch's rows as one append file. A record that cannot become rows
(undecodable, no time, unknown type, ...) is reported for the DLQ with its reason and the
others are written. Redelivery changes nothing once compacted: a fact's newest version wins,
and a replayed event is the same version of the same fact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from hl7bus.connectors.lake.mapping import LakeChanges, map_event
from hl7bus.connectors.lake.pending import PendingBatch
from hl7bus.connectors.lake.store import LakeStore
from hl7bus.connectors.warehouse.changes import MappingError, Ref
from hl7bus.connectors.warehouse.engine import WarehouseDataError
from hl7bus.connectors.warehouse.map_clinical import DEFAULT_STATUSES, ResultStatuses
from hl7bus.connectors.warehouse.writer import DLQ, SKIPPED, Incoming, Outcome
from hl7bus.schemas import codec

ROWS = ("meds", "row")  # the Outcome.rows key of the MEDS rows a batch appended


class KeyResolver(Protocol):
    def resolve(self, refs: Iterable[Ref], retired: Iterable[Ref] = ()) -> dict[Ref, int]: ...


class LakeWriter:
    def __init__(
        self, store: LakeStore, keys: KeyResolver, statuses: ResultStatuses = DEFAULT_STATUSES
    ) -> None:
        self.store = store
        self.keys = keys
        self.statuses = statuses

    def write(self, records: Sequence[Incoming]) -> Outcome:
        """Append a batch. Raises only when the key map's database or the lake folder fails
        (not the data): then nothing of the batch is kept and it is consumed again."""
        outcome = Outcome.empty(len(records))
        mapped: list[tuple[int, dict[str, Any], LakeChanges]] = []
        for index, record in enumerate(records):
            try:
                event_type, event = codec.decode(record.value, record.topic)
            except codec.CodecError:
                outcome.mark(index, DLQ, "undecodable")
                continue
            outcome.event_types[index] = event_type
            try:
                changes = map_event(event_type, event, self.statuses)
            except MappingError as exc:
                outcome.mark(index, DLQ, exc.code)
                continue
            if not changes.facts and changes.merged_from is None:
                outcome.mark(index, SKIPPED, changes.skipped or "no_meds_row")
                continue
            mapped.append((index, event, changes))
        ids = self._resolve(mapped, outcome)
        batch = PendingBatch()
        for index, event, changes in mapped:
            if outcome.results[index] == DLQ:
                continue
            merged = ids[changes.merged_from] if changes.merged_from is not None else None
            batch.add(
                index, ids[changes.person], changes, event.get("feed"), event["event_id"], merged
            )
        if len(batch):
            self.store.append(batch.table(self.store.next_seq))
        outcome.rows[ROWS] += batch.rows
        return outcome

    def _resolve(
        self, mapped: list[tuple[int, dict[str, Any], LakeChanges]], outcome: Outcome
    ) -> dict[Ref, int]:
        try:
            return self.keys.resolve(*_refs(changes for _, _, changes in mapped))
        except WarehouseDataError:
            pass
        # A key the map refuses (a hash collision, never seen in practice): found event by
        # event, that one to the DLQ.
        ids: dict[Ref, int] = {}
        for index, _, changes in mapped:
            try:
                ids.update(self.keys.resolve(*_refs([changes])))
            except WarehouseDataError as exc:
                outcome.mark(index, DLQ, exc.code)
        return ids


def _refs(changes: Iterable[LakeChanges]) -> tuple[list[Ref], list[Ref]]:
    """(subjects, retired subjects of A40s)."""
    refs: list[Ref] = []
    retired: list[Ref] = []
    for change in changes:
        refs.append(change.person)
        if change.merged_from is not None:
            retired.append(change.merged_from)
    return refs, retired
