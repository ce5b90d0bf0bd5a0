"""What the sender is told: the ACK for each outcome of a message, per feed.

Outcomes map to a status -- delivered (stored in hl7.raw), errored (not accepted, but kept in
hl7.dlq: do not resend these bytes) or rejected (nothing stored: resend) -- and the status to the
MSA-1 code: AA/AE/AR (original mode) or CA/CE/CR (enhanced), by MSH-15/16 or forced by the feed's
``ack_mode``. Building an ACK never does I/O; it reads the clock only for MSH-7.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from hl7bus.connectors.mllp.config import AckMode, RefusalAck
from hl7bus.connectors.mllp.metrics import FeedMetrics
from hl7bus.hl7v2 import ACK_CODES, AckError, Message, build_ack, build_batch_ack, parse

# delivery status -> literal MSA-1 code, per forced ACK mode ("auto" lets MSH-15/16 decide).
_FORCED_CODES: dict[str, dict[str, str]] = {
    "original": {"delivered": "AA", "errored": "AE", "rejected": "AR"},
    "enhanced": {"delivered": "CA", "errored": "CE", "rejected": "CR"},
}


class AckPolicy:
    """The ACKs of one feed. Every ACK built is counted by its MSA-1 code."""

    def __init__(
        self, ack_mode: AckMode, metrics: FeedMetrics, header_error: RefusalAck = "error"
    ) -> None:
        self._forced = _FORCED_CODES.get(ack_mode)
        self._header_status = "errored" if header_error == "error" else "rejected"
        self._metrics = metrics
        # ACK control ids (MSH-10, 20 characters): a random prefix per listener and a counter,
        # instead of a uuid4 (an urandom syscall) per message.
        self._prefix = secrets.token_hex(6).upper()
        self._seq = itertools.count()

    def accepted(self, message: Message) -> bytes:
        """Stored in hl7.raw: AA/CA."""
        return self.ack(message, "delivered", None)

    def storage_failed(self, message: Message) -> bytes:
        """Kafka did not confirm the write to hl7.raw: AR/CR, the sender resends."""
        return self.ack(message, "rejected", AckError(code=207, text="storage unavailable"))

    def undecodable(self, payload: bytes, detail: str, charset: bool, stored: bool) -> bytes:
        """Bytes that do not decode (``charset``) or parse: kept whole in the DLQ, AE tells the
        sender not to resend the same bytes. When even the DLQ write failed nothing is stored, so
        AR asks for a resend instead."""
        error = AckError(code=102 if charset else 100, text=detail)
        # latin-1 reads any bytes, so the ACK can still echo the sender's MSH.
        return self.ack(payload, "errored" if stored else "rejected", error, "latin-1")

    def header_missing(
        self, payload: bytes, field: int, detail: str, charset: str | None, stored: bool
    ) -> bytes:
        """A message whose MSH lacks a required field (``field``, named in ``detail``): ERR-3
        101 at MSH-``field``; AE/CE or AR/CR by the feed's ``header_error_ack`` when the bytes
        are kept in the DLQ, AR/CR when even that failed."""
        text = f"{detail}; " + ("not accepted, kept for review" if stored else "not stored")
        error = AckError(code=101, text=text, segment="MSH", sequence=1, field=field)
        status = self._header_status if stored else "rejected"
        return self.ack(payload, status, error, charset or "latin-1")

    def oversize(self, msh: bytes, size: int, limit: int, stored: bool) -> bytes:
        """A message over max_frame_bytes: AE/CE when its head is kept in the DLQ (the same bytes
        would fail the same way, so they must not be resent), AR/CR when nothing was stored."""
        text = f"message of {size} bytes exceeds the limit of {limit} bytes; " + (
            "not accepted, kept for review" if stored else "not stored"
        )
        error = AckError(code=104, text=text)
        return self.ack(msh, "errored" if stored else "rejected", error, "latin-1")

    def envelope_failed(self, payload: bytes, stored: bool) -> bytes:
        """Our bug, not the sender's: AE when the bytes are kept in the DLQ, else AR."""
        error = AckError(code=207, text="internal error; message kept for review")
        return self.ack(payload, "errored" if stored else "rejected", error, "latin-1")

    def internal_error(self, payload: bytes) -> bytes:
        """An unexpected failure before anything was stored: AR, the sender resends."""
        error = AckError(code=207, text="internal error")
        return self.ack(payload, "rejected", error, "latin-1")

    def batch(self, payload: bytes, acks: list[bytes], each: bool) -> bytes | tuple[bytes, ...]:
        """The answer to a batch received in one frame, once every message of it has its ACK:
        each ACK in its own frame (``each``), or one response batch holding them all."""
        if each:
            return tuple(acks)
        return build_batch_ack(payload, acks, now=_now(), control_id=self._control_id())

    def bad_batch(self, payload: bytes, detail: str, stored: bool) -> bytes:
        """A batch whose envelope does not check out (counts, segment order): one ACK, echoing
        its first MSH when it has one, ERR-3 100; AE/CE when the frame is kept in the DLQ,
        else AR/CR."""
        first = _FIRST_MSH.search(payload)
        source = payload[first.end() - 3 :] if first else payload
        error = AckError(code=100, text=f"batch: {detail}")
        return self.ack(source, "errored" if stored else "rejected", error, "latin-1")

    def _control_id(self) -> str:
        return f"{self._prefix}{next(self._seq) & 0xFFFFFFFF:08X}"

    def ack(
        self,
        source: bytes | Message,
        status: str,
        error: AckError | None,
        charset: str | None = None,
    ) -> bytes:
        forced = self._forced
        ack = build_ack(
            source,
            forced[status] if forced else status,
            error,
            charset=charset,
            now=_now(),
            control_id=self._control_id(),
        )
        self._metrics.ack(_msa1(ack, charset))
        return ack


_FIRST_MSH = re.compile(rb"(?:^|[\r\n])MSH")

_clock: list[Any] = [0, None]  # [second, local time of that second]


def _now() -> datetime:
    """The local time for ACK timestamps (MSH-7 has second precision), computed once a second."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[0], _clock[1] = second, datetime.now(UTC).astimezone()
    now: datetime = _clock[1]
    return now


def _msa1(ack: bytes, charset: str | None) -> str:
    """MSA-1 of an ACK we built, without parsing it (this runs once per message)."""
    i = ack.find(b"\rMSA")
    if i >= 0 and len(ack) >= i + 7 and ack[i + 4 : i + 5] == ack[3:4]:
        code = ack[i + 5 : i + 7].decode("ascii", "replace")
        if code in ACK_CODES:
            return code
    try:  # multi-byte charsets (UTF-16) and the unexpected
        return parse(ack, charset=charset).get("MSA-1") or "none"
    except ValueError:
        return "none"
