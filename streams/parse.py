"""parse: a RawMessage envelope -> typed clinical events (pure; no I/O).

Which mappers a message type goes through is data (streams/routing.yaml); a type without an
entry becomes one Generic event carrying the whole message. The mappers live in map_*.py.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from hl7bus.hl7v2 import Message, parse
from hl7bus.schemas.keys import content_digest
from hl7bus.streams import map_adt, map_clinical, map_generic, map_results
from hl7bus.streams.mapping import Context, Event, Mapper, Routing, default_routing
from hl7bus.streams.scrub import identifiers_of
from hl7bus.streams.terminology import Terminology, default_terminology

__all__ = ["MAPPERS", "Event", "events_from_raw"]

MAPPERS: dict[str, Mapper] = {
    "patient": map_adt.patient,
    "encounter": map_adt.encounter,
    "merge": map_adt.merge,
    "orders": map_results.orders,
    "observations": map_results.observations,
    "diagnoses": map_clinical.diagnoses,
    "allergies": map_clinical.allergies,
    "procedures": map_clinical.procedures,
    "medications": map_clinical.medications,
    "documents": map_clinical.documents,
    "generic": map_generic.generic,
}


def events_from_raw(
    envelope: dict[str, Any],
    default_zone: tzinfo,
    terms: Terminology | None = None,
    routing: Routing | None = None,
) -> list[Event]:
    """All events of one received message, in routing order.

    Raises Hl7ParseError when the stored bytes do not parse.
    """
    message = parse(envelope["raw"], charset=envelope.get("charset"))
    ctx = Context(
        message,
        envelope["feed"],
        envelope["received_at"],
        content_digest(envelope["raw"]),
        default_zone,
        terms or default_terminology(),
        routing or default_routing(),
    )
    names = ctx.routing.mappers_for(ctx.message_type) or ["generic"]
    events: list[Event] = []
    for name in names:
        events.extend(MAPPERS[name](ctx))
    # The message's own names and identifiers ride along on the identified (restricted) topic,
    # so the de-identify stage can scrub free text and run its leak check against the whole
    # message without re-reading it (streams/deid/). Computed once per message; no
    # policy names this field, so it never reaches a research topic.
    if events:
        carried = message_identifiers(message)
        for event in events:
            event.record["message_identifiers"] = carried
    return events


def message_identifiers(message: Message) -> str | None:
    """identifiers_of(message) as the events' message_identifiers field: ``KIND<TAB>value``
    lines, sorted; None when the message has none. Tabs and line breaks inside a value (never
    seen in real identifiers) become spaces."""
    needles = identifiers_of(message).needles
    if not needles:
        return None
    clean = str.maketrans("\t\n\r", "   ")
    return "\n".join(sorted(f"{kind}\t{value.translate(clean)}" for kind, value in needles))
