"""The RawMessage envelope, built the same way by every source (MLLP listener, file source).

Pure: bytes in, the envelope record (and the parsed message, or why there is none) out. The
sources own the I/O: where the record goes (hl7.raw keyed by patient key, or hl7.dlq keyed by
feed with reason headers) and what the sender is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hl7bus.hl7v2 import Hl7CharsetError, Hl7ParseError, Message, decode_bytes, parse
from hl7bus.schemas import codec
from hl7bus.schemas.keys import patient_key

# What a feed name may be: it is stamped on envelopes and is part of every patient key.
FEED_NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"

__all__ = [
    "FEED_NAME_PATTERN",
    "REQUIRED_HEADER",
    "SIZE_HEADER",
    "Built",
    "Route",
    "build_envelope",
    "dlq_headers",
    "header_fields",
    "missing_header_fields",
    "msh_segment",
    "raw_headers",
]


@dataclass(frozen=True)
class Route:
    """The topic names a source writes to (resolved from the catalog by the caller)."""

    raw_topic: str
    dlq_topic: str


@dataclass(frozen=True)
class Built:
    """One envelope. ``message`` is None when the bytes could not be decoded or parsed, or (with
    ``require_header``) their MSH lacks a required field; then ``reason`` is "charset", "parse"
    or "header" and ``error`` says why, free of patient data (docs/architecture.md, Privacy).
    ``lenient`` is True when MSH-18's charset could not decode the bytes and they were read as
    UTF-8 instead."""

    record: dict[str, Any]
    message: Message | None
    reason: str | None = None
    error: Hl7ParseError | None = None
    lenient: bool = False

    @property
    def key(self) -> bytes | None:
        """The hl7.raw Kafka key: the patient key, or None without one."""
        value = self.record.get("patient_key")
        return value.encode("utf-8") if isinstance(value, str) else None


def build_envelope(
    raw: bytes,
    *,
    feed: str,
    peer: str,
    charset: str | None = None,
    fallback: str | None = None,
    received_at: datetime | None = None,
    lenient_utf8: bool = False,
    require_header: bool = False,
) -> Built:
    """Decode and parse ``raw`` and return its RawMessage envelope.

    ``raw`` is stored exactly as given. ``charset`` overrides MSH-18, ``fallback`` is tried
    when the declared charset cannot decode the bytes (as :func:`decode_bytes`). With
    ``lenient_utf8`` (and no override), bytes that neither MSH-18's charset nor ``fallback``
    decode are read as UTF-8 when they are valid UTF-8 (``Built.lenient``). With
    ``require_header``, a message without MSH-9, MSH-10 or MSH-12 is refused (reason
    "header", the error naming the first missing field).
    """
    record: dict[str, Any] = {
        "feed": feed,
        "received_at": received_at or datetime.now(UTC),
        "peer": peer,
        "raw": raw,
    }
    lenient = False
    try:
        try:
            text, codec_name = decode_bytes(raw, charset=charset, fallback=fallback)
        except Hl7CharsetError as exc:
            # Only bytes the declared charset fails on (offset set), not an unknown MSH-18
            # name: senders often declare ASCII and send UTF-8 (docs/mllp.md, Charsets).
            if not lenient_utf8 or charset is not None or exc.offset is None:
                raise
            try:
                text, codec_name, lenient = raw.decode("utf-8"), "utf-8", True
            except UnicodeDecodeError:
                raise exc from None
        message = parse(text, charset=codec_name)
    except Hl7ParseError as exc:
        reason = "charset" if isinstance(exc, Hl7CharsetError) else "parse"
        return Built(record, None, reason, exc)
    record.update(
        charset=codec_name,
        control_id=message.control_id,
        message_type=message.message_type,
    )
    if require_header:
        missing = missing_header_fields(message)
        if missing:
            names = ", ".join(f"MSH-{n} ({REQUIRED_HEADER[n]})" for n in missing)
            # The ACK's ERR points at the first missing field; the text names them all.
            error = Hl7ParseError(
                f"required field missing: {names}", segment_index=0, field=missing[0]
            )
            return Built(record, None, "header", error, lenient)
    record["patient_key"] = patient_key(feed, message)
    return Built(record, message, lenient=lenient)


#: The MSH fields a message must have to be accepted by a listener, by number.
REQUIRED_HEADER: dict[int, str] = {9: "message type", 10: "message control id", 12: "version id"}


def missing_header_fields(message: Message) -> list[int]:
    """The numbers of :data:`REQUIRED_HEADER` fields that are empty (or the HL7 null ``""``):
    without MSH-9 no event can be made, without MSH-10 no ACK matched, deduped or traced, and
    without MSH-12 no version-specific parsing chosen."""
    values = (message.get("MSH-9.1"), message.control_id, message.version)
    if all(v and v != '""' and not v.isspace() for v in values):  # the common case, fast
        return []
    return [
        n
        for n, value in zip(REQUIRED_HEADER, values, strict=True)
        if value is None or value.strip() in ("", '""')
    ]


def msh_segment(raw: bytes) -> bytes:
    """The first segment of ``raw`` with its terminator (CR or LF), or ``b""`` when ``raw`` -- a
    frame's head -- ends before that segment does: a cut MSH would echo a cut MSH-10."""
    cr, lf = raw.find(b"\r"), raw.find(b"\n")
    ends = [i for i in (cr, lf) if i >= 0]
    return raw[: min(ends) + 1] if ends else b""


def header_fields(
    raw: bytes, *, charset: str | None = None, fallback: str | None = None
) -> dict[str, Any]:
    """``control_id`` and ``message_type`` of the MSH that starts ``raw`` (a frame's head, for a
    DLQ record of a message kept only in part); empty when that MSH cannot be read."""
    msh = msh_segment(raw)
    if not msh.startswith(b"MSH"):
        return {}
    try:
        text, codec_name = decode_bytes(msh, charset=charset, fallback=fallback)
        message = parse(text, charset=codec_name)
    except Hl7ParseError:
        return {}
    return {"control_id": message.control_id, "message_type": message.message_type}


def raw_headers() -> list[tuple[str, bytes]]:
    """Headers of an hl7.raw record."""
    return [(codec.EVENT_TYPE_HEADER, b"RawMessage")]


SIZE_HEADER = "hl7bus.size_bytes"


def dlq_headers(
    stage: str, reason: str, detail: str | None = None, *, size_bytes: int | None = None
) -> list[tuple[str, bytes]]:
    """Headers of an hl7.dlq record: stage and reason code, plus an optional PHI-free detail
    (an :class:`Hl7ParseError`'s text names what and where, never values).

    ``size_bytes`` is the size of the message as received, for records that keep only part of
    it (an oversize frame keeps its head): ``hl7bus.size_bytes``, decimal ASCII."""
    headers = [
        (codec.EVENT_TYPE_HEADER, b"RawMessage"),
        ("hl7bus.stage", stage.encode()),
        ("hl7bus.reason", reason.encode()),
    ]
    if detail:
        headers.append(("hl7bus.detail", detail[:500].encode("utf-8", "replace")))
    if size_bytes is not None:
        headers.append((SIZE_HEADER, str(size_bytes).encode("ascii")))
    return headers
