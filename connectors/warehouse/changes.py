"""What one research event does to the OMOP tables, as plain data (made by omop.py, applied by
writer.py).

Rows name their ids by source key (`Ref`), never by integer: the writer resolves every Ref
through the key map in one round trip per batch, so the mapping stays pure and no MRN or other
business id ever becomes an OMOP id. Source keys are pseudonyms (patient, visit, order, result,
document keys of the research events) or built from pseudonyms and codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hl7bus.connectors.warehouse import cdm

# Key kinds: the key map holds one integer id per (kind, source key).
PERSON = "person"
LOCATION = "location"
VISIT = "visit"
VISIT_DETAIL = "visit_detail"
RESULT = "result"  # an OBX result: measurement or observation
ORDER = "order"  # an OBR/ORC order: specimen or procedure_occurrence
CONDITION = "condition"  # a DG1 diagnosis (condition_occurrence, or the table of its domain)
PROCEDURE = "procedure"  # a PR1 procedure
DRUG = "drug"  # an RXO/RXE/RXA medication
ALLERGY = "allergy"  # an AL1/IAM allergy: observation
NOTE = "note"  # a TXA document

KINDS = (
    PERSON,
    LOCATION,
    VISIT,
    VISIT_DETAIL,
    RESULT,
    ORDER,
    CONDITION,
    PROCEDURE,
    DRUG,
    ALLERGY,
    NOTE,
)

# Every table a fact of a kind can land in (the concept's domain decides among them), so that a
# delete, or a correction that moves the fact to another domain, leaves nothing behind.
KIND_TABLES: dict[str, tuple[str, ...]] = {
    RESULT: ("measurement", "observation"),
    ORDER: ("specimen", "procedure_occurrence"),
    CONDITION: ("condition_occurrence", "observation", "procedure_occurrence", "measurement"),
    PROCEDURE: ("procedure_occurrence", "observation", "measurement"),
    DRUG: ("drug_exposure",),
    ALLERGY: ("observation",),
    NOTE: ("note",),
    VISIT: ("visit_occurrence",),
}


def id_column(table: str) -> str:
    """The column a row of `table` is identified by: its primary key, person_id for death."""
    keys = [c.name for c in cdm.TABLES[table] if c.pk]
    return keys[0] if keys else "person_id"


class Ref(NamedTuple):
    """A surrogate id still to be resolved: (kind, source key) -> integer, via the key map.
    (A named tuple: a batch hashes tens of thousands of them.)"""

    kind: str
    key: str


@dataclass(frozen=True)
class Row:
    """Columns of one row of `table`, identified by `ref`.

    Values may be Refs (person_id, visit_occurrence_id, location_id), resolved by the writer.
    A row replaces the stored one (facts: each event carries the whole fact) unless `merge` is
    set (person, visit_occurrence: an update carries only what changed, so the values are laid
    over the stored row). A None in `values` clears the column. `defaults` fill columns that
    are still empty after the merge; `latest` keeps the greatest of the stored and new values
    (a visit's provisional end date)."""

    table: str
    ref: Ref
    values: dict[str, Any]
    merge: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delete:
    """Remove the row of `ref` from each of `tables` (where it is)."""

    tables: tuple[str, ...]
    ref: Ref


@dataclass(frozen=True)
class MergePersons:
    """ADT^A40: every fact of `retired` moves to `survivor`; the retired person row goes."""

    retired: Ref
    survivor: Ref


@dataclass(frozen=True)
class CancelVisit:
    """ADT^A11: the visit and its details go; facts that named the visit keep no visit id."""

    visit: Ref


@dataclass(frozen=True)
class CancelTransfer:
    """ADT^A12: the visit's latest detail goes when it is the transfer being cancelled: at
    `cancelled_location` (PV1-6) when sent, else anywhere but `back_to` (PV1-3). The first
    detail (the admission) is never removed."""

    visit: Ref
    cancelled_location: str | None
    back_to: str | None


# Changes that cannot be folded row by row: applied in event order between bulk writes.
Structural = MergePersons | CancelVisit | CancelTransfer
Change = Row | Delete | MergePersons | CancelVisit | CancelTransfer


@dataclass(frozen=True)
class EventChanges:
    """What one event does. `person` is whose observation period it may change; `skipped`
    says why an event changes nothing on purpose (a preliminary result, an order with no fact
    yet), as a metric reason."""

    person: Ref | None
    changes: tuple[Change, ...]
    skipped: str | None = None


class MappingError(ValueError):
    """An event that cannot become OMOP rows. ``code`` is a reason for the DLQ header and the
    metrics: field names and codes only, never a value of the event."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
