"""Research events for the warehouse tests, shaped as the worker writes them to research.*.

Keys are pseudonyms (32 hex characters, as the keyed HMAC makes them); identifying fields the
kr-pseudonym policy drops are absent. Each builder takes the fields a test cares about and
fills the rest with realistic values. `research_values` runs real messages through the worker's
own steps instead, for tests that want the whole path.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hl7bus.hl7v2 import Message, parse_batch
from hl7bus.schemas import codec
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.steps import deidentify_step, parse_step

GOLDEN = Path(__file__).parent / "golden"
KEY = Pseudonymizer(b"0123456789abcdef0123456789abcdef", "k1")
T0 = datetime(2025, 3, 4, 0, 30, tzinfo=UTC)  # 09:30 in Seoul
_ids = itertools.count(1)


def pseudonym(label: str) -> str:
    """A stand-in for a keyed pseudonym: 32 hex characters."""
    return hashlib.sha256(label.encode()).hexdigest()[:32]


def _event(event_type: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"ev{next(_ids):06d}",
        "patient_key": pseudonym("patient-1"),
        "pseudonym_key_id": "k1",
        "feed": "ward",
        "message_type": "ADT^A01",
        "event_time": T0,
        "event_time_offset": "+0900",
        "event_time_precision": "YYYYMMDDHHMM",
        "received_at": T0 + timedelta(seconds=2),
        "deid_policy": "0" * 16,
        "__type": event_type,
    }
    record.update(fields)
    return record


def patient(**fields: Any) -> dict[str, Any]:
    base = {
        "birth_year": 1980,
        "sex": "M",
        "sex_source": "M",
        "postal_code": "045",
        "country": "KOR",
        "trigger_event": "A04",
    }
    return _event("Patient", **{**base, **fields})


def encounter(action: str = "admit", **fields: Any) -> dict[str, Any]:
    base = {
        "message_type": "ADT^A01",
        "encounter_key": pseudonym("visit-1"),
        "action": action,
        "patient_class_source": "I",
        "patient_class": "IMP",
        "location_point_of_care": "71W",
        "admit_time": T0,
    }
    return _event("Encounter", **{**base, **fields})


def observation(**fields: Any) -> dict[str, Any]:
    base = {
        "message_type": "ORU^R01",
        "result_key": pseudonym("result-1"),
        "order_key": pseudonym("order-1"),
        "encounter_key": pseudonym("visit-1"),
        "value_type": "NM",
        "code": "2160-0",
        "code_text": "Creatinine",
        "code_system": "LN",
        "standard_code": "2160-0",
        "standard_system": "LOINC",
        "value_numeric": 1.17,
        "value_text": "1.17",
        "units": "mg/dL",
        "units_ucum": "mg/dL",
        "value_numeric_ucum": 1.17,
        "reference_range": "0.70-1.30",
        "reference_low": 0.7,
        "reference_high": 1.3,
        "result_status": "F",
    }
    return _event("Observation", **{**base, **fields})


def order(**fields: Any) -> dict[str, Any]:
    base = {
        "message_type": "ORU^R01",
        "order_key": pseudonym("order-1"),
        "encounter_key": pseudonym("visit-1"),
        "order_control": "RE",
        "code": "24323-8",
        "code_system": "LN",
        "standard_code": "24323-8",
        "standard_system": "LOINC",
        "observation_time": T0,
        "diagnostic_service": "CH",
        "result_status": "F",
    }
    return _event("Order", **{**base, **fields})


def diagnosis(**fields: Any) -> dict[str, Any]:
    base = {
        "encounter_key": pseudonym("visit-1"),
        "code": "J18.9",
        "code_system": "KCD",
        "standard_code": "J18.9",
        "standard_system": "KCD-8",
        "diagnosis_time": T0,
        "diagnosis_type": "A",
        "priority": "1",
    }
    return _event("Diagnosis", **{**base, **fields})


def procedure(**fields: Any) -> dict[str, Any]:
    base = {
        "encounter_key": pseudonym("visit-1"),
        "code": "0JH60DZ",
        "code_system": "I10P",
        "procedure_time": T0,
        "minutes": 45,
    }
    return _event("Procedure", **{**base, **fields})


def medication(**fields: Any) -> dict[str, Any]:
    base = {
        "message_type": "RAS^O17",
        "kind": "administration",
        "source_segment": "RXA",
        "encounter_key": pseudonym("visit-1"),
        "code": "197361",
        "code_system": "RXNORM",
        "standard_code": "197361",
        "standard_system": "RxNorm",
        "dose_amount": 5.0,
        "dose_units": "mg",
        "route": "PO",
        "start_time": T0,
        "completion_status": "CP",
    }
    return _event("Medication", **{**base, **fields})


def allergy(**fields: Any) -> dict[str, Any]:
    base = {
        "source_segment": "AL1",
        "allergen_type": "DA",
        "allergen_code": "70618",
        "allergen_code_text": "Penicillin",
        "allergen_code_system": "RXNORM",
        "allergen_standard_code": "70618",
        "allergen_standard_system": "RxNorm",
        "severity": "SV",
        "reaction": "Hives; Rash",
        "onset_time": T0,
    }
    return _event("Allergy", **{**base, **fields})


def document(**fields: Any) -> dict[str, Any]:
    base = {
        "message_type": "MDM^T02",
        "document_key": pseudonym("document-1"),
        "encounter_key": pseudonym("visit-1"),
        "document_type": "DS",
        "activity_time": T0,
        "completion_status": "AU",
        "availability_status": "AV",
        "text": "Patient [NAME] admitted with headache.\nDischarged in good condition.",
    }
    return _event("Document", **{**base, **fields})


def encode(event: dict[str, Any]) -> bytes:
    """The research record as the worker writes it (every schema field present for the
    encoder; absent ones as null)."""
    record = dict(event)
    event_type = record.pop("__type")
    fields = codec.schema(event_type).parsed["fields"]
    return codec.encode(event_type, {f["name"]: record.get(f["name"]) for f in fields})


def decoded(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(event type, record) as the sink sees it after decoding."""
    record = {k: v for k, v in event.items() if k != "__type"}
    return event["__type"], record


def golden_messages() -> list[Message]:
    messages: list[Message] = []
    for path in sorted(GOLDEN.glob("*.hl7")):
        messages.extend(parse_batch(path.read_bytes()))
    return messages


def research_values(messages: Iterable[Message], feed: str = "golden") -> list[bytes]:
    """Research records made from `messages` by the worker's parse and deidentify steps."""
    policy = Policy.load(None)
    values: list[bytes] = []
    for message in messages:
        raw = codec.encode(
            "RawMessage",
            {
                "schema_version": 1,
                "feed": feed,
                "received_at": datetime(2026, 3, 5, 3, 0, tzinfo=UTC),
                "peer": "127.0.0.1:5000",
                "charset": "utf-8",
                "control_id": message.control_id,
                "message_type": message.message_type,
                "patient_key": None,
                "raw": message.to_bytes(),
            },
        )
        for output in parse_step(None, raw, ZoneInfo("Asia/Seoul")):
            if output.topic_id != "events":
                continue
            for research in deidentify_step(output.value, policy, KEY, leak_check=True):
                if research.topic_id.startswith("research."):
                    values.append(research.value)
    return values


def identifiers(messages: Sequence[Message]) -> set[str]:
    """Direct identifiers of the source messages that must never reach a warehouse column."""
    found: set[str] = set()
    for message in messages:
        for path in ("PID-3.1", "PID-5.1", "PID-5.2", "PID-13.1", "PID-19", "PV1-19.1", "TXA-12.1"):
            value = message.get(path)
            if value and len(value) > 3:
                found.add(value)
    return found
