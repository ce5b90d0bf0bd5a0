"""Research events -> MEDS rows (connectors/lake/mapping.py): codes, values, units, times, and
the events that remove rows or cannot become any."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import warehouse_events as ev

from hl7bus.connectors.lake.mapping import (
    BIRTH,
    DEATH,
    Fact,
    LakeChanges,
    MedsRow,
    code_of,
    map_event,
)
from hl7bus.connectors.warehouse.changes import PERSON, MappingError, Ref
from hl7bus.schemas import codec

# T0 is 00:30 UTC; the events' offset is +0900: MEDS times are the source's wall clock.
LOCAL_T0 = datetime(2025, 3, 4, 9, 30)


def changes(event: dict[str, Any]) -> LakeChanges:
    return map_event(*ev.decoded(event))


def only_row(result: LakeChanges) -> MedsRow:
    (fact,) = result.facts
    (row,) = fact.rows
    return row


def test_lab_result_is_a_loinc_row_with_its_ucum_value_and_unit() -> None:
    result = changes(ev.observation(code="2345-7", standard_code="2345-7", value_numeric=95.0))
    row = only_row(result)
    assert row.code == "LOINC/2345-7" and row.time == LOCAL_T0
    # value_numeric_ucum wins over the value as sent (the builder's 1.17 mg/dL).
    assert (row.numeric_value, row.unit, row.text_value) == (1.17, "mg/dL", None)
    assert row.description == "Creatinine"
    assert result.person == Ref(PERSON, ev.pseudonym("patient-1"))


def test_result_without_ucum_keeps_the_sent_unit_and_a_text_result_has_text() -> None:
    row = only_row(changes(ev.observation(units_ucum=None, value_numeric=3.0, units="U/L")))
    assert (row.numeric_value, row.unit) == (3.0, "U/L")
    text = only_row(
        changes(ev.observation(value_numeric=None, value_numeric_ucum=None, value_text="positive"))
    )
    assert (text.numeric_value, text.text_value) == (None, "positive")


@pytest.mark.parametrize("status", ["D", "W", "X"])
def test_deleted_result_empties_its_fact(status: str) -> None:
    (fact,) = changes(ev.observation(result_status=status)).facts
    assert fact.rows == ()


def test_correction_replaces_the_same_fact_and_preliminary_is_skipped() -> None:
    first = changes(ev.observation()).facts[0]
    corrected = changes(ev.observation(result_status="C", value_numeric_ucum=2.0)).facts[0]
    assert first.ref == corrected.ref and corrected.rows[0].numeric_value == 2.0
    preliminary = changes(ev.observation(result_status="P"))
    assert preliminary.facts == () and preliminary.skipped == "result_status"


def test_patient_birth_sex_death_and_merge() -> None:
    died = datetime(2025, 3, 5, 1, 0, tzinfo=ev.T0.tzinfo)
    result = changes(ev.patient(death_time=died, merged_from_patient_key=ev.pseudonym("old")))
    rows = {fact.rows[0].code: fact.rows[0] for fact in result.facts if fact.rows}
    assert rows[BIRTH].time == datetime(1980, 1, 1)
    assert rows["GENDER/M"].time is None  # static
    assert rows[DEATH].time == datetime(2025, 3, 5, 10, 0)
    assert result.merged_from == Ref(PERSON, ev.pseudonym("old"))
    # The retired chart's demographics go.
    gone = [fact.ref for fact in result.facts if not fact.rows]
    assert gone == [Ref(kind, ev.pseudonym("old")) for kind in ("birth", "gender", "death")]
    undead = changes(ev.patient(deceased=False))
    assert [fact.rows for fact in undead.facts if fact.ref.kind == "death"] == [()]


def test_visit_start_end_and_cancels() -> None:
    admit = changes(ev.encounter())
    assert [f.rows[0].code for f in admit.facts] == ["VISIT/I"]
    assert admit.facts[0].rows[0].time == LOCAL_T0
    discharge = changes(ev.encounter("discharge", discharge_time=ev.T0, admit_time=None))
    assert [f.rows[0].code for f in discharge.facts] == ["VISIT_END/I"]
    cancelled = changes(ev.encounter("cancel_admit"))
    assert {f.ref.kind for f in cancelled.facts} == {"visit", "visit_end"}
    assert all(f.rows == () for f in cancelled.facts)


def test_diagnosis_procedure_medication_allergy_document_codes() -> None:
    assert only_row(changes(ev.diagnosis())).code == "KCD8/J18.9"
    kcd7 = ev.diagnosis(standard_code="E11.9", standard_system="KCD-7")
    assert only_row(changes(kcd7)).code == "KCD7/E11.9"
    assert only_row(changes(ev.procedure())).code == "ICD10PCS/0JH60DZ"
    drug = only_row(changes(ev.medication()))
    assert (drug.code, drug.numeric_value, drug.unit) == ("RxNorm/197361", 5.0, "mg")
    allergy = only_row(changes(ev.allergy()))
    assert (allergy.code, allergy.text_value) == ("ALLERGY//RxNorm/70618", "Hives; Rash")
    note = only_row(changes(ev.document()))
    assert note.code == "NOTE/DS" and note.text_value is not None
    assert "[NAME]" in note.text_value


def test_code_names() -> None:
    assert code_of("LN", "2345-7") == "LOINC/2345-7"
    assert code_of("KCD-8", "E11.9") == "KCD8/E11.9"
    assert code_of(None, "X1") == "UNKNOWN/X1"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev.observation(event_id=None), "no_event_id"),
        (ev.observation(patient_key=None), "no_patient_key"),
        (ev.observation(event_time=None, received_at=None), "no_event_time"),
        (ev.diagnosis(code=None, standard_code=None), "no_code"),
    ],
)
def test_events_that_cannot_become_rows_name_the_reason(event: dict[str, Any], reason: str) -> None:
    with pytest.raises(MappingError) as raised:
        changes(event)
    assert raised.value.code == reason


def test_unknown_type_is_refused_and_orders_make_no_row() -> None:
    with pytest.raises(MappingError, match="unknown_type"):
        map_event("Invoice", {"event_id": "e1", "patient_key": "p"})
    skipped = changes(ev.order())
    assert skipped.facts == () and skipped.skipped == "no_meds_row"


def test_every_research_type_is_mapped_or_skipped_on_purpose() -> None:
    from hl7bus.connectors.lake import mapping

    known = set(mapping._MAPPERS) | mapping.NO_ROWS
    research_types = set(codec.schemas()) - {"RawMessage"}
    assert len(research_types) == 10 and research_types <= known


def test_fact_rows_are_immutable_data() -> None:
    fact = Fact(Ref("result", "k"), (MedsRow(None, "X/1"),))
    with pytest.raises(AttributeError):
        fact.rows = ()  # type: ignore[misc]
