"""NTE text in mapping (issue 16, point 5): every NTE-3 repetition is kept, and the NTE
segments of ADT messages reach the event they annotate (Patient, Encounter, Allergy,
Diagnosis, Procedure), scrubbed in its research form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hl7bus.streams import deid
from hl7bus.streams.parse import Event, events_from_raw

SEOUL = ZoneInfo("Asia/Seoul")
KEY = deid.Pseudonymizer(b"test-key-0123456789abcdef0123456", "test")


def _events(*segments: str) -> list[Event]:
    envelope = {
        "feed": "test",
        "received_at": datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
        "charset": "utf-8",
        "raw": "\r".join(segments).encode("utf-8"),
    }
    return events_from_raw(envelope, SEOUL)


def _by_type(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        out.setdefault(e.type, []).append(e.record)
    return out


MSH = "MSH|^~\\&|EMR|HOSP|HL7BUS|HOSP|20260305120000+0900||{}|C{}|P|2.5.1|||||KOR|UNICODE UTF-8"
PID = "PID|1||12345678^^^HOSP^MR||김^민준||19500101|M"
PV1 = "PV1|1|I|W5^501^1^HOSP|||||D1234^이^서연^^^^^^HOSP^L"


def test_every_nte3_repetition_is_kept_for_observations_and_orders() -> None:
    events = _by_type(
        _events(
            MSH.format("ORU^R01^ORU_R01", 1),
            PID,
            PV1,
            "ORC|RE|O1^EMR|F1^LIS",
            "OBR|1|O1^EMR|F1^LIS|2823-3^Potassium^LN|||20260305110000+0900",
            "NTE|1|L|order line one~order line two",
            "OBX|1|NM|2823-3^Potassium^LN||5.9|mmol/L|3.5-5.1|H|||F",
            "NTE|1|L|hemolyzed~repeat requested~called ward",
            "NTE|2|L|second note",
        )
    )
    [observation] = events["Observation"]
    assert observation["notes"] == "hemolyzed\nrepeat requested\ncalled ward\nsecond note"
    [order] = events["Order"]
    assert order["notes"] == "order line one\norder line two"


ADT = (
    MSH.format("ADT^A01^ADT_A01", 2),
    "EVN|A01|20260305120000+0900",
    PID,
    "NTE|1|L|보호자 아들 박지훈 010-2345-6789~Wilson's disease 가족력",
    PV1,
    "NTE|1|L|Daughter Emily Carter at bedside",
    "AL1|1|DA|PCN^Penicillin^L|SV|rash",
    "NTE|1|L|2026-03-01 김민준 환자 발진",
    "DG1|1||E83.01^Wilson disease^I10|||F",
    "NTE|1|L|Dr. J. Turner 협진",
    "PR1|1||0DT70ZZ^Resection^ICD10PCS||20260301",
    "NTE|1|L|101동 1203호 거주",
)


def test_adt_notes_reach_the_events_they_annotate() -> None:
    events = _by_type(_events(*ADT))
    [patient] = events["Patient"]
    assert patient["notes"] == "보호자 아들 박지훈 010-2345-6789\nWilson's disease 가족력"
    [encounter] = events["Encounter"]
    assert encounter["notes"] == "Daughter Emily Carter at bedside"
    assert events["Allergy"][0]["notes"] == "2026-03-01 김민준 환자 발진"
    assert events["Diagnosis"][0]["notes"] == "Dr. J. Turner 협진"
    assert events["Procedure"][0]["notes"] == "101동 1203호 거주"


def test_adt_notes_are_scrubbed_in_the_research_form() -> None:
    research: dict[str, str | None] = {}
    for profile in ("kr-pseudonym", "safe-harbor"):
        policy = deid.Policy.load(profile)
        for event in _events(*ADT):
            out = deid.deidentify(event.type, event.record, policy, KEY, True)
            research[f"{profile}.{event.type}"] = out["notes"]
    for profile in ("kr-pseudonym", "safe-harbor"):
        patient = research[f"{profile}.Patient"]
        assert patient is not None
        assert "박지훈" not in patient and "2345" not in patient
        assert "Wilson's disease" in patient and "가족력" in patient
        assert research[f"{profile}.Encounter"] == "Daughter [NAME] at bedside"
        allergy = research[f"{profile}.Allergy"]
        assert allergy is not None and "김민준" not in allergy and "발진" in allergy
        assert research[f"{profile}.Diagnosis"] == "Dr. [NAME] 협진"
        assert research[f"{profile}.Procedure"] == "[ADDRESS] 거주"
