"""Research events -> MEDS rows (pure): the lake's one mapping, documented in docs/ai-sink.md.

An event becomes zero or more *facts*. A fact is a set of MEDS rows identified by a source key
(the same keys the warehouse uses: a result's pseudonymous key, a visit's key, (visit, code) of
a diagnosis...); a later event of the same fact replaces all its rows, and a fact with no rows
removes them (a deleted result, a cancelled visit, a withdrawn death). That is how corrections,
cancels and deletes are applied, not appended: compaction keeps the newest version of each fact.

Subjects are named by the patient's pseudonymous key (a `Ref` of the warehouse's key map); the
sink resolves it to the warehouse's person_id, so a patient's OMOP and MEDS rows join. Times
are the source's wall-clock time, as the warehouse writes them (connectors/warehouse/fields.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from hl7bus.connectors.warehouse.changes import (
    ALLERGY,
    CONDITION,
    DRUG,
    NOTE,
    PERSON,
    PROCEDURE,
    RESULT,
    VISIT,
    MappingError,
    Ref,
)
from hl7bus.connectors.warehouse.fields import Event, at, coded, person_ref, when
from hl7bus.connectors.warehouse.map_clinical import DEFAULT_STATUSES, ResultStatuses

BIRTH = "MEDS_BIRTH"  # meds.birth_code
DEATH = "MEDS_DEATH"  # meds.death_code

# Fact kinds of the lake's own (the clinical ones are the warehouse's key kinds).
_BIRTH, _DEATH, _GENDER, _VISIT_END = "birth", "death", "gender", "visit_end"

# Code systems as MEDS code prefixes: HL7 table 0396 names to the vocabulary's usual name.
_SYSTEMS = {
    "LN": "LOINC",
    "I10": "ICD10",
    "I10C": "ICD10CM",
    "I10P": "ICD10PCS",
    "I9": "ICD9",
    "I9C": "ICD9CM",
    "SCT": "SNOMED",
    "SNOMED-CT": "SNOMED",
    "SNM": "SNOMED",
    "RXNORM": "RxNorm",
    "NDC": "NDC",
    "CPT": "CPT4",
    "C4": "CPT4",
}

# Research event types with no MEDS row by design: an order is a request (its results are
# Observation events); Generic is the catch-all for message types the bus does not model.
NO_ROWS = frozenset(("Order", "Generic"))


@dataclass(frozen=True)
class MedsRow:
    """One MEDS row of a fact, before its subject is resolved."""

    time: datetime | None  # None: a static fact (MEDS sorts them first)
    code: str
    numeric_value: float | None = None
    text_value: str | None = None
    unit: str | None = None
    description: str | None = None  # the code's text, for metadata/codes.parquet


@dataclass(frozen=True)
class Fact:
    """The rows of fact `ref` from now on (none: the fact is gone)."""

    ref: Ref
    rows: tuple[MedsRow, ...]


@dataclass(frozen=True)
class LakeChanges:
    """What one event does to the lake: `person` is its subject; `merged_from` (an A40) is a
    subject whose rows now belong to `person`; `skipped` says why an event makes nothing on
    purpose (a metric reason)."""

    person: Ref
    facts: tuple[Fact, ...]
    merged_from: Ref | None = None
    skipped: str | None = None


def code_of(system: str | None, code: str) -> str:
    """`SYSTEM/code`, e.g. LOINC/2345-7, KCD8/E11.9; a code without a system keeps its own."""
    if not system:
        return f"UNKNOWN/{code}"
    name = _SYSTEMS.get(system.upper()) or system.replace("-", "").replace("/", "_")
    return f"{name}/{code}"


def map_event(
    event_type: str, event: Event, statuses: ResultStatuses = DEFAULT_STATUSES
) -> LakeChanges:
    """The lake changes of one research event. Raises MappingError (code: the DLQ reason) for
    an event that cannot become rows: no event id, no patient key, no time, an unknown type."""
    if not event.get("event_id"):
        raise MappingError("no_event_id")
    mapper = _MAPPERS.get(event_type)
    if mapper is None:
        if event_type in NO_ROWS:
            return LakeChanges(person_ref(event), (), skipped="no_meds_row")
        raise MappingError("unknown_type")
    if event_type == "Observation":
        return observation(event, statuses)
    return mapper(event)


def patient(event: Event) -> LakeChanges:
    """Birth (the research form keeps the year: 1 January of it), sex (a static row) and death.
    A Patient event only replaces what it carries: an A08 without a birth year keeps the birth.
    An A40 (merged_from_patient_key) moves the retired subject's rows to this one."""
    person = person_ref(event)
    facts: list[Fact] = []
    year = event.get("birth_year")
    if year is not None:
        born = MedsRow(datetime(int(year), 1, 1), BIRTH, description="Birth (year only)")
        facts.append(Fact(Ref(_BIRTH, person.key), (born,)))
    sex = event.get("sex")
    if sex:
        row = MedsRow(None, f"GENDER/{sex}", description=f"Administrative sex {sex}")
        facts.append(Fact(Ref(_GENDER, person.key), (row,)))
    died = at(event, "death_time")
    deceased = event.get("deceased")
    if died is not None or deceased is True:
        row = MedsRow(died or when(event), DEATH, description="Death")
        facts.append(Fact(Ref(_DEATH, person.key), (row,)))
    elif deceased is False:
        facts.append(Fact(Ref(_DEATH, person.key), ()))
    prior = event.get("merged_from_patient_key")
    merged = Ref(PERSON, prior) if prior and prior != person.key else None
    if merged is not None:
        # The survivor's demographics stand: the retired chart's go, as its person row does.
        facts.extend(Fact(Ref(kind, merged.key), ()) for kind in (_BIRTH, _GENDER, _DEATH))
    skipped = None if facts or merged else "no_meds_row"
    return LakeChanges(person, tuple(facts), merged, skipped)


def encounter(event: Event) -> LakeChanges:
    """A visit is two facts: its start (VISIT/<patient class> at the admit time) and its end
    (VISIT_END/<class> at the discharge time). A11 removes both, A13 the end."""
    person = person_ref(event)
    key = event.get("encounter_key") or f"event|{event['event_id']}"
    start, end = Ref(VISIT, key), Ref(_VISIT_END, key)
    action = event.get("action")
    if action == "cancel_admit":
        return LakeChanges(person, (Fact(start, ()), Fact(end, ())))
    if action == "cancel_discharge":
        return LakeChanges(person, (Fact(end, ()),))
    kind = event.get("patient_class_source") or "UNKNOWN"
    facts: list[Fact] = []
    admitted = at(event, "admit_time")
    if admitted is not None or action in ("admit", "register"):
        text = f"Visit start, patient class {kind}"
        row = MedsRow(admitted or when(event), f"VISIT/{kind}", description=text)
        facts.append(Fact(start, (row,)))
    discharged = at(event, "discharge_time")
    if discharged is not None:
        text = f"Visit end, patient class {kind}"
        facts.append(Fact(end, (MedsRow(discharged, f"VISIT_END/{kind}", description=text),)))
    return LakeChanges(person, tuple(facts), skipped=None if facts else "no_meds_row")


def observation(event: Event, statuses: ResultStatuses = DEFAULT_STATUSES) -> LakeChanges:
    """A result: LOINC/<code> with its value in the UCUM unit when normalization found one.
    OBX-11 statuses as the warehouse reads them: D/W/X (or a cancel) remove the result, P is
    not loaded, C/A replace it."""
    person = person_ref(event)
    ref = Ref(RESULT, event.get("result_key") or event["event_id"])
    status = (event.get("result_status") or "").upper() or None
    if event.get("is_cancel") or status in statuses.delete:
        return LakeChanges(person, (Fact(ref, ()),))
    if status is not None and status not in statuses.load:
        return LakeChanges(person, (), skipped="result_status")
    code = _code(event)
    numeric, unit = event.get("value_numeric"), event.get("units")
    if event.get("units_ucum") and event.get("value_numeric_ucum") is not None:
        numeric, unit = event["value_numeric_ucum"], event["units_ucum"]
    text = None if numeric is not None else event.get("value_code") or event.get("value_text")
    row = MedsRow(
        when(event),
        code,
        numeric_value=numeric,
        text_value=text,
        unit=unit,
        description=event.get("code_text"),
    )
    return LakeChanges(person, (Fact(ref, (row,)),))


def diagnosis(event: Event) -> LakeChanges:
    """One fact per (visit, code), as in the warehouse: every ADT of a stay repeats its DG1s."""
    person = person_ref(event)
    system, code = coded(event)
    scope = event.get("encounter_key") or event.get("patient_key")
    ref = Ref(CONDITION, f"{scope}|{system}|{code}" if code else event["event_id"])
    if event.get("action_code") == "D":
        return LakeChanges(person, (Fact(ref, ()),))
    moment = at(event, "diagnosis_time") or when(event)
    description = event.get("code_text") or event.get("description")
    row = MedsRow(moment, _code(event), description=description)
    return LakeChanges(person, (Fact(ref, (row,)),))


def procedure(event: Event) -> LakeChanges:
    person = person_ref(event)
    system, code = coded(event)
    moment = at(event, "procedure_time") or when(event)
    scope = event.get("encounter_key") or event.get("patient_key")
    key = f"{scope}|{system}|{code}|{moment.isoformat()}" if code else event["event_id"]
    ref = Ref(PROCEDURE, key)
    if event.get("action_code") == "D":
        return LakeChanges(person, (Fact(ref, ()),))
    row = MedsRow(moment, _code(event), description=event.get("code_text"))
    return LakeChanges(person, (Fact(ref, (row,)),))


def medication(event: Event) -> LakeChanges:
    """A prescription or an administration: the drug code with the dose and its unit."""
    person = person_ref(event)
    system, code = coded(event)
    start = at(event, "start_time") or when(event)
    if event.get("kind") == "order" and event.get("order_key"):
        key = f"{event['order_key']}|{event.get('source_segment')}"
    elif code:
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
        return LakeChanges(person, (Fact(ref, ()),))
    row = MedsRow(
        start,
        _code(event),
        numeric_value=event.get("dose_amount"),
        unit=event.get("dose_units"),
        description=event.get("code_text"),
    )
    return LakeChanges(person, (Fact(ref, (row,)),))


def allergy(event: Event) -> LakeChanges:
    """ALLERGY//<allergen code>, with the reaction as text."""
    person = person_ref(event)
    system, code = coded(event, "allergen_")
    key = event.get("allergy_key") or (
        f"{event.get('patient_key')}|{system}|{code}" if code else event["event_id"]
    )
    ref = Ref(ALLERGY, key)
    if event.get("action_code") == "D":
        return LakeChanges(person, (Fact(ref, ()),))
    allergen = code_of(system, code) if code else "UNKNOWN/allergen"
    text = event.get("allergen_code_text")
    row = MedsRow(
        at(event, "onset_time") or when(event),
        f"ALLERGY//{allergen}",
        text_value=event.get("reaction"),
        description=f"Allergy to {text}" if text else None,
    )
    return LakeChanges(person, (Fact(ref, (row,)),))


def document(event: Event) -> LakeChanges:
    """A note: NOTE/<document type> with the research (scrubbed) text; the newest version of
    a document replaces the older."""
    person = person_ref(event)
    ref = Ref(NOTE, event.get("document_key") or event["event_id"])
    if event.get("availability_status") == "CA":
        return LakeChanges(person, (Fact(ref, ()),))
    moment = (
        at(event, "activity_time")
        or at(event, "origination_time")
        or at(event, "transcription_time")
        or when(event)
    )
    kind = event.get("document_type") or "UNKNOWN"
    row = MedsRow(moment, f"NOTE/{kind}", text_value=event.get("text") or "")
    return LakeChanges(person, (Fact(ref, (row,)),))


def _code(event: Event) -> str:
    system, code = coded(event)
    if not code:
        raise MappingError("no_code")
    return code_of(system, code)


_MAPPERS: dict[str, Callable[[Event], LakeChanges]] = {
    "Patient": patient,
    "Encounter": encounter,
    "Observation": observation,
    "Diagnosis": diagnosis,
    "Procedure": procedure,
    "Medication": medication,
    "Allergy": allergy,
    "Document": document,
}
