"""Clinical events -> OMOP facts (pure): Observation -> measurement or observation, Order ->
specimen or procedure_occurrence, Diagnosis -> condition_occurrence, Allergy -> observation,
Medication -> drug_exposure, Procedure -> procedure_occurrence, Document -> note.

The table of a coded fact follows its concept's domain, as OHDSI asks; an unmapped code
(concept 0, source value kept) lands in the event type's usual table. docs/omop-mapping.md
gives every column's source and rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from hl7bus.connectors.warehouse import constants as c
from hl7bus.connectors.warehouse.changes import (
    ALLERGY,
    CONDITION,
    DRUG,
    KIND_TABLES,
    NOTE,
    ORDER,
    PROCEDURE,
    RESULT,
    Change,
    Delete,
    EventChanges,
    Ref,
    Row,
)
from hl7bus.connectors.warehouse.concepts import ConceptLookup, Mapped
from hl7bus.connectors.warehouse.fields import (
    Event,
    at,
    coded,
    concept,
    person_ref,
    value_concept,
    visit_ref,
    when,
)
from hl7bus.streams.terminology import Terminology, default_terminology

# The table a standard concept's domain sends a fact to.
DOMAIN_TABLES = {
    "Measurement": "measurement",
    "Observation": "observation",
    "Condition": "condition_occurrence",
    "Procedure": "procedure_occurrence",
    "Drug": "drug_exposure",
}

# HL7 table 0074 diagnostic service sections: where an unmapped order goes. Laboratory
# sections collect a specimen; imaging and other sections are procedures.
LAB_SECTIONS = frozenset(
    {"BG", "BLB", "CG", "CH", "CP", "GE", "HM", "IMM", "LAB", "MB", "MCB", "MYC", "OSL"}
    | {"SP", "SR", "TX", "URN", "VR"}
)
PROCEDURE_SECTIONS = frozenset(
    {"AU", "CT", "CTH", "CUS", "EC", "EN", "NMR", "NMS", "OUS", "PF", "RAD", "RT", "RUS"}
    | {"RX", "VUS", "XRC"}
)
# OBX-2 value types that hold a measured value (number, structured number, code).
_MEASURED_TYPES = frozenset(("NM", "SN", "CE", "CWE", "CNE", "NA"))


@dataclass(frozen=True)
class ResultStatuses:
    """OBX-11 statuses that load and that delete (config: warehouse.*_result_statuses)."""

    load: frozenset[str] = frozenset(("F", "C", "A", "U"))
    delete: frozenset[str] = frozenset(("D", "W", "X"))


DEFAULT_STATUSES = ResultStatuses()


@cache
def _terminology() -> Terminology:
    return default_terminology()


def _fact(
    table: str,
    person: Ref,
    visit: Ref | None,
    found: Mapped,
    moment: datetime,
    source_value: str | None,
    type_concept: int = c.EHR,
) -> dict[str, Any]:
    """The columns every clinical fact table has, under that table's names."""
    concept_, source_concept, source, type_, day, time_ = _FACT_COLUMNS[table]
    return {
        "person_id": person,
        "visit_occurrence_id": visit,
        concept_: found.concept_id,
        source_concept: found.source_concept_id,
        source: source_value,
        type_: type_concept,
        day: moment.date(),
        time_: moment,
    }


def _fact_columns(stem: str, start: str) -> tuple[str, str, str, str, str, str]:
    return (
        f"{stem}_concept_id",
        f"{stem}_source_concept_id",
        f"{stem}_source_value",
        f"{stem}_type_concept_id",
        f"{start}_date",
        f"{start}_datetime",
    )


# Per fact table: its concept, source concept, source value, type, date and datetime columns.
_FACT_COLUMNS = {
    "measurement": _fact_columns("measurement", "measurement"),
    "observation": _fact_columns("observation", "observation"),
    "condition_occurrence": _fact_columns("condition", "condition_start"),
    "procedure_occurrence": _fact_columns("procedure", "procedure"),
    "drug_exposure": _fact_columns("drug", "drug_exposure_start"),
}


def _coded_fact(
    table: str, person: Ref, ref: Ref, found: Mapped, moment: datetime, event: Event
) -> Row:
    """A diagnosis or procedure whose concept's domain sent it to `table`."""
    values = _fact(table, person, visit_ref(event), found, moment, event.get("code"))
    if table == "drug_exposure":
        values["drug_exposure_end_date"] = moment.date()
    return Row(table, ref, values)


def observation(event: Event, concepts: ConceptLookup, statuses: ResultStatuses) -> EventChanges:
    person = person_ref(event)
    ref = Ref(RESULT, event.get("result_key") or event["event_id"])
    status = (event.get("result_status") or "").upper() or None
    if event.get("is_cancel") or status in statuses.delete:
        return EventChanges(person, (Delete(KIND_TABLES[RESULT], ref),))
    if status is not None and status not in statuses.load:
        return EventChanges(person, (), skipped="result_status")
    system, code = coded(event)
    found = concept(concepts, system, code)
    table = _result_table(found, event, system)
    moment = when(event)
    numeric = event.get("value_numeric")
    factor = 1.0
    unit = event.get("units_ucum")
    if unit and event.get("value_numeric_ucum") is not None:
        numeric = event["value_numeric_ucum"]
        known = _terminology().ucum(event.get("units"))
        factor = known[1] if known else 1.0
    unit_concept = concept(concepts, "UCUM", unit) if unit else None
    values = _fact(table, person, visit_ref(event), found, moment, event.get("code"))
    values.update(
        value_as_number=numeric,
        value_as_concept_id=value_concept(
            concepts, event.get("value_code_system"), event.get("value_code")
        ),
        unit_concept_id=unit_concept.concept_id if unit_concept else None,
        unit_source_value=event.get("units"),
        value_source_value=event.get("value_text"),
    )
    if table == "measurement":
        values.update(
            operator_concept_id=c.OPERATORS.get(event.get("comparator") or ""),
            unit_source_concept_id=unit_concept.source_concept_id if unit_concept else None,
            range_low=_scaled(event.get("reference_low"), factor),
            range_high=_scaled(event.get("reference_high"), factor),
        )
    else:
        values["value_as_string"] = event.get("value_text") if numeric is None else None
    changes: list[Change] = []
    if status in ("C", "A") or event.get("is_correction"):
        # A correction may move the result to the other table (its code changed domain).
        other = tuple(t for t in KIND_TABLES[RESULT] if t != table)
        changes.append(Delete(other, ref))
    changes.append(Row(table, ref, values))
    return EventChanges(person, tuple(changes))


def _scaled(value: float | None, factor: float) -> float | None:
    """A reference bound in the unit of value_as_number (the result's UCUM unit)."""
    return None if value is None else value * factor


def _result_table(found: Mapped, event: Event, system: str | None) -> str:
    if found.domain_id is not None:
        return "measurement" if found.domain_id == "Measurement" else "observation"
    # Unmapped: LOINC codes and measured values are lab results; the rest are observations.
    measured = event.get("value_numeric") is not None or event.get("value_code")
    if system == "LOINC" or measured or event.get("value_type") in _MEASURED_TYPES:
        return "measurement"
    return "observation"


def order(event: Event, concepts: ConceptLookup) -> EventChanges:
    """An order is a fact once it happened: a collected lab specimen (OBR-7 set), or a done
    procedure (results reported, or ORC-5 CM). Cancelled orders withdraw what they made."""
    person = person_ref(event)
    ref = Ref(ORDER, event.get("order_key") or event["event_id"])
    if event.get("order_control") in ("CA", "OC") or event.get("order_status") == "CA":
        return EventChanges(person, (Delete(KIND_TABLES[ORDER], ref),))
    system, code = coded(event)
    found = concept(concepts, system, code)
    section = event.get("diagnostic_service")
    collected = at(event, "observation_time")
    done = event.get("order_status") == "CM" or event.get("result_status") in ("F", "C", "A")
    unmapped = found.domain_id is None
    if found.domain_id == "Procedure" or (unmapped and section in PROCEDURE_SECTIONS):
        if not done:
            return EventChanges(person, (), skipped="order_not_done")
        moment = collected or when(event)
        values = _fact(
            "procedure_occurrence", person, visit_ref(event), found, moment, event.get("code")
        )
        return EventChanges(person, (Row("procedure_occurrence", ref, values),))
    if found.domain_id == "Measurement" or (unmapped and section in LAB_SECTIONS):
        if collected is None:
            return EventChanges(person, (), skipped="order_not_collected")
        # The specimen's type (OBR-15/SPM-4) is not on the event: concept 0.
        values = {
            "person_id": person,
            "specimen_concept_id": 0,
            "specimen_type_concept_id": c.EHR,
            "specimen_date": collected.date(),
            "specimen_datetime": collected,
        }
        return EventChanges(person, (Row("specimen", ref, values),))
    return EventChanges(person, (), skipped="order_no_table")


def diagnosis(event: Event, concepts: ConceptLookup) -> EventChanges:
    """One row per (visit, code): DG1s repeated by every ADT of a stay update one condition."""
    person = person_ref(event)
    system, code = coded(event)
    scope = event.get("encounter_key") or event.get("patient_key")
    key = f"{scope}|{system}|{code}" if code else event["event_id"]
    ref = Ref(CONDITION, key)
    if event.get("action_code") == "D":
        return EventChanges(person, (Delete(KIND_TABLES[CONDITION], ref),))
    found = concept(concepts, system, code)
    table = DOMAIN_TABLES.get(found.domain_id or "Condition", "condition_occurrence")
    if table == "drug_exposure":
        table = "observation"  # a diagnosis code is never a drug exposure
    moment = at(event, "diagnosis_time") or when(event)
    row = _coded_fact(table, person, ref, found, moment, event)
    if table == "condition_occurrence":
        priority = event.get("priority")
        status = None
        if priority:
            status = c.PRIMARY_DIAGNOSIS if priority == "1" else c.SECONDARY_DIAGNOSIS
        row.values.update(
            condition_status_concept_id=status,
            condition_status_source_value=event.get("diagnosis_type"),
        )
    return EventChanges(person, (*_moved(CONDITION, table, ref), row))


def procedure(event: Event, concepts: ConceptLookup) -> EventChanges:
    """One row per (visit, code, time): PR1s repeated by later ADTs update it."""
    person = person_ref(event)
    system, code = coded(event)
    moment = at(event, "procedure_time") or when(event)
    scope = event.get("encounter_key") or event.get("patient_key")
    key = f"{scope}|{system}|{code}|{moment.isoformat()}" if code else event["event_id"]
    ref = Ref(PROCEDURE, key)
    if event.get("action_code") == "D":
        return EventChanges(person, (Delete(KIND_TABLES[PROCEDURE], ref),))
    found = concept(concepts, system, code)
    table = DOMAIN_TABLES.get(found.domain_id or "Procedure", "procedure_occurrence")
    if table in ("condition_occurrence", "drug_exposure"):
        table = "procedure_occurrence"
    row = _coded_fact(table, person, ref, found, moment, event)
    return EventChanges(person, (*_moved(PROCEDURE, table, ref), row))


def _moved(kind: str, table: str, ref: Ref) -> tuple[Change, ...]:
    """A coded fact whose table can differ between deliveries (a vocabulary was loaded in
    between): the other tables of its kind lose the row."""
    others = tuple(t for t in KIND_TABLES[kind] if t != table)
    return (Delete(others, ref),) if others else ()


# Allergy categories (AL1-2, table 0127) as SNOMED codes, whose standard concepts the
# vocabulary gives: drug, food, environmental allergy; any other: allergy to substance.
_ALLERGY_CATEGORY = {"DA": "416098002", "FA": "414285001", "EA": "426232007"}
_ALLERGY_TO_SUBSTANCE = "419199007"


def allergy(event: Event, concepts: ConceptLookup) -> EventChanges:
    """OHDSI's convention: an allergy is an observation. When the allergen's code is itself an
    allergy concept (Observation domain) it is the observation concept; otherwise the concept
    is the allergy category and the allergen is value_as_concept_id."""
    person = person_ref(event)
    system, code = coded(event, "allergen_")
    key = event.get("allergy_key") or (
        f"{event.get('patient_key')}|{system}|{code}" if code else event["event_id"]
    )
    ref = Ref(ALLERGY, key)
    if event.get("action_code") == "D":
        return EventChanges(person, (Delete(KIND_TABLES[ALLERGY], ref),))
    allergen = concept(concepts, system, code)
    if allergen.domain_id == "Observation":
        found, value = allergen, None
    else:
        category = _ALLERGY_CATEGORY.get(event.get("allergen_type") or "", _ALLERGY_TO_SUBSTANCE)
        category_concept = concept(concepts, "SNOMED-CT", category).concept_id
        found = Mapped(category_concept, allergen.source_concept_id, "Observation")
        value = allergen.concept_id
    moment = at(event, "onset_time") or when(event)
    values = _fact(
        "observation", person, visit_ref(event), found, moment, event.get("allergen_code")
    )
    severity = event.get("severity")
    values.update(
        value_as_concept_id=value,
        value_as_string=event.get("reaction"),
        value_source_value=event.get("allergen_code_text"),
        qualifier_concept_id=concept(concepts, "HL70128", severity).concept_id
        if severity
        else None,
        qualifier_source_value=severity,
    )
    return EventChanges(person, (Row("observation", ref, values),))


def medication(event: Event, concepts: ConceptLookup) -> EventChanges:
    """Orders (RXO/RXE) are prescriptions; RXA administrations and immunizations are
    administration records. An RXA refused or not given (RXA-20 RE/NA) is no exposure."""
    person = person_ref(event)
    system, code = coded(event)
    kind = event.get("kind")
    start = at(event, "start_time") or when(event)
    if kind == "order" and event.get("order_key"):
        key = f"{event['order_key']}|{event.get('source_segment')}"
    elif code:
        # An administration is the same fact across updates: patient, product, time.
        key = f"{event.get('patient_key')}|{system}|{code}|{start.isoformat()}"
    else:
        key = event["event_id"]
    ref = Ref(DRUG, key)
    withdrawn = (
        event.get("action_code") == "D"
        or event.get("completion_status") in ("RE", "NA")
        or event.get("order_control") in ("CA", "OC")
    )
    if withdrawn:
        return EventChanges(person, (Delete(KIND_TABLES[DRUG], ref),))
    found = concept(concepts, system, code)
    administered = kind in ("administration", "immunization")
    type_concept = c.EHR_ADMINISTRATION if administered else c.EHR
    values = _fact(
        "drug_exposure", person, visit_ref(event), found, start, event.get("code"), type_concept
    )
    end = at(event, "end_time") or start
    quantity = event.get("dose_amount") if administered else event.get("dispense_amount")
    route = event.get("route")
    values.update(
        drug_exposure_end_date=max(end, start).date(),
        drug_exposure_end_datetime=at(event, "end_time"),
        quantity=quantity if quantity is not None else event.get("dose_amount"),
        refills=event.get("refills"),
        route_source_value=route,
        route_concept_id=concept(concepts, "HL70162", route).concept_id if route else None,
        lot_number=event.get("lot_number"),
        dose_unit_source_value=event.get("dose_units"),
        stop_reason="discontinued" if event.get("order_control") == "DC" else None,
    )
    return EventChanges(person, (Row("drug_exposure", ref, values),))


def document(event: Event, concepts: ConceptLookup) -> EventChanges:
    """A document's versions share its pseudonymous key: the newest replaces the note."""
    person = person_ref(event)
    ref = Ref(NOTE, event.get("document_key") or event["event_id"])
    if event.get("availability_status") == "CA":
        return EventChanges(person, (Delete(KIND_TABLES[NOTE], ref),))
    moment = (
        at(event, "activity_time")
        or at(event, "origination_time")
        or at(event, "transcription_time")
        or when(event)
    )
    kind = event.get("document_type")
    values = {
        "person_id": person,
        "visit_occurrence_id": visit_ref(event),
        "note_date": moment.date(),
        "note_datetime": moment,
        "note_type_concept_id": c.EHR,
        "note_class_concept_id": concept(concepts, "HL70270", kind).concept_id,
        "note_title": kind,
        # The research form's text: scrubbed of names, identifiers and dates by the worker.
        "note_text": event.get("text") or "",
        "encoding_concept_id": c.UTF8,
        "language_concept_id": 0,
        "note_source_value": kind,
    }
    return EventChanges(person, (Row("note", ref, values),))
