"""The OMOP mapping of every research event type (pure: no database).

A small dict stands in for the vocabulary (the real one is loaded from Athena files and tested
with its loader); without it, every code is concept 0 and the source value is kept.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
import warehouse_events as ev

from hl7bus.connectors.warehouse import constants as c
from hl7bus.connectors.warehouse.changes import (
    CancelTransfer,
    CancelVisit,
    Change,
    Delete,
    EventChanges,
    MappingError,
    MergePersons,
    Ref,
    Row,
)
from hl7bus.connectors.warehouse.concepts import UNMAPPED, Mapped, NoVocabulary
from hl7bus.connectors.warehouse.omop import ResultStatuses, map_event

SEOUL_T0 = datetime(2025, 3, 4, 9, 30)  # ev.T0 on the sender's clock (+0900)


class DictLookup:
    """A vocabulary of a few concepts, for the tests."""

    def __init__(self, concepts: dict[tuple[str, str], Mapped]) -> None:
        self.concepts = concepts

    def map(self, system: str | None, code: str | None) -> Mapped:
        return self.concepts.get((system or "", code or ""), UNMAPPED)


VOCABULARY = DictLookup(
    {
        ("LOINC", "2160-0"): Mapped(3016723, 3016723, "Measurement"),
        ("LOINC", "8302-2"): Mapped(3036277, 3036277, "Measurement"),
        ("LOINC", "72166-2"): Mapped(3004518, 3004518, "Observation"),
        ("UCUM", "mg/dL"): Mapped(8840, 8840, "Unit"),
        ("SCT", "260385009"): Mapped(9189, 4132135, "Meas Value"),
        ("HL70001", "F"): Mapped(8532, 0, "Gender"),
        ("HL70004", "E"): Mapped(9203, 0, "Visit"),
        ("KCD-8", "J18.9"): Mapped(255848, 45543224, "Condition"),
        ("ICD-10", "Z88.0"): Mapped(4188027, 45548710, "Observation"),
        ("RxNorm", "197361"): Mapped(19019073, 19019073, "Drug"),
        ("RxNorm", "70618"): Mapped(1728416, 1728416, "Drug"),
        ("SNOMED-CT", "416098002"): Mapped(439224, 439224, "Observation"),
        ("SNOMED-CT", "294505008"): Mapped(4193287, 4193287, "Observation"),
        ("LOINC", "36643-5"): Mapped(3026939, 3026939, "Procedure"),
    }
)


def rows(changes: EventChanges, table: str) -> list[Row]:
    return [ch for ch in changes.changes if isinstance(ch, Row) and ch.table == table]


def only_row(changes: EventChanges, table: str) -> Row:
    [row] = rows(changes, table)
    return row


def mapped(event: dict[str, Any], vocabulary: Any = None, **statuses: Any) -> EventChanges:
    event_type, record = ev.decoded(event)
    return map_event(event_type, record, vocabulary or NoVocabulary(), ResultStatuses(**statuses))


# -- results ----------------------------------------------------------------------------------

RESULT_CASES = [
    pytest.param(
        ev.observation(),
        None,
        "measurement",
        {
            "measurement_concept_id": 0,
            "measurement_source_value": "2160-0",
            "measurement_source_concept_id": 0,
            "value_as_number": 1.17,
            "operator_concept_id": None,
            "unit_concept_id": 0,
            "unit_source_value": "mg/dL",
            "range_low": 0.7,
            "range_high": 1.3,
            "measurement_date": SEOUL_T0.date(),
            "measurement_datetime": SEOUL_T0,
            "measurement_type_concept_id": c.EHR,
        },
        id="numeric LOINC result, no vocabulary",
    ),
    pytest.param(
        ev.observation(),
        VOCABULARY,
        "measurement",
        {
            "measurement_concept_id": 3016723,
            "measurement_source_concept_id": 3016723,
            "unit_concept_id": 8840,
            "unit_source_concept_id": 8840,
        },
        id="numeric LOINC result, mapped with its UCUM unit",
    ),
    pytest.param(
        ev.observation(
            value_type="SN",
            value_numeric=0.5,
            comparator="<",
            value_text="<0.5",
            code="1988-5",
            standard_code="1988-5",
            units="mg/L",
            units_ucum="mg/L",
            value_numeric_ucum=0.5,
            reference_low=None,
            reference_high=5.0,
        ),
        None,
        "measurement",
        {"value_as_number": 0.5, "operator_concept_id": 4171756, "range_high": 5.0},
        id="less-than result gets the < operator",
    ),
    pytest.param(
        ev.observation(
            value_type="SN",
            value_numeric=100.0,
            value_numeric_ucum=100.0,
            comparator=">=",
            value_text=">=100",
        ),
        None,
        "measurement",
        {"value_as_number": 100.0, "operator_concept_id": 4171755},
        id="greater-or-equal result",
    ),
    pytest.param(
        ev.observation(
            value_type="CWE",
            value_numeric=None,
            value_numeric_ucum=None,
            value_text="Negative",
            code="5778-6",
            standard_code="5778-6",
            units=None,
            units_ucum=None,
            value_code="260385009",
            value_code_text="Negative",
            value_code_system="SCT",
            reference_low=None,
            reference_high=None,
        ),
        VOCABULARY,
        "measurement",
        {"value_as_concept_id": 9189, "value_as_number": None, "value_source_value": "Negative"},
        id="coded result: value_as_concept_id",
    ),
    pytest.param(
        ev.observation(
            value_type="ST",
            value_numeric=None,
            value_numeric_ucum=None,
            value_text="Negative",
            code="HBSAG",
            code_system="L",
            standard_code=None,
            standard_system=None,
            units=None,
            units_ucum=None,
            reference_low=None,
            reference_high=None,
        ),
        None,
        "observation",
        {
            "observation_concept_id": 0,
            "value_as_string": "Negative",
            "value_as_concept_id": None,
            "observation_source_value": "HBSAG",
        },
        id="local text result, unmapped: observation",
    ),
    pytest.param(
        ev.observation(
            code="72166-2",
            standard_code="72166-2",
            value_type="CWE",
            value_numeric=None,
            value_numeric_ucum=None,
            value_text="Never smoker",
            units=None,
            units_ucum=None,
            value_code="266919005",
            value_code_system="SCT",
        ),
        VOCABULARY,
        "observation",
        {"observation_concept_id": 3004518, "value_as_concept_id": 0},
        id="LOINC code of the Observation domain: observation",
    ),
    pytest.param(
        ev.observation(
            value_type="NM",
            value_numeric=12.6,
            value_numeric_ucum=12.6,
            units="g/dl",
            units_ucum="g/dL",
            code="718-7",
            standard_code="718-7",
            reference_low=13.0,
            reference_high=None,
            result_status=None,
            event_time_offset=None,
        ),
        None,
        "measurement",
        {
            "value_as_number": 12.6,
            "unit_source_value": "g/dl",
            "range_low": 13.0,
            "measurement_datetime": ev.T0.replace(tzinfo=None),
        },
        id="no status loads; no offset: UTC wall clock",
    ),
]


@pytest.mark.parametrize(("event", "vocabulary", "table", "expected"), RESULT_CASES)
def test_results(
    event: dict[str, Any], vocabulary: Any, table: str, expected: dict[str, Any]
) -> None:
    changes = mapped(event, vocabulary)
    row = only_row(changes, table)
    assert row.ref == Ref("result", event["result_key"])
    for column, value in expected.items():
        assert row.values[column] == value, column
    assert row.values["person_id"] == Ref("person", event["patient_key"])
    assert row.values["visit_occurrence_id"] == Ref("visit", event["encounter_key"])


@pytest.mark.parametrize("status", ["D", "W", "X"])
def test_deleted_results_delete_from_both_tables(status: str) -> None:
    event = ev.observation(result_status=status)
    [change] = mapped(event).changes
    assert change == Delete(("measurement", "observation"), Ref("result", event["result_key"]))


def test_preliminary_results_load_only_when_configured() -> None:
    event = ev.observation(result_status="P")
    skipped = mapped(event)
    assert skipped.changes == () and skipped.skipped == "result_status"
    loaded = mapped(event, load=frozenset({"F", "P"}))
    assert only_row(loaded, "measurement").values["value_as_number"] == 1.17


def test_a_correction_replaces_and_clears_the_other_table() -> None:
    changes = mapped(ev.observation(result_status="C", value_numeric=1.3, value_numeric_ucum=1.3))
    delete, row = changes.changes
    assert isinstance(delete, Delete) and delete.tables == ("observation",)
    assert isinstance(row, Row) and row.values["value_as_number"] == 1.3


def test_a_result_without_result_key_is_keyed_by_its_event() -> None:
    event = ev.observation(result_key=None)
    assert only_row(mapped(event), "measurement").ref == Ref("result", event["event_id"])


# -- person, location, death ------------------------------------------------------------------


def test_patient_makes_person_and_location() -> None:
    event = ev.patient()
    changes = mapped(event)
    person = only_row(changes, "person")
    assert person.merge and person.ref == Ref("person", event["patient_key"])
    assert person.values == {
        "person_source_value": event["patient_key"],
        "gender_concept_id": c.GENDER["M"],
        "gender_source_value": "M",
        "gender_source_concept_id": 0,
        "year_of_birth": 1980,
        "location_id": Ref("location", "KOR|045"),
    }
    assert person.defaults == {
        "gender_concept_id": 0,
        "race_concept_id": 0,
        "ethnicity_concept_id": 0,
    }
    location = only_row(changes, "location")
    assert location.values["zip"] == "045"
    assert rows(changes, "death") == []


@pytest.mark.parametrize(
    ("fields", "vocabulary", "gender"),
    [
        ({"sex": "F", "sex_source": "여자"}, VOCABULARY, 8532),
        ({"sex": "F", "sex_source": "F"}, None, 8532),
        ({"sex": "U", "sex_source": "U"}, None, 0),
    ],
)
def test_gender(fields: dict[str, Any], vocabulary: Any, gender: int) -> None:
    person = only_row(mapped(ev.patient(**fields), vocabulary), "person")
    assert person.values["gender_concept_id"] == gender
    assert person.values["gender_source_value"] == fields["sex_source"]


def test_an_update_without_demographics_changes_only_what_it_has() -> None:
    person = only_row(
        mapped(ev.patient(sex=None, birth_year=None, postal_code=None, trigger_event="A08")),
        "person",
    )
    assert set(person.values) == {"person_source_value"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"death_time": ev.T0 + timedelta(days=3), "deceased": True},
            (SEOUL_T0.date() + timedelta(days=3), SEOUL_T0 + timedelta(days=3)),
        ),
        ({"deceased": True}, (SEOUL_T0.date(), None)),
    ],
)
def test_death(fields: dict[str, Any], expected: tuple[date, datetime | None]) -> None:
    death = only_row(mapped(ev.patient(**fields)), "death")
    assert (death.values["death_date"], death.values["death_datetime"]) == expected
    assert death.ref.kind == "person"


def test_pid30_no_withdraws_the_death_row() -> None:
    event = ev.patient(deceased=False)
    deletes = [ch for ch in mapped(event).changes if isinstance(ch, Delete)]
    assert deletes == [Delete(("death",), Ref("person", event["patient_key"]))]


def test_a40_merges_the_prior_patient_into_the_survivor() -> None:
    prior = ev.pseudonym("patient-old")
    event = ev.patient(trigger_event="A40", merged_from_patient_key=prior)
    last: Change = mapped(event).changes[-1]
    assert last == MergePersons(Ref("person", prior), Ref("person", event["patient_key"]))


@pytest.mark.parametrize("event_type", ["Patient", "Observation", "Encounter", "Document"])
def test_an_event_without_patient_key_cannot_be_mapped(event_type: str) -> None:
    builders = {
        "Patient": ev.patient,
        "Observation": ev.observation,
        "Encounter": ev.encounter,
        "Document": ev.document,
    }
    with pytest.raises(MappingError) as caught:
        mapped(builders[event_type](patient_key=None))
    assert caught.value.code == "no_patient_key"


# -- visits -----------------------------------------------------------------------------------

VISIT_CASES = [
    ("admit", {"patient_class_source": "I"}, None, 9201, "first"),
    ("register", {"patient_class_source": "O", "admit_time": None}, None, 9202, "first"),
    ("admit", {"patient_class_source": "E"}, VOCABULARY, 9203, "first"),
    (
        "transfer",
        {"location_point_of_care": "ICU", "prior_location_point_of_care": "71W"},
        None,
        9201,
        "event",
    ),
    ("update", {}, None, 9201, None),
    ("discharge", {"discharge_time": ev.T0 + timedelta(days=5)}, None, 9201, None),
    ("admit", {"patient_class_source": "R"}, None, 0, "first"),
]


@pytest.mark.parametrize(("action", "fields", "vocabulary", "concept", "detail"), VISIT_CASES)
def test_encounters(
    action: str, fields: dict[str, Any], vocabulary: Any, concept: int, detail: str | None
) -> None:
    event = ev.encounter(action, **fields)
    changes = mapped(event, vocabulary)
    visit = only_row(changes, "visit_occurrence")
    assert visit.merge and visit.ref == Ref("visit", event["encounter_key"])
    assert visit.values["visit_concept_id"] == concept
    assert visit.values["visit_source_value"] == event["patient_class_source"]
    moment = SEOUL_T0
    if event.get("admit_time"):
        assert visit.values["visit_start_datetime"] == moment
    else:
        assert "visit_start_datetime" not in visit.values
    assert visit.defaults["visit_start_date"] == moment.date()
    assert visit.latest == {"visit_end_date": moment.date()}
    if event.get("discharge_time"):
        assert visit.values["visit_end_datetime"] == moment + timedelta(days=5)
    details = rows(changes, "visit_detail")
    if detail is None:
        assert details == []
    else:
        [row] = details
        key = f"{event['encounter_key']}|first" if detail == "first" else event["event_id"]
        assert row.ref == Ref("visit_detail", key)
        assert row.values["visit_detail_source_value"] == event["location_point_of_care"]
        assert row.values["visit_occurrence_id"] == visit.ref


def test_a11_cancels_and_a12_cancels_the_transfer() -> None:
    cancel = ev.encounter("cancel_admit")
    assert mapped(cancel).changes == (CancelVisit(Ref("visit", cancel["encounter_key"])),)
    undo = ev.encounter(
        "cancel_transfer", location_point_of_care="71W", prior_location_point_of_care="ICU"
    )
    assert mapped(undo).changes == (
        CancelTransfer(Ref("visit", undo["encounter_key"]), "ICU", "71W"),
    )


def test_a13_reopens_the_visit() -> None:
    visit = only_row(
        mapped(ev.encounter("cancel_discharge", discharge_disposition="01")), "visit_occurrence"
    )
    assert visit.values["visit_end_datetime"] is None
    assert visit.values["discharged_to_concept_id"] is None
    assert "visit_end_date" not in visit.values


# -- orders, diagnoses, procedures, medications, allergies, documents --------------------------

ORDER_CASES = [
    (ev.order(), None, "specimen", None),
    (ev.order(observation_time=None), None, None, "order_not_collected"),
    (
        ev.order(
            code="36643-5",
            standard_code="36643-5",
            diagnostic_service="RAD",
            order_status="CM",
            result_status=None,
        ),
        None,
        "procedure_occurrence",
        None,
    ),
    (
        ev.order(
            code="36643-5",
            standard_code="36643-5",
            diagnostic_service="RAD",
            order_status="SC",
            result_status="O",
        ),
        None,
        None,
        "order_not_done",
    ),
    (
        ev.order(
            code="36643-5", standard_code="36643-5", diagnostic_service=None, result_status="F"
        ),
        VOCABULARY,
        "procedure_occurrence",
        None,
    ),
    (ev.order(diagnostic_service="PHR"), None, None, "order_no_table"),
]


@pytest.mark.parametrize(("event", "vocabulary", "table", "skipped"), ORDER_CASES)
def test_orders(
    event: dict[str, Any], vocabulary: Any, table: str | None, skipped: str | None
) -> None:
    changes = mapped(event, vocabulary)
    assert changes.skipped == skipped
    if table is None:
        assert changes.changes == ()
        return
    row = only_row(changes, table)
    assert row.ref == Ref("order", event["order_key"])
    day = "specimen_date" if table == "specimen" else "procedure_date"
    assert row.values[day] == SEOUL_T0.date()


@pytest.mark.parametrize(("control", "status"), [("CA", "CA"), ("OC", None), ("XO", "CA")])
def test_cancelled_orders_withdraw_their_fact(control: str, status: str | None) -> None:
    event = ev.order(order_control=control, order_status=status)
    assert mapped(event).changes == (
        Delete(("specimen", "procedure_occurrence"), Ref("order", event["order_key"])),
    )


def test_diagnosis_is_a_condition_keyed_by_visit_and_code() -> None:
    event = ev.diagnosis()
    changes = mapped(event, VOCABULARY)
    row = only_row(changes, "condition_occurrence")
    assert row.ref == Ref("condition", f"{event['encounter_key']}|KCD-8|J18.9")
    assert row.values["condition_concept_id"] == 255848
    assert row.values["condition_source_concept_id"] == 45543224
    assert row.values["condition_source_value"] == "J18.9"
    assert row.values["condition_status_concept_id"] == c.PRIMARY_DIAGNOSIS
    assert row.values["condition_status_source_value"] == "A"
    assert row.values["condition_start_date"] == SEOUL_T0.date()
    # The same diagnosis in a later message of the stay is the same row.
    again = mapped(ev.diagnosis(diagnosis_type="F", priority="2"), VOCABULARY)
    assert only_row(again, "condition_occurrence").ref == row.ref
    assert only_row(again, "condition_occurrence").values["condition_status_concept_id"] == (
        c.SECONDARY_DIAGNOSIS
    )


def test_a_diagnosis_code_of_the_observation_domain_is_an_observation() -> None:
    changes = mapped(
        ev.diagnosis(code="Z88.0", standard_code="Z88.0", standard_system="ICD-10"), VOCABULARY
    )
    assert only_row(changes, "observation").values["observation_concept_id"] == 4188027
    [delete] = [ch for ch in changes.changes if isinstance(ch, Delete)]
    assert "condition_occurrence" in delete.tables and "observation" not in delete.tables


def test_deleted_diagnosis_and_procedure() -> None:
    for event in (ev.diagnosis(action_code="D"), ev.procedure(action_code="D")):
        [change] = mapped(event).changes
        assert isinstance(change, Delete)


def test_procedure() -> None:
    event = ev.procedure()
    row = only_row(mapped(event), "procedure_occurrence")
    assert row.values["procedure_source_value"] == "0JH60DZ"
    assert row.values["procedure_concept_id"] == 0
    assert row.values["procedure_datetime"] == SEOUL_T0
    assert row.ref.key.startswith(event["encounter_key"])


MEDICATION_CASES = [
    (ev.medication(), c.EHR_ADMINISTRATION, 5.0, None),
    (
        ev.medication(
            kind="immunization",
            message_type="VXU^V04",
            code="08",
            code_system="CVX",
            standard_code="08",
            standard_system="CVX",
            dose_amount=0.5,
            dose_units="mL",
            lot_number="LOT123",
        ),
        c.EHR_ADMINISTRATION,
        0.5,
        None,
    ),
    (
        ev.medication(
            kind="order",
            source_segment="RXE",
            order_key=ev.pseudonym("rx-1"),
            order_control="NW",
            dispense_amount=30.0,
            refills=2,
            start_time=None,
        ),
        c.EHR,
        30.0,
        None,
    ),
    (
        ev.medication(
            kind="order",
            source_segment="RXE",
            order_key=ev.pseudonym("rx-1"),
            order_control="DC",
            start_time=None,
        ),
        c.EHR,
        5.0,
        "discontinued",
    ),
]


@pytest.mark.parametrize(("event", "type_concept", "quantity", "stop"), MEDICATION_CASES)
def test_medications(
    event: dict[str, Any], type_concept: int, quantity: float, stop: str | None
) -> None:
    row = only_row(mapped(event, VOCABULARY), "drug_exposure")
    assert row.values["drug_type_concept_id"] == type_concept
    assert row.values["quantity"] == quantity
    assert row.values["stop_reason"] == stop
    assert row.values["drug_exposure_start_date"] == SEOUL_T0.date()
    assert row.values["drug_exposure_end_date"] == SEOUL_T0.date()
    assert row.values["drug_source_value"] == event["code"]


def test_mapped_medication_and_its_order_key() -> None:
    event = ev.medication(kind="order", source_segment="RXE", order_key=ev.pseudonym("rx-2"))
    row = only_row(mapped(event, VOCABULARY), "drug_exposure")
    assert row.values["drug_concept_id"] == 19019073
    assert row.ref.key == f"{event['order_key']}|RXE"


@pytest.mark.parametrize(
    "fields", [{"completion_status": "RE"}, {"completion_status": "NA"}, {"action_code": "D"}]
)
def test_medication_not_given_is_no_exposure(fields: dict[str, Any]) -> None:
    [change] = mapped(ev.medication(**fields)).changes
    assert isinstance(change, Delete) and change.tables == ("drug_exposure",)


@pytest.mark.parametrize(
    ("event", "vocabulary", "concept", "value"),
    [
        (ev.allergy(), None, 0, 0),
        (ev.allergy(), VOCABULARY, 439224, 1728416),
        (
            ev.allergy(
                allergen_code="294505008",
                allergen_standard_code="294505008",
                allergen_standard_system="SNOMED-CT",
            ),
            VOCABULARY,
            4193287,
            None,
        ),
    ],
)
def test_allergies_are_observations(
    event: dict[str, Any], vocabulary: Any, concept: int, value: int | None
) -> None:
    row = only_row(mapped(event, vocabulary), "observation")
    assert row.values["observation_concept_id"] == concept
    assert row.values["value_as_concept_id"] == value
    assert row.values["observation_source_value"] == event["allergen_code"]
    assert row.values["value_as_string"] == "Hives; Rash"
    assert row.values["qualifier_source_value"] == "SV"
    assert row.ref.kind == "allergy"


def test_document_is_a_note_of_its_scrubbed_text() -> None:
    event = ev.document()
    row = only_row(mapped(event), "note")
    assert row.ref == Ref("note", event["document_key"])
    assert row.values["note_text"] == event["text"]
    assert row.values["note_date"] == SEOUL_T0.date()
    assert row.values["encoding_concept_id"] == c.UTF8
    assert row.values["note_title"] == "DS"
    cancelled = mapped(ev.document(availability_status="CA"))
    assert cancelled.changes == (Delete(("note",), Ref("note", event["document_key"])),)


def test_generic_events_have_no_table() -> None:
    changes = map_event("Generic", {"event_id": "g1", "patient_key": "p"}, NoVocabulary())
    assert changes.changes == () and changes.skipped == "no_table"


def test_only_the_patient_pseudonym_reaches_a_column() -> None:
    """person_source_value holds the pseudonym; no other mapped value carries a source key."""
    events = [
        ev.patient(),
        ev.encounter(),
        ev.observation(),
        ev.order(),
        ev.diagnosis(),
        ev.procedure(),
        ev.medication(),
        ev.allergy(),
        ev.document(),
    ]
    keys = {"patient_key", "encounter_key", "order_key", "result_key", "document_key"}
    for event in events:
        secrets_ = {event[k] for k in keys if event.get(k)}
        for change in mapped(event).changes:
            if not isinstance(change, Row):
                continue
            for column, value in change.values.items():
                if column == "person_source_value":
                    continue
                assert not (isinstance(value, str) and value in secrets_), column
