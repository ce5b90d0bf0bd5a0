"""Patient -> person, location, death; Encounter -> visit_occurrence, visit_detail (pure).

docs/omop-mapping.md gives every column's source and rule.
"""

from __future__ import annotations

from hl7bus.connectors.warehouse import constants as c
from hl7bus.connectors.warehouse.changes import (
    LOCATION,
    VISIT,
    VISIT_DETAIL,
    CancelTransfer,
    CancelVisit,
    Change,
    Delete,
    EventChanges,
    MergePersons,
    Ref,
    Row,
)
from hl7bus.connectors.warehouse.concepts import ConceptLookup
from hl7bus.connectors.warehouse.fields import Event, at, concept, person_ref, when

# Encounter actions (streams/routing.yaml) that place the patient somewhere: each starts a
# visit_detail at the event's location.
_FIRST_STAY = ("admit", "register")


def patient(event: Event, concepts: ConceptLookup) -> EventChanges:
    """Demographics merge into the person row: an A08 that leaves a field out keeps it."""
    person = person_ref(event)
    changes: list[Change] = []
    values: dict[str, object] = {"person_source_value": event.get("patient_key")}
    sex = event.get("sex")
    if sex:
        gender = concept(concepts, "HL70001", sex, c.GENDER)
        values.update(
            gender_concept_id=gender.concept_id,
            gender_source_value=event.get("sex_source") or sex,
            gender_source_concept_id=gender.source_concept_id,
        )
    if event.get("birth_year") is not None:
        values["year_of_birth"] = event["birth_year"]
    postal = event.get("postal_code")
    if postal:
        # One location per generalized postal code (and country): the policy keeps no more.
        place = Ref(LOCATION, f"{event.get('country') or ''}|{postal}")
        values["location_id"] = place
        changes.append(
            Row(
                "location",
                place,
                {
                    "zip": postal,
                    "location_source_value": postal,
                    "country_source_value": event.get("country"),
                },
            )
        )
    changes.append(
        Row(
            "person",
            person,
            values,
            merge=True,
            defaults={"gender_concept_id": 0, "race_concept_id": 0, "ethnicity_concept_id": 0},
        )
    )
    changes.extend(_death(event, person))
    prior = event.get("merged_from_patient_key")
    if prior and prior != event.get("patient_key"):
        changes.append(MergePersons(Ref(person.kind, prior), person))
    return EventChanges(person, tuple(changes))


def _death(event: Event, person: Ref) -> list[Change]:
    """PID-29/30: one death row per person (keyed by person_id). PID-30 "N" without a death
    time withdraws it; an empty PID-30 changes nothing."""
    died = at(event, "death_time")
    deceased = event.get("deceased")
    if died is not None or deceased is True:
        day = (died or when(event)).date()
        return [
            Row(
                "death",
                person,
                {"death_date": day, "death_datetime": died, "death_type_concept_id": c.EHR},
            )
        ]
    if deceased is False:
        return [Delete(("death",), person)]
    return []


def encounter(event: Event, concepts: ConceptLookup) -> EventChanges:
    person = person_ref(event)
    visit = Ref(VISIT, event.get("encounter_key") or f"event|{event['event_id']}")
    action = event.get("action")
    if action == "cancel_admit":
        return EventChanges(person, (CancelVisit(visit),))
    if action == "cancel_transfer":
        cancel = CancelTransfer(
            visit, event.get("prior_location_point_of_care"), event.get("location_point_of_care")
        )
        return EventChanges(person, (cancel,))
    moment = when(event)
    kind = concept(concepts, "HL70004", event.get("patient_class_source"), c.VISIT)
    values: dict[str, object] = {"person_id": person, "visit_type_concept_id": c.EHR}
    if event.get("patient_class_source"):
        values.update(
            visit_concept_id=kind.concept_id,
            visit_source_value=event["patient_class_source"],
            visit_source_concept_id=kind.source_concept_id,
        )
    admitted = at(event, "admit_time")
    if admitted is not None:
        values.update(visit_start_datetime=admitted, visit_start_date=admitted.date())
    discharged = at(event, "discharge_time")
    if discharged is not None:
        values.update(visit_end_datetime=discharged, visit_end_date=discharged.date())
    if action == "cancel_discharge":
        # A13 reopens the visit: no end time, no discharge disposition.
        values.update(
            visit_end_datetime=None, discharged_to_concept_id=None, discharged_to_source_value=None
        )
    source = event.get("admit_source")
    if source:
        values.update(
            admitted_from_source_value=source,
            admitted_from_concept_id=concept(concepts, "HL70023", source).concept_id,
        )
    disposition = event.get("discharge_disposition")
    if disposition and action != "cancel_discharge":
        values.update(
            discharged_to_source_value=disposition,
            discharged_to_concept_id=concept(concepts, "HL70112", disposition).concept_id,
        )
    changes: list[Change] = [
        Row(
            "visit_occurrence",
            visit,
            values,
            merge=True,
            defaults={
                "visit_start_datetime": moment,
                "visit_start_date": moment.date(),
                "visit_concept_id": 0,
            },
            # An open visit ends, for now, on the last day the bus heard of it.
            latest={"visit_end_date": moment.date()},
        )
    ]
    place = event.get("location_point_of_care")
    if place and action in (*_FIRST_STAY, "transfer"):
        start = admitted if action in _FIRST_STAY and admitted is not None else moment
        key = f"{visit.key}|first" if action in _FIRST_STAY else event["event_id"]
        changes.append(
            Row(
                "visit_detail",
                Ref(VISIT_DETAIL, key),
                {
                    "person_id": person,
                    "visit_occurrence_id": visit,
                    "visit_detail_concept_id": kind.concept_id,
                    "visit_detail_type_concept_id": c.EHR,
                    "visit_detail_start_datetime": start,
                    "visit_detail_start_date": start.date(),
                    # The end (the next detail's start, or the visit's end) is recomputed
                    # for the whole visit after every batch that touches it.
                    "visit_detail_end_date": start.date(),
                    "visit_detail_source_value": place,
                },
            )
        )
    return EventChanges(person, tuple(changes))
