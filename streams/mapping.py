"""What every mapper shares: the Event, the per-message Context and small field readers (pure).

A mapper is a function Context -> list[Event]; streams/parse.py picks mappers by message type
from streams/routing.yaml.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hl7bus.hl7v2 import HL7_NULL, Message, Segment
from hl7bus.schemas import codec
from hl7bus.schemas.datafile import load_yaml
from hl7bus.schemas.keys import event_id, join_key, patient_key
from hl7bus.streams.normalize import Instant, read_dtm, to_utc
from hl7bus.streams.terminology import Terminology


@dataclass(frozen=True)
class Event:
    type: str  # the Avro record name: Patient, Observation, ...
    key: str | None  # patient key; the Kafka key
    record: dict[str, Any]


class Routing(BaseModel):
    """streams/routing.yaml: message type -> mapper names, and the small code tables of ADT."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: dict[str, list[str]] = Field(
        description="Message type (MSH-9.1^MSH-9.2, or a bare MSH-9.1 for every trigger not "
        "listed) -> the mappers that make its events, in output order."
    )
    encounter_actions: dict[str, str] = Field(description="ADT trigger event -> Encounter.action.")
    immunization_messages: frozenset[str] = Field(
        description="Message codes (MSH-9.1) whose RXA segments are immunizations."
    )

    def mappers_for(self, message_type: str) -> list[str] | None:
        found = self.messages.get(message_type)
        if found is None:
            found = self.messages.get(message_type.split("^", 1)[0])
        return found


@cache
def default_routing() -> Routing:
    packaged = resources.files(__package__).joinpath("routing.yaml")
    return load_yaml(Routing, packaged, "routing table streams/routing.yaml")


@dataclass
class Context:
    """One message being mapped, with what every event of it shares."""

    message: Message
    feed: str
    received_at: datetime
    digest: str  # of the message bytes (schemas/keys.py content_digest)
    zone: tzinfo
    terms: Terminology
    routing: Routing
    message_type: str = field(init=False)
    control_id: str | None = field(init=False)
    patient_key: str | None = field(init=False)
    message_time: Instant | None = field(init=False)
    _cache: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._cache = {}
        self.message_type = self.message.message_type or ""
        self.control_id = self.message.control_id
        self.patient_key = patient_key(self.feed, self.message)
        self.message_time = self.instant(self.message.get("MSH-7.1"))

    @property
    def trigger(self) -> str | None:
        return self.message.get("MSH-9.2") or self.message.get("EVN-1")

    def instant(self, value: str | None) -> Instant | None:
        return read_dtm(_value(value), self.zone)

    def utc(self, value: str | None) -> datetime | None:
        return to_utc(_value(value), self.zone)

    def first_instant(self, *values: str | None) -> Instant | None:
        for value in values:
            found = self.instant(value)
            if found is not None:
                return found
        return None

    def event_instant(self, *values: str | None) -> Instant | None:
        """The first timestamp present among values, then EVN-2, then MSH-7."""
        return self.first_instant(*values, self._evn_time()) or self.message_time

    def _evn_time(self) -> str | None:
        # The message does not change while it is mapped: read EVN-2.1 once.
        found = self._cache.get("EVN-2.1", _UNSET)
        if found is _UNSET:
            found = self._cache["EVN-2.1"] = self.message.get("EVN-2.1")
        return found  # type: ignore[no-any-return]

    def encounter_key(self) -> str | None:
        found = self._cache.get("encounter_key", _UNSET)
        if found is _UNSET:
            found = self._cache["encounter_key"] = self._encounter_key()
        return found  # type: ignore[no-any-return]

    def _encounter_key(self) -> str | None:
        visit = self.message.get("PV1-19.1")
        if not visit:
            return None
        return join_key(self.feed, self.message.get("PV1-19.4") or "", visit)

    def order_key(self, placer: str | None, filler: str | None) -> str | None:
        if placer:
            return join_key(self.feed, placer)
        if filler:
            return join_key(self.feed, "F", filler)
        return None

    def common(
        self,
        event_type: str,
        position: int,
        when: Instant | None,
        key: str | None = None,
    ) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "event_id": event_id(self.feed, self.control_id, self.digest, event_type, position),
            "patient_key": key if key is not None else self.patient_key,
            "feed": self.feed,
            "source_control_id": self.control_id,
            "message_type": self.message_type,
            "event_time": when.utc if when else None,
            "event_time_offset": when.offset if when else None,
            "event_time_precision": when.precision if when else None,
            "received_at": self.received_at,
        }

    def event(self, event_type: str, record: dict[str, Any]) -> Event:
        """The event with every field of its schema, in schema order ('' and '""' -> None)."""
        names, known = _fields(event_type)
        if not known.issuperset(record):  # a mapper bug, not bad input
            unknown = record.keys() - known
            raise KeyError(f"{event_type} has no field(s) {', '.join(sorted(unknown))}")
        get = record.get
        # blank_to_none over every schema field, in one pass.
        clean = {name: (None if (value := get(name)) in _BLANKS else value) for name in names}
        return Event(event_type, clean["patient_key"], clean)

    def coded(
        self, segment: Segment, number: int, when: datetime | None, prefix: str = ""
    ) -> dict[str, Any]:
        """CWE/CE field `number` of a segment as code, text, system and its standard coding."""
        code_path, text_path, system_path = _coded_paths(number)
        code = segment.get(code_path)
        system = segment.get(system_path)
        standard = self.terms.standard(self.feed, system, code, when)
        k_code, k_text, k_system, k_std_code, k_std_system = _coded_keys(prefix)
        return {
            k_code: code,
            k_text: segment.get(text_path),
            k_system: system,
            k_std_code: standard.code if standard else None,
            k_std_system: standard.system if standard else None,
        }


Mapper = Callable[[Context], list[Event]]


@cache
def field_names(event_type: str) -> tuple[str, ...]:
    return tuple(f["name"] for f in codec.schema(event_type).definition["fields"])


@cache
def _fields(event_type: str) -> tuple[tuple[str, ...], frozenset[str]]:
    names = field_names(event_type)
    return names, frozenset(names)


@cache
def _coded_paths(number: int) -> tuple[str, str, str]:
    return f"{number}.1", f"{number}.2", f"{number}.3"


@cache
def _coded_keys(prefix: str) -> tuple[str, str, str, str, str]:
    return (
        f"{prefix}code",
        f"{prefix}code_text",
        f"{prefix}code_system",
        f"{prefix}standard_code",
        f"{prefix}standard_system",
    )


_BLANKS = ("", HL7_NULL)
_UNSET: Any = object()


def _value(value: str | None) -> str | None:
    return None if value == HL7_NULL else value


def blank_to_none(record: dict[str, Any]) -> dict[str, Any]:
    """'' and the HL7 null '""' are 'no value' in an event."""
    return {k: (None if v in _BLANKS else v) for k, v in record.items()}


def repetitions(message: Message, segment: Segment, number: int) -> int:
    """How many repetitions field `number` of a segment has (0 when empty)."""
    fields = segment.fields
    if number >= len(fields) or not fields[number]:
        return 0
    rs = message.encoding.repetition
    return fields[number].count(rs) + 1 if rs else 1


def every_repetition(
    message: Message, segment: Segment, number: int, separator: str = "\n"
) -> str | None:
    """Every repetition of a field as text, joined (NTE-3 comment lines, TX document lines;
    the first component of coded repetitions is kept whole: CE reactions read better as
    'code^text')."""
    count = repetitions(message, segment, number)
    if count <= 1:
        return segment.get(str(number))
    return joined([segment.get(f"{number}[{r}]") for r in range(1, count + 1)], separator)


def notes_after(message: Message, *segments: Segment | None) -> str | None:
    """The NTE-3 comments (every repetition) of the NTE segments right after each of
    ``segments``: the notes that annotate them, joined by newlines."""
    names = message.segment_names
    found: list[str | None] = []
    for segment in segments:
        if segment is None:
            continue
        i = segment.index + 1
        while i < len(names) and names[i] == "NTE":
            found.append(every_repetition(message, Segment(message, i), 3))
            i += 1
    return joined(found)


def as_int(value: str | None) -> int | None:
    if not value:
        return None
    text = value.strip()
    return int(text) if text.isdigit() else None


def joined(parts: list[str | None], separator: str = "\n") -> str | None:
    kept = [p for p in parts if p]
    return separator.join(kept) if kept else None
