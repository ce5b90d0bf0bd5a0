"""Messages from the bundled synthetic feed, for tests that need realistic input."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from hl7bus.hl7v2 import Message, parse, parse_batch
from hl7bus.ops.demo_run import sample_feed_path


@cache
def _feed_bytes() -> bytes:
    return sample_feed_path().read_bytes()


def feed() -> tuple[Message, ...]:
    """Freshly parsed messages: Message is mutable, so no test may see another's edits."""
    return tuple(parse_batch(_feed_bytes()))


def first(message_type: str) -> Message:
    return next(m for m in feed() if m.message_type == message_type)


def envelope(
    message: Message,
    feed_name: str = "test",
    received_at: datetime = datetime(2026, 11, 27, 3, 0, tzinfo=UTC),
) -> dict[str, Any]:
    """The RawMessage envelope the listener would have written for this message."""
    return {
        "schema_version": 1,
        "feed": feed_name,
        "received_at": received_at,
        "peer": "127.0.0.1:5000",
        "charset": "utf-8",
        "control_id": message.control_id,
        "message_type": message.message_type,
        "patient_key": None,
        "raw": message.to_bytes(),
    }


def with_control_id(message: Message, control_id: str) -> Message:
    """`message` under another MSH-10: a sender that reused a control id for new content."""
    segments = message.to_bytes().split(b"\r")
    msh = segments[0].split(b"|")
    msh[9] = control_id.encode()  # MSH-10 (the field separator is MSH-1)
    return parse(b"\r".join([b"|".join(msh), *segments[1:]]))
