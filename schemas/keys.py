"""Keys and ids shared by every hop: the patient key and deterministic event ids."""

from __future__ import annotations

import hashlib

from hl7bus.hl7v2 import Message

_SEPARATOR = "|"


def patient_key(feed: str, message: Message) -> str | None:
    """feed|assigning authority|patient id from the first PID-3 repetition; None without one.

    All messages of one patient share it, so keying topics by it keeps per-patient order.
    """
    patient_id = message.get("PID-3.1")
    if not patient_id:
        return None
    authority = message.get("PID-3.4") or ""
    return join_key(feed, authority, patient_id)


def join_key(*parts: str) -> str:
    """The composite keys of the bus (patient, encounter, order, result): parts joined by '|'."""
    return _SEPARATOR.join(parts)


def content_digest(raw: bytes) -> str:
    """A message's bytes as received, in 32 hex digits: tells a resend of the same message
    from new content under a reused control id."""
    return hashlib.sha256(raw).hexdigest()[:32]


def event_id(feed: str, control_id: str | None, digest: str, event_type: str, position: int) -> str:
    """Same message, same event, same id: sinks upsert by it, so redelivery is harmless. The
    content digest keeps the events of two messages apart that share a reused control id."""
    material = _SEPARATOR.join((feed, control_id or "", digest, event_type, str(position)))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]
