"""What is stored: each message of one feed goes to Kafka durably and is answered exactly once.

A message that decodes and has MSH-9, MSH-10 and MSH-12 is produced to hl7.raw and answered after
its delivery report; bytes that do not decode or parse, messages without those header fields,
oversize frames and internal failures go to hl7.dlq; a truncated frame goes to
hl7.dlq and is owed no ACK. Which ACK each outcome gets is :mod:`ack_policy`'s.

The common case -- a message that decodes, produced to hl7.raw -- runs without a task of its
own: the envelope is built and queued by the caller, and the ACK is built in the delivery
callback (a task per message cost more than the rest of the asyncio work). The rare paths (DLQ
writes, a full producer queue) run as tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

from hl7bus.connectors.envelope import (
    Built,
    Route,
    build_envelope,
    dlq_headers,
    header_fields,
    msh_segment,
    raw_headers,
)
from hl7bus.connectors.kafka_clients import DeliveryError, Submitter
from hl7bus.connectors.mllp.ack_policy import AckPolicy
from hl7bus.connectors.mllp.config import ListenerConfig
from hl7bus.connectors.mllp.framer import FramingError
from hl7bus.connectors.mllp.metrics import CHARSET_MISMATCH, DLQ, DLQ_FAILURES, STAGE, FeedMetrics
from hl7bus.connectors.mllp.session import Ack
from hl7bus.hl7v2 import Hl7CharsetError, Hl7ParseError, Message
from hl7bus.hl7v2.batch import split_batch
from hl7bus.schemas import codec

log = logging.getLogger(__name__)

#: Called once with a message's ACK (``b""``: no ACK owed), on the event loop.
Answer = Callable[[Ack], None]
#: The ACK of one message of a frame (a batch's messages each have one).
_Done = Callable[[bytes], None]

# What a frame holding a batch starts with (a UTF-8 byte-order mark and blank lines aside).
_BATCH_START = (b"FHS", b"BHS")


class Intake:
    """One feed's messages to Kafka, through ``producer``, each answered once."""

    def __init__(
        self, cfg: ListenerConfig, producer: Submitter, route: Route, metrics: FeedMetrics
    ) -> None:
        self.cfg = cfg
        self.producer = producer
        self.route = route
        self._metrics = metrics
        self._acks = AckPolicy(cfg.ack_mode, metrics, cfg.header_error_ack)
        self._mismatch = CHARSET_MISMATCH.labels(cfg.feed)
        self._tasks: set[asyncio.Task[bytes]] = set()  # the rare paths of messages (DLQ, ...)
        #: Messages submitted and not yet answered (tests, /readyz, the in-flight gauge).
        self.in_flight = 0

    def submit(self, payload: bytes, peer: str, answer: Answer) -> None:
        """Store one message durably, then call ``answer`` with its ACK on the event loop (maybe
        before this returns). Never raises: every path ends in exactly one answer."""
        finish = self._begin(answer)
        try:
            # Only the head is looked at: a copy of a 4 MiB payload per message would not do.
            if payload[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(_BATCH_START):
                self._store_batch(payload, peer, finish)
            else:
                self._store(payload, peer, finish)
        except Exception as exc:  # a bug; the sender still gets an answer, and resends
            log.error("mllp feed %s: unexpected %s", self.cfg.feed, type(exc).__name__)
            finish(self._acks.internal_error(payload))

    def submit_framing(self, event: FramingError, peer: str, answer: Answer) -> None:
        """An oversize or truncated frame (:meth:`_accept_framing`); ``answer`` as for
        :meth:`submit`, with ``b""`` when no ACK is owed."""
        echo = msh_segment(event.head) if event.code == "oversize" else None
        self._spawn(self._accept_framing(event, peer), self._begin(answer), echo)

    def _begin(self, answer: Answer) -> Answer:
        """Count one message in flight; the function returned answers it, once."""
        self.in_flight += 1
        answered = False

        def finish(ack: Ack) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self.in_flight -= 1
                answer(ack)

        return finish

    def _spawn(
        self,
        work: Coroutine[Any, Any, bytes],
        finish: _Done,
        payload: bytes | None,
    ) -> None:
        """Run one message's rare path as a task; its result is the answer. ``payload``: what
        an internal-error ACK would echo, None when no ACK is owed (a truncated frame)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)

        def done(task: asyncio.Task[bytes]) -> None:
            self._tasks.discard(task)
            if task.cancelled():  # the loop is going away: nobody waits for the ACK
                finish(b"")
            elif task.exception() is not None:  # the coroutines catch everything; a bug
                finish(b"" if payload is None else self._acks.internal_error(payload))
            else:
                finish(task.result())

        task.add_done_callback(done)

    def _store_batch(self, payload: bytes, peer: str, finish: Answer) -> None:
        """A batch in one frame (FHS/BHS ... BTS/FTS): split as batch files are
        (:func:`~hl7bus.hl7v2.batch.split_batch`), each message stored and answered as if it
        had come alone, then the frame answered once all are: one response batch, or each ACK
        in its own frame (``batch_ack``). A batch whose envelope does not check out is kept
        whole in the DLQ and answered AE (AR if that failed)."""
        try:
            split = split_batch(payload, self.cfg.charset)
        except Hl7ParseError as exc:
            self._spawn(self._bad_batch(payload, peer, exc), finish, payload)
            return
        count = len(split.ranges)
        acks: list[bytes] = [b""] * count
        left = count

        def answered(index: int, ack: bytes) -> None:
            nonlocal left
            acks[index] = ack
            left -= 1
            if left == 0:
                finish(self._acks.batch(payload, acks, self.cfg.batch_ack == "each"))

        if not count:  # an empty batch: nothing to store
            finish(self._acks.batch(payload, [], False))
            return
        for index, (lo, hi) in enumerate(split.ranges):
            part = payload[lo:hi]
            done = partial(answered, index)
            try:
                self._store(part, peer, done, split.charset)
            except Exception as exc:  # a bug; this message gets AR, the others their own ACK
                log.error("mllp feed %s: unexpected %s", self.cfg.feed, type(exc).__name__)
                done(self._acks.internal_error(part))

    def _store(self, payload: bytes, peer: str, finish: _Done, charset: str | None = None) -> None:
        """One message to hl7.raw (or the DLQ). ``charset``: the batch's, when its file-level
        byte-order mark or the feed's override fixes it."""
        cfg = self.cfg
        try:
            built = build_envelope(
                payload,
                feed=cfg.feed,
                peer=peer,
                charset=charset or cfg.charset,
                fallback=cfg.fallback_charset,
                received_at=datetime.now(UTC),
                lenient_utf8=cfg.lenient_utf8,
                require_header=True,
            )
        except Exception as exc:  # a bug, not the sender's: keep the bytes, say AE
            log.error("mllp feed %s: envelope failed (%s)", cfg.feed, type(exc).__name__)
            self._spawn(self._envelope_failed(payload, peer), finish, payload)
            return
        if built.lenient:
            self._mismatch.inc()
        message = built.message
        if message is None:
            work = self._header_missing if built.reason == "header" else self._undecodable
            self._spawn(work(built, payload), finish, payload)
            return
        value = codec.encode("RawMessage", built.record)

        def delivered(report: Any) -> None:
            try:
                finish(self._delivered(message, report))
            except Exception as exc:  # a bug; answer like submit does
                log.error("mllp feed %s: unexpected %s", cfg.feed, type(exc).__name__)
                finish(self._acks.internal_error(payload))

        try:
            self.producer.submit(self.route.raw_topic, value, built.key, raw_headers(), delivered)
        except BufferError:
            # librdkafka's local queue is full: wait for room in a task (send retries).
            self._spawn(self._send_raw(message, value, built.key), finish, payload)

    def _delivered(self, message: Message, report: Any) -> bytes:
        """The ACK for a delivery report of hl7.raw: (partition, offset) or DeliveryError."""
        if isinstance(report, DeliveryError):
            log.warning("hl7.raw delivery failed (%s); answering reject", report.code)
            return self._acks.storage_failed(message)
        return self._acks.accepted(message)

    async def _send_raw(self, message: Message, value: bytes, key: bytes | None) -> bytes:
        try:
            report: Any = await self.producer.send(
                self.route.raw_topic, value, key=key, headers=raw_headers()
            )
        except DeliveryError as exc:
            report = exc
        return self._delivered(message, report)

    async def _envelope_failed(self, payload: bytes, peer: str) -> bytes:
        cfg = self.cfg
        record = {"feed": cfg.feed, "received_at": datetime.now(UTC), "peer": peer}
        stored = await self._to_dlq({**record, "raw": payload}, "internal", None)
        return self._acks.envelope_failed(payload, stored)

    async def _undecodable(self, built: Built, payload: bytes) -> bytes:
        # Kept whole in the DLQ (the ACK says whether that worked).
        reason = built.reason or "parse"
        detail = built.error.reason if built.error is not None else reason
        stored = await self._to_dlq(built.record, reason, detail)
        charset = isinstance(built.error, Hl7CharsetError)
        return self._acks.undecodable(payload, detail, charset, stored)

    async def _header_missing(self, built: Built, payload: bytes) -> bytes:
        # Parsed, but no MSH-9/10/12: the worker could not use it, so it is not accepted.
        error = built.error
        assert error is not None and error.field is not None
        stored = await self._to_dlq(built.record, "header", error.reason)
        charset = built.record.get("charset")
        return self._acks.header_missing(payload, error.field, error.reason, charset, stored)

    async def _bad_batch(self, payload: bytes, peer: str, error: Hl7ParseError) -> bytes:
        # The envelope does not add up (counts, order): which messages the sender meant is
        # unclear, so none is stored on its own; the whole frame is kept for review.
        record = {"feed": self.cfg.feed, "received_at": datetime.now(UTC), "peer": peer}
        stored = await self._to_dlq({**record, "raw": payload}, "batch", str(error))
        return self._acks.bad_batch(payload, str(error), stored)

    async def _accept_framing(self, event: FramingError, peer: str) -> bytes:
        """An oversize or truncated frame: what the framer kept goes to hl7.dlq.

        Oversize: the head (at most 4 KiB) is stored, the full size in a header, and the sender
        gets AE/CE with its MSH echoed from the head -- the same bytes would fail the same way,
        so they must not be resent; if even the DLQ write fails, nothing is stored and the
        answer is AR/CR. Truncated (a new start block or the end of the connection came before
        the end block): all its bytes are stored and no ACK is owed -- the sender abandoned that
        frame, and an extra ACK would shift every later ACK of a pipelining sender. Returns the
        ACK, or ``b""`` for none. Never raises.
        """
        cfg = self.cfg
        try:
            size = event.skipped_bytes
            self._metrics.bytes.inc(size)  # received_messages counts it below if it is one
            record: dict[str, Any] = {
                "feed": cfg.feed,
                "received_at": datetime.now(UTC),
                "peer": peer,
                "raw": event.data or event.head,
                **header_fields(event.head, charset=cfg.charset, fallback=cfg.fallback_charset),
            }
            if event.code != "oversize":
                # A start block inside a frame (reason start_block) and a stream that ended
                # inside one (truncated) are told apart for ops: the first is a sender bug.
                reason = "start_block" if event.at_start_block else "truncated"
                await self._to_dlq(record, reason, event.reason, size_bytes=size)
                return b""
            self._metrics.received_messages(1, 0)
            limit = cfg.max_frame_bytes
            detail = f"frame of {size} bytes exceeds max_frame_bytes {limit}; first bytes kept"
            stored = await self._to_dlq(record, "oversize", detail, size_bytes=size)
            return self._acks.oversize(msh_segment(event.head), size, limit, stored)
        except Exception as exc:  # a bug; answer like submit does
            log.error("mllp feed %s: unexpected %s", cfg.feed, type(exc).__name__)
            if event.code != "oversize":
                return b""
            return self._acks.internal_error(msh_segment(event.head))

    async def _to_dlq(
        self,
        record: dict[str, Any],
        reason: str,
        detail: str | None,
        *,
        size_bytes: int | None = None,
    ) -> bool:
        """Write one hl7.dlq record; True once Kafka confirmed it."""
        feed = self.cfg.feed
        try:
            await self.producer.send(
                self.route.dlq_topic,
                codec.encode("RawMessage", record),
                key=feed.encode("utf-8"),
                headers=dlq_headers("receiving", reason, detail, size_bytes=size_bytes),
            )
        except Exception as exc:
            DLQ_FAILURES.labels(feed, reason).inc()
            STAGE.error("dlq_failed")
            if isinstance(exc, DeliveryError):
                log.warning("mllp feed %s: DLQ delivery failed (%s)", feed, exc.code)
            else:
                log.error("mllp feed %s: DLQ record failed (%s)", feed, type(exc).__name__)
            return False
        DLQ.labels(feed, reason).inc()
        STAGE.dlq(reason)
        log.warning(
            "mllp feed %s: a message went to the DLQ (stage receiving, reason %s)", feed, reason
        )
        return True
