"""Clinical mappers: DG1 -> Diagnosis, AL1/IAM -> Allergy, PR1 -> Procedure,
RXO/RXE/RXA -> Medication (immunizations of VXU included), MDM (TXA + OBX) -> Document."""

from __future__ import annotations

from typing import Any

from hl7bus.hl7v2 import Segment
from hl7bus.schemas.keys import join_key
from hl7bus.streams.mapping import Context, Event, as_int, every_repetition, joined, notes_after
from hl7bus.streams.normalize import to_float


def diagnoses(ctx: Context) -> list[Event]:
    events = []
    for dg1 in ctx.message.segments("DG1"):
        when = ctx.event_instant(dg1.get("5.1"))
        record = ctx.common("Diagnosis", dg1.index, when)
        record.update(
            encounter_key=ctx.encounter_key(),
            set_id=as_int(dg1.get("1")),
            description=dg1.get("4"),
            diagnosis_time=ctx.utc(dg1.get("5.1")),
            diagnosis_type=dg1.get("6"),
            priority=dg1.get("15"),
            clinician_id=dg1.get("16.1"),
            clinician_family_name=dg1.get("16.2.1") or dg1.get("16.2"),
            clinician_given_name=dg1.get("16.3"),
            action_code=dg1.get("21"),
            notes=notes_after(ctx.message, dg1),
            **ctx.coded(dg1, 3, when.utc if when else None),
        )
        events.append(ctx.event("Diagnosis", record))
    return events


def allergies(ctx: Context) -> list[Event]:
    events = []
    for segment in ctx.message.segments():
        if segment.name not in ("AL1", "IAM"):
            continue
        iam = segment.name == "IAM"
        onset = segment.get("11.1" if iam else "6.1")
        when = ctx.event_instant(onset)
        unique = segment.get("7.1") if iam else None
        record = ctx.common("Allergy", segment.index, when)
        record.update(
            allergy_key=join_key(ctx.feed, unique) if unique else None,
            source_segment=segment.name,
            set_id=as_int(segment.get("1")),
            allergen_type=segment.get("2.1"),
            severity=segment.get("4.1"),
            reaction=every_repetition(ctx.message, segment, 5, "; "),
            action_code=segment.get("6.1") if iam else None,
            onset_time=ctx.utc(onset),
            notes=notes_after(ctx.message, segment),
            **ctx.coded(segment, 3, when.utc if when else None, prefix="allergen_"),
        )
        events.append(ctx.event("Allergy", record))
    return events


def procedures(ctx: Context) -> list[Event]:
    events = []
    for pr1 in ctx.message.segments("PR1"):
        when = ctx.event_instant(pr1.get("5.1"))
        record = ctx.common("Procedure", pr1.index, when)
        record.update(
            encounter_key=ctx.encounter_key(),
            set_id=as_int(pr1.get("1")),
            description=pr1.get("4"),
            procedure_time=ctx.utc(pr1.get("5.1")),
            functional_type=pr1.get("6"),
            minutes=as_int(pr1.get("7")),
            anesthesia_minutes=as_int(pr1.get("10")),
            priority=pr1.get("14"),
            surgeon_id=pr1.get("12.1"),
            surgeon_family_name=pr1.get("12.2.1") or pr1.get("12.2"),
            surgeon_given_name=pr1.get("12.3"),
            action_code=pr1.get("20"),
            notes=notes_after(ctx.message, pr1),
            **ctx.coded(pr1, 3, when.utc if when else None),
        )
        events.append(ctx.event("Procedure", record))
    return events


# Segment -> (code field, dose amount, dose units, dosage form); RXR follows for the route.
_MEDICATION_FIELDS = {"RXO": (1, 2, 4, 5), "RXE": (2, 3, 5, 6), "RXA": (5, 6, 7, 8)}


def medications(ctx: Context) -> list[Event]:
    events: list[Event] = []
    orc: Segment | None = None
    last: dict[str, Any] | None = None
    immunization = ctx.message_type.split("^", 1)[0] in ctx.routing.immunization_messages
    for segment in ctx.message.segments():
        name = segment.name
        if name == "ORC":
            orc = segment
        elif name in _MEDICATION_FIELDS:
            last = _medication(ctx, orc, segment, immunization)
            events.append(ctx.event("Medication", last))
        elif name == "RXR" and events and last is not None and events[-1].record["route"] is None:
            events[-1].record["route"] = segment.get("1.1")
    return events


def _medication(
    ctx: Context, orc: Segment | None, segment: Segment, immunization: bool
) -> dict[str, Any]:
    name = segment.name
    code_field, amount, units, form = _MEDICATION_FIELDS[name]
    rxa, rxe = name == "RXA", name == "RXE"
    start = segment.get("3.1") if rxa else None
    when = ctx.first_instant(start, orc.get("9.1") if orc else None) or ctx.message_time
    record = ctx.common("Medication", segment.index, when)
    dose_units = segment.get(f"{units}.1")
    ucum = ctx.terms.ucum(dose_units)
    placer = orc.get("2.1") if orc is not None else None
    filler = orc.get("3.1") if orc is not None else None
    kind = ("immunization" if immunization else "administration") if rxa else "order"
    record.update(
        kind=kind,
        source_segment=name,
        order_key=ctx.order_key(placer, filler),
        encounter_key=ctx.encounter_key(),
        order_control=orc.get("1") if orc is not None else None,
        dose_amount=to_float(segment.get(str(amount))),
        dose_units=dose_units,
        dose_units_ucum=ucum[0] if ucum else None,
        dosage_form=segment.get(f"{form}.1"),
        route=None,
        dispense_amount=to_float(segment.get("10")) if rxe else None,
        dispense_units=segment.get("11.1") if rxe else None,
        refills=as_int(segment.get("12")) if rxe else None,
        start_time=ctx.utc(start),
        end_time=ctx.utc(segment.get("4.1")) if rxa else None,
        lot_number=segment.get("15") if rxa else None,
        manufacturer=segment.get("17.1") if rxa else None,
        completion_status=segment.get("20") if rxa else None,
        action_code=segment.get("21") if rxa else None,
        **ctx.coded(segment, code_field, when.utc if when else None),
    )
    return record


def documents(ctx: Context) -> list[Event]:
    txa = ctx.message.segment("TXA")
    if txa is None:
        return []
    when = ctx.first_instant(txa.get("4.1"), txa.get("6.1")) or ctx.message_time
    record = ctx.common("Document", txa.index, when)
    obx = list(ctx.message.segments("OBX"))
    unique = txa.get("12.1")
    record.update(
        document_key=join_key(ctx.feed, unique) if unique else None,
        encounter_key=ctx.encounter_key(),
        document_type=txa.get("2"),
        content_presentation=txa.get("3"),
        activity_time=ctx.utc(txa.get("4.1")),
        origination_time=ctx.utc(txa.get("6.1")),
        transcription_time=ctx.utc(txa.get("7.1")),
        author_id=txa.get("9.1"),
        author_family_name=txa.get("9.2.1") or txa.get("9.2"),
        author_given_name=txa.get("9.3"),
        unique_document_number=unique,
        parent_document_number=txa.get("13.1"),
        completion_status=txa.get("17"),
        confidentiality_status=txa.get("18"),
        availability_status=txa.get("19"),
        change_reason=txa.get("21"),
        content_type=obx[0].get("2") if obx else None,
        text=joined([every_repetition(ctx.message, segment, 5) for segment in obx]),
    )
    return [ctx.event("Document", record)]
