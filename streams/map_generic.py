"""The Generic mapper: any message without a typed mapping, carried whole as a message tree."""

from __future__ import annotations

from typing import Any

from hl7bus.hl7v2 import Message, unescape
from hl7bus.streams.mapping import Context, Event

Field = list[list[list[str]]]  # repetitions -> components -> subcomponents


def generic(ctx: Context) -> list[Event]:
    message = ctx.message
    record = ctx.common("Generic", 0, ctx.event_instant())
    record.update(
        hl7_version=message.get("MSH-12.1"),
        sending_application=message.get("MSH-3.1"),
        sending_facility=message.get("MSH-4.1"),
    )
    event = ctx.event("Generic", record)
    # The tree is set after the blank-to-null pass: empty strings in it are data (positions).
    event.record["segment_names"] = list(message.segment_names)
    event.record["segments"] = tree(message)
    return [event]


def tree(message: Message) -> list[dict[str, Any]]:
    """segment -> field -> repetition -> component -> subcomponent, leaves unescaped.

    fields[0] is field 1; MSH-1 and MSH-2 are kept as sent; an empty field is [].
    """
    enc = message.encoding
    rs, cs, ss, esc = enc.repetition, enc.component, enc.subcomponent, enc.escape
    charset = message.charset

    def leaf(value: str) -> str:
        return unescape(value, enc, charset) if esc and esc in value else value

    def split(value: str, sep: str) -> list[str]:
        return value.split(sep) if sep else [value]

    segments = []
    for number, segment in enumerate(message.segments()):
        fields: list[Field] = []
        for position, value in enumerate(segment.fields[1:], 1):
            if number == 0 and position <= 2:
                fields.append([[[value]]])  # MSH-1/MSH-2: the delimiters themselves
            elif not value:
                fields.append([])
            else:
                fields.append(
                    [
                        [[leaf(sub) for sub in split(comp, ss)] for comp in split(rep, cs)]
                        for rep in split(value, rs)
                    ]
                )
        segments.append({"name": segment.name, "fields": fields})
    return segments
