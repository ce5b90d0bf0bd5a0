"""Reading research events for the OMOP mapping: times, codes and keys (pure).

Research events carry only what the de-identification policy let out, and a field the policy
drops is absent, so every read is a ``.get``. Times are UTC instants on the events; OMOP
datetimes are the source's wall-clock time (OHDSI keeps no zone), so each time is moved by the
event's own UTC offset (``event_time_offset``, as the sender wrote it) when it has one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hl7bus.connectors.warehouse.changes import PERSON, VISIT, MappingError, Ref
from hl7bus.connectors.warehouse.concepts import UNMAPPED, ConceptLookup, Mapped

Event = dict[str, Any]

_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


def person_ref(event: Event) -> Ref:
    key = event.get("patient_key")
    if not key:
        raise MappingError("no_patient_key")
    return Ref(PERSON, key)


def _zone(offset: str | None) -> timezone:
    """The fixed zone of a +HHMM offset; UTC for none or a malformed one."""
    zone = _ZONES.get(offset)
    if zone is None:
        zone = UTC
        match = _OFFSET.match(offset or "")
        if match:
            sign = -1 if match.group(1) == "-" else 1
            delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
            zone = timezone(sign * delta)
        if len(_ZONES) < 1000:  # feeds send a handful of offsets; never grow without bound
            _ZONES[offset] = zone
    return zone


_ZONES: dict[str | None, timezone] = {}


def local(instant: datetime | None, offset: str | None) -> datetime | None:
    """The wall-clock time of `instant` at `offset` (+HHMM), naive; UTC without an offset."""
    if instant is None:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(_zone(offset)).replace(tzinfo=None)


def at(event: Event, name: str) -> datetime | None:
    """The event's time field `name` as wall-clock time."""
    value = event.get(name)
    return local(value, event.get("event_time_offset")) if value is not None else None


def when(event: Event) -> datetime:
    """When the event happened: event_time, else (never absent) the bus's receipt time."""
    moment = at(event, "event_time") or at(event, "received_at")
    if moment is None:
        raise MappingError("no_event_time")
    return moment


def coded(event: Event, prefix: str = "") -> tuple[str | None, str | None]:
    """(system, code) to look up: the standard code when normalization found one, else the
    code and system as sent (`prefix` picks allergen_* fields)."""
    standard = event.get(f"{prefix}standard_code")
    if standard:
        return event.get(f"{prefix}standard_system"), standard
    return event.get(f"{prefix}code_system"), event.get(f"{prefix}code")


def concept(
    concepts: ConceptLookup,
    system: str | None,
    code: str | None,
    fallback: dict[str, int] | None = None,
) -> Mapped:
    """The concepts of (system, code); UNMAPPED without a code. `fallback` answers a few
    well-known codes (constants.py) when the vocabulary does not."""
    if not code:
        return UNMAPPED
    found = concepts.map(system, code)
    if found.concept_id == 0 and fallback and code in fallback:
        return Mapped(fallback[code], found.source_concept_id, found.domain_id)
    return found


def value_concept(concepts: ConceptLookup, system: str | None, code: str | None) -> int | None:
    """value_as_concept_id: None when there is no coded value, 0 when it is not mapped."""
    if not code:
        return None
    found: Mapped = concepts.map(system, code)
    return found.concept_id


def visit_ref(event: Event) -> Ref | None:
    """The visit an event belongs to (its pseudonymous encounter key), if it names one."""
    key = event.get("encounter_key")
    return Ref(VISIT, key) if key else None
