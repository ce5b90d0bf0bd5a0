"""ADT mappers: PID -> Patient, PV1/PV2 -> Encounter, PID+MRG (A40) -> Patient merge events."""

from __future__ import annotations

from typing import Any

from hl7bus.hl7v2 import Segment
from hl7bus.schemas.keys import join_key
from hl7bus.streams.mapping import Context, Event, notes_after, repetitions
from hl7bus.streams.normalize import iso_date, yes_no


def patient(ctx: Context) -> list[Event]:
    pid = ctx.message.segment("PID")
    if pid is None:
        return []
    # Position 0, as before identifiers and merges existed: event ids stay stable.
    record = ctx.common("Patient", 0, ctx.event_instant())
    record.update(_demographics(ctx, pid))
    record["notes"] = notes_after(ctx.message, pid, ctx.message.segment("PD1"))
    return [ctx.event("Patient", record)]


def merge(ctx: Context) -> list[Event]:
    """ADT^A40: one Patient event per PID/MRG pair, naming the prior patient it absorbed."""
    events = []
    pid: Segment | None = None
    for segment in ctx.message.segments():
        if segment.name == "PID":
            pid = segment
        elif segment.name == "MRG" and pid is not None:
            survivor = _key(ctx, pid)
            record = ctx.common("Patient", pid.index, ctx.event_instant(), key=survivor)
            record.update(_demographics(ctx, pid))
            prior = _identifiers(ctx, segment, 1)
            first = prior[0] if prior else {}
            record.update(
                merged_from_patient_key=_key(ctx, segment),
                merged_from_mrn=first.get("id"),
                merged_from_assigning_authority=first.get("assigning_authority"),
                merged_from_identifiers=prior or None,
            )
            events.append(ctx.event("Patient", record))
            pid = None
    return events


def encounter(ctx: Context) -> list[Event]:
    pv1 = ctx.message.segment("PV1")
    if pv1 is None:
        return []
    pv2 = ctx.message.segment("PV2")
    record = ctx.common("Encounter", pv1.index, ctx.event_instant())
    patient_class = pv1.get("2")
    record.update(
        encounter_key=ctx.encounter_key(),
        action=ctx.routing.encounter_actions.get(ctx.trigger or ""),
        visit_number=pv1.get("19.1"),
        patient_class_source=patient_class,
        patient_class=ctx.terms.encounter_class(patient_class),
        admission_type=pv1.get("4.1"),
        hospital_service=pv1.get("10.1"),
        location_point_of_care=pv1.get("3.1"),
        location_room=pv1.get("3.2"),
        location_bed=pv1.get("3.3"),
        location_facility=pv1.get("3.4.1") or pv1.get("3.4"),
        prior_location_point_of_care=pv1.get("6.1"),
        attending_id=pv1.get("7.1"),
        attending_family_name=pv1.get("7.2.1") or pv1.get("7.2"),
        attending_given_name=pv1.get("7.3"),
        admit_source=pv1.get("14.1"),
        discharge_disposition=pv1.get("36.1"),
        admit_time=ctx.utc(pv1.get("44.1")),
        discharge_time=ctx.utc(pv1.get("45.1")),
        admit_reason_code=pv2.get("3.1") if pv2 else None,
        admit_reason_text=pv2.get("3.2") if pv2 else None,
        expected_admit_time=ctx.utc(pv2.get("8.1")) if pv2 else None,
        expected_discharge_time=ctx.utc(pv2.get("9.1")) if pv2 else None,
        notes=notes_after(ctx.message, pv1, pv2),
    )
    return [ctx.event("Encounter", record)]


def _demographics(ctx: Context, pid: Segment) -> dict[str, Any]:
    birth = pid.get("7.1")
    sex_source = pid.get("8.1")
    sex, gender = ctx.terms.administrative_sex(sex_source)
    marital = pid.get("16.1")
    return {
        "notes": notes_after(ctx.message, pid),
        "mrn": pid.get("3.1"),
        "assigning_authority": pid.get("3.4"),
        "identifiers": _identifiers(ctx, pid, 3) or None,
        "family_name": pid.get("5.1.1") or pid.get("5.1"),
        "given_name": pid.get("5.2"),
        "birth_date": iso_date(birth),
        "birth_year": int(birth[:4]) if birth and birth[:4].isdigit() else None,
        "sex": sex,
        "sex_source": sex_source,
        "administrative_gender": gender,
        "street": pid.get("11.1.1") or pid.get("11.1"),
        "city": pid.get("11.3"),
        "postal_code": pid.get("11.5"),
        "country": pid.get("11.6"),
        "phone": pid.get("13.1"),
        "national_id": pid.get("19"),
        "marital_status_source": marital,
        "marital_status": ctx.terms.marital(marital),
        "death_time": ctx.utc(pid.get("29.1")),
        "deceased": yes_no(pid.get("30")),
        "trigger_event": ctx.trigger,
    }


def _identifiers(ctx: Context, segment: Segment, number: int) -> list[dict[str, Any]]:
    found = []
    for rep in range(1, repetitions(ctx.message, segment, number) + 1):
        ident = segment.get(f"{number}[{rep}].1")
        if not ident:
            continue
        found.append(
            {
                "id": ident,
                "assigning_authority": segment.get(f"{number}[{rep}].4"),
                "type_code": segment.get(f"{number}[{rep}].5"),
            }
        )
    return found


def _key(ctx: Context, segment: Segment) -> str | None:
    """Patient key from the first identifier of a PID (field 3) or MRG (field 1), built like
    schemas.keys.patient_key."""
    number = 3 if segment.name == "PID" else 1
    ident = segment.get(f"{number}.1")
    if not ident:
        return None
    return join_key(ctx.feed, segment.get(f"{number}.4") or "", ident)
