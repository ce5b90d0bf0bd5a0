"""parse: a RawMessage envelope -> typed clinical events (pure; no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from hl7bus.hl7v2 import Message, parse
from hl7bus.schemas.keys import event_id, patient_key
from hl7bus.streams.normalize import iso_date, numeric_with_comparator, to_utc

PATIENT_TRIGGERS = frozenset({"ADT^A01", "ADT^A04", "ADT^A08"})
OBSERVATION_TRIGGERS = frozenset({"ORU^R01"})


@dataclass(frozen=True)
class Event:
    type: str  # the Avro record name: Patient, Observation, ...
    key: str | None  # patient key; the Kafka key
    record: dict[str, Any]


def events_from_raw(envelope: dict[str, Any], default_zone: tzinfo) -> list[Event]:
    """All events of one received message; [] for message types without a mapping yet.

    Raises Hl7ParseError when the stored bytes do not parse.
    """
    message = parse(envelope["raw"], charset=envelope.get("charset"))
    message_type = message.message_type or ""
    if message_type in PATIENT_TRIGGERS:
        return [_patient(message, envelope, default_zone)]
    if message_type in OBSERVATION_TRIGGERS:
        return _observations(message, envelope, default_zone)
    return []


def _common(
    message: Message, envelope: dict[str, Any], event_type: str, position: int
) -> dict[str, Any]:
    feed = envelope["feed"]
    control_id = message.control_id
    return {
        "schema_version": 1,
        "event_id": event_id(feed, control_id, event_type, position),
        "patient_key": patient_key(feed, message),
        "feed": feed,
        "source_control_id": control_id,
        "message_type": message.message_type or "",
        "received_at": envelope["received_at"],
    }


def _patient(message: Message, envelope: dict[str, Any], zone: tzinfo) -> Event:
    record = _common(message, envelope, "Patient", 0)
    birth = message.get("PID-7.1")
    birth_year = int(birth[:4]) if birth and birth[:4].isdigit() else None
    record.update(
        event_time=_first_time(zone, message.get("EVN-2.1"), message.get("MSH-7.1")),
        mrn=message.get("PID-3.1"),
        assigning_authority=message.get("PID-3.4"),
        family_name=message.get("PID-5.1.1") or message.get("PID-5.1"),
        given_name=message.get("PID-5.2"),
        birth_date=iso_date(birth),
        birth_year=birth_year,
        sex=message.get("PID-8") or None,
        street=message.get("PID-11.1.1") or message.get("PID-11.1"),
        city=message.get("PID-11.3"),
        postal_code=message.get("PID-11.5"),
        country=message.get("PID-11.6"),
        phone=message.get("PID-13.1"),
        national_id=message.get("PID-19") or None,
    )
    return Event("Patient", record["patient_key"], _blank_to_none(record))


def _observations(message: Message, envelope: dict[str, Any], zone: tzinfo) -> list[Event]:
    events = []
    order_code: str | None = None
    order_time: datetime | None = None
    message_time = to_utc(message.get("MSH-7.1"), zone)
    for position, segment in enumerate(message.segments()):
        name = segment.name
        if name == "OBR":
            order_code = segment.get("4.1")
            order_time = to_utc(segment.get("7.1"), zone)
            continue
        if name != "OBX":
            continue
        record = _common(message, envelope, "Observation", position)
        value_type = segment.get("2")
        value = segment.get("5")
        if value_type == "SN":
            # SN is comparator^num1^separator^num2; a plain comparator and number is common.
            value = (segment.get("5.1") or "") + (segment.get("5.2") or "")
        numeric, comparator = numeric_with_comparator(value)
        set_id = segment.get("1")
        record.update(
            event_time=to_utc(segment.get("14.1"), zone) or order_time or message_time,
            order_code=order_code,
            set_id=int(set_id) if set_id and set_id.isdigit() else None,
            value_type=value_type,
            code=segment.get("3.1"),
            code_text=segment.get("3.2"),
            code_system=segment.get("3.3"),
            value_numeric=numeric,
            comparator=comparator,
            value_text=value,
            units=segment.get("6.1"),
            reference_range=segment.get("7"),
            abnormal_flags=segment.get("8"),
            result_status=segment.get("11"),
        )
        events.append(Event("Observation", record["patient_key"], _blank_to_none(record)))
    return events


def _first_time(zone: tzinfo, *values: str | None) -> datetime | None:
    for value in values:
        instant = to_utc(value, zone)
        if instant is not None:
            return instant
    return None


def _blank_to_none(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if v == "" else v) for k, v in record.items()}
