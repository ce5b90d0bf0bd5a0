"""Research events -> OMOP CDM v5.4 changes (pure): the one entry point of the mapping.

Each research event type has its mapper (map_admin.py, map_clinical.py); this module picks it.
No source identifier reaches an OMOP column: ids are resolved from pseudonymous keys by the
writer's key map, person_source_value is the patient's keyed pseudonym, and the research
events carry no MRN, name or document number to begin with (the policy drops them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hl7bus.connectors.warehouse import map_admin, map_clinical
from hl7bus.connectors.warehouse.changes import EventChanges, MappingError
from hl7bus.connectors.warehouse.concepts import ConceptLookup
from hl7bus.connectors.warehouse.map_clinical import DEFAULT_STATUSES, ResultStatuses

__all__ = ["DEFAULT_STATUSES", "EVENT_TYPES", "ResultStatuses", "map_event"]

_Mapper = Callable[[dict[str, Any], ConceptLookup], EventChanges]

_MAPPERS: dict[str, _Mapper] = {
    "Patient": map_admin.patient,
    "Encounter": map_admin.encounter,
    "Order": map_clinical.order,
    "Diagnosis": map_clinical.diagnosis,
    "Allergy": map_clinical.allergy,
    "Medication": map_clinical.medication,
    "Procedure": map_clinical.procedure,
    "Document": map_clinical.document,
}

#: The event types that land in OMOP tables (Generic, the catch-all, has no table).
EVENT_TYPES = (*_MAPPERS, "Observation")


def map_event(
    event_type: str,
    event: dict[str, Any],
    concepts: ConceptLookup,
    statuses: ResultStatuses = DEFAULT_STATUSES,
) -> EventChanges:
    """What `event` does to the OMOP tables. Raises MappingError for an event that cannot be
    mapped (no patient key); an event type without a table changes nothing (skipped)."""
    if not event.get("event_id"):
        raise MappingError("no_event_id")
    if event_type == "Observation":
        return map_clinical.observation(event, concepts, statuses)
    mapper = _MAPPERS.get(event_type)
    if mapper is None:
        return EventChanges(None, (), skipped="no_table")
    return mapper(event, concepts)
