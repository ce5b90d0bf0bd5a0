"""Result mappers: ORC/OBR -> Order; OBX with its ORC/OBR context and NTE -> Observation."""

from __future__ import annotations

from typing import Any

from hl7bus.hl7v2 import Segment
from hl7bus.schemas.keys import join_key
from hl7bus.streams.mapping import Context, Event, as_int, every_repetition, joined, repetitions
from hl7bus.streams.normalize import numeric_with_comparator, reference_range

_CODED = frozenset({"CE", "CWE", "CNE"})
_DATES = frozenset({"DT", "DTM", "TS"})
_CANCELLED = frozenset({"X", "D"})


def orders(ctx: Context) -> list[Event]:
    """One Order per OBR (with the ORC before it), and one per ORC that has no OBR.

    NTE segments right after an OBR (or an ORC without OBR) are the order's notes.
    """
    found: list[tuple[dict[str, Any], list[str | None]]] = []
    orc: Segment | None = None
    orc_alone = False  # the last ORC has no OBR yet
    orc_notes: list[str | None] = []
    notes: list[str | None] | None = None  # where NTE segments go now

    for segment in ctx.message.segments():
        name = segment.name
        if name == "ORC":
            if orc_alone and orc is not None:
                found.append((_order(ctx, orc, None), orc_notes))
            orc, orc_alone, orc_notes = segment, True, []
            notes = orc_notes
        elif name == "OBR":
            found.append((_order(ctx, orc, segment), list(orc_notes) if orc_alone else []))
            orc_alone, notes = False, found[-1][1]
        elif name == "NTE":
            if notes is not None:
                notes.append(every_repetition(ctx.message, segment, 3))
        else:
            notes = None
    if orc_alone and orc is not None:
        found.append((_order(ctx, orc, None), orc_notes))
    events = []
    for record, order_notes in found:
        record["notes"] = joined(order_notes)
        events.append(ctx.event("Order", record))
    return events


def _order(ctx: Context, orc: Segment | None, obr: Segment | None) -> dict[str, Any]:
    anchor = obr if obr is not None else orc
    assert anchor is not None

    def pick(orc_path: str, obr_path: str) -> str | None:
        value = orc.get(orc_path) if orc is not None else None
        return value or (obr.get(obr_path) if obr is not None else None)

    def obr_get(path: str) -> str | None:
        return obr.get(path) if obr is not None else None

    placer, filler = pick("2.1", "2.1"), pick("3.1", "3.1")
    when = ctx.event_instant(orc.get("9.1") if orc is not None else None, obr_get("7.1"))
    record = ctx.common("Order", anchor.index, when)
    observed = ctx.utc(obr_get("7.1"))
    coded = (
        ctx.coded(obr, 4, observed or (when.utc if when else None))
        if obr is not None
        else dict.fromkeys(("code", "code_text", "code_system", "standard_code", "standard_system"))
    )
    record.update(
        order_key=ctx.order_key(placer, filler),
        encounter_key=ctx.encounter_key(),
        order_control=orc.get("1") if orc is not None else None,
        placer_order_number=placer,
        filler_order_number=filler,
        order_status=orc.get("5") if orc is not None else None,
        set_id=as_int(obr_get("1")),
        priority=obr_get("5") or (orc.get("7.6") if orc is not None else None),
        observation_time=observed,
        specimen_received_time=ctx.utc(obr_get("14.1")),
        results_time=ctx.utc(obr_get("22.1")),
        diagnostic_service=obr_get("24"),
        result_status=obr_get("25"),
        ordering_provider_id=pick("12.1", "16.1"),
        ordering_provider_family_name=pick("12.2.1", "16.2.1") or pick("12.2", "16.2"),
        ordering_provider_given_name=pick("12.3", "16.3"),
        **coded,
    )
    return record


def observations(ctx: Context) -> list[Event]:
    events: list[Event] = []
    orc: Segment | None = None
    obr: Segment | None = None
    last: dict[str, Any] | None = None
    notes: list[str | None] = []
    group: tuple[str | None, ...] | None = None  # _group(orc, obr), read at its first OBX

    def flush() -> None:
        if last is not None:
            last["notes"] = joined(notes)
            events.append(ctx.event("Observation", last))

    for segment in ctx.message.segments():
        name = segment.name
        if name == "OBX":
            flush()
            if group is None:
                group = _group(orc, obr)
            last, notes = _observation(ctx, group, segment), []
            continue
        if name == "NTE":
            if last is not None:
                notes.append(every_repetition(ctx.message, segment, 3))
            continue
        flush()
        last, notes = None, []
        if name == "ORC":
            orc, obr, group = segment, None, None
        elif name == "OBR":
            obr, group = segment, None
    flush()
    return events


def _group(orc: Segment | None, obr: Segment | None) -> tuple[str | None, ...]:
    """What every OBX of one ORC/OBR group reads of them: placer, filler, OBR-7.1, OBR-4.1..3."""

    def order(orc_path: str, obr_path: str) -> str | None:
        value = orc.get(orc_path) if orc is not None else None
        return value or (obr.get(obr_path) if obr is not None else None)

    if obr is None:
        return order("2.1", "2.1"), order("3.1", "3.1"), None, None, None, None
    return (
        order("2.1", "2.1"),
        order("3.1", "3.1"),
        obr.get("7.1"),
        obr.get("4.1"),
        obr.get("4.2"),
        obr.get("4.3"),
    )


def _observation(ctx: Context, group: tuple[str | None, ...], obx: Segment) -> dict[str, Any]:
    placer, filler, obr_time, order_code, order_code_text, order_code_system = group
    when = ctx.first_instant(obx.get("14.1"), obr_time) or ctx.message_time
    record = ctx.common("Observation", obx.index, when)
    value_type = obx.get("2")
    value = _value_text(ctx, obx)
    numeric_source = value
    if value_type == "SN":
        # SN is comparator^num1^separator^num2; a plain comparator and number is common.
        numeric_source = (obx.get("5.1") or "") + (obx.get("5.2") or "")
        if obx.get("5.3"):  # a range or ratio (1^:^2, ^10^-^20): no single number
            numeric_source = None
    numeric, comparator = numeric_with_comparator(numeric_source)
    if value_type in _CODED or value_type in _DATES:
        numeric, comparator = None, None
    units = obx.get("6.1")
    ucum = ctx.terms.ucum(units)
    ref = obx.get("7")
    bounds = reference_range(ref)
    code = obx.get("3.1")
    sub_id = obx.get("4")
    status = obx.get("11")
    number = filler or placer
    coded = value_type in _CODED
    record.update(
        order_code=order_code,
        order_code_text=order_code_text,
        order_code_system=order_code_system,
        order_key=ctx.order_key(placer, filler),
        result_key=join_key(ctx.feed, number, code or "", sub_id or "") if number else None,
        encounter_key=ctx.encounter_key(),
        set_id=as_int(obx.get("1")),
        value_type=value_type,
        sub_id=sub_id,
        value_numeric=numeric,
        comparator=comparator,
        value_text=value,
        value_code=obx.get("5.1") if coded else None,
        value_code_text=obx.get("5.2") if coded else None,
        value_code_system=obx.get("5.3") if coded else None,
        value_time=ctx.utc(obx.get("5.1")) if value_type in _DATES else None,
        units=units,
        units_ucum=ucum[0] if ucum else None,
        value_numeric_ucum=numeric * ucum[1] if ucum and numeric is not None else None,
        reference_range=ref,
        reference_low=bounds.low,
        reference_high=bounds.high,
        reference_low_comparator=bounds.low_comparator,
        reference_high_comparator=bounds.high_comparator,
        abnormal_flags=_abnormal_flags(ctx, obx),
        result_status=status,
        is_correction=status == "C" if status else None,
        is_cancel=status in _CANCELLED if status else None,
        observation_method=obx.get("17.1"),
        analysis_time=ctx.utc(obx.get("19.1")),
        **ctx.coded(obx, 3, when.utc if when else None),
    )
    return record


def _value_text(ctx: Context, obx: Segment) -> str | None:
    """OBX-5 as text: repetitions joined by newlines (TX/FT send one line per repetition)."""
    count = repetitions(ctx.message, obx, 5)
    if count <= 1:
        return obx.get("5")
    return joined([obx.get(f"5[{r}]") for r in range(1, count + 1)])


def _abnormal_flags(ctx: Context, obx: Segment) -> str | None:
    count = repetitions(ctx.message, obx, 8)
    if count <= 1:
        return obx.get("8")
    return joined([obx.get(f"8[{r}]") for r in range(1, count + 1)], "~")
