"""The MLLP listener: frames in, RawMessage envelopes to hl7.raw, ACKs out only after commit.

Each connection has a reader (framer -> one task per message, kept in arrival order) and a
writer (awaits those tasks in order and writes their ACKs), so pipelined senders get their
ACKs in order. The queue between them is bounded: when Kafka slows, the reader stops reading
and TCP pushes back on the sender instead of the listener buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors.mllp.framer import DEFAULT_MAX_FRAME_BYTES, Frame, Framer, encode_frame
from hl7bus.hl7v2 import (
    AckError,
    Hl7CharsetError,
    Hl7ParseError,
    Message,
    build_ack,
    decode_bytes,
    parse,
)
from hl7bus.ops.kafka_clients import AsyncProducer, DeliveryError
from hl7bus.schemas import codec
from hl7bus.schemas.keys import patient_key

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024


class MllpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(2575, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    feed: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    charset: str | None = Field(
        None,
        description="Decode every message with this charset, ignoring MSH-18 (feeds that lie).",
    )
    fallback_charset: str | None = Field(
        None, description="Charset to try when MSH-18's charset cannot decode the bytes."
    )
    max_frame_bytes: int = Field(
        DEFAULT_MAX_FRAME_BYTES,
        ge=1024,
        description="Largest accepted message; bigger ones get an AR NAK and are dropped.",
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Messages one connection may have awaiting Kafka before reading pauses.",
    )
    idle_timeout_s: float = Field(
        600.0, gt=0, description="Close a connection that sent nothing for this long."
    )
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )


MESSAGES = Counter("hl7bus_mllp_messages_total", "Frames received.", ["feed"])
BYTES = Counter("hl7bus_mllp_received_bytes_total", "Payload bytes received.", ["feed"])
ACKS = Counter("hl7bus_mllp_acks_total", "ACKs sent, by MSA-1 code.", ["feed", "code"])
FRAMING_ERRORS = Counter("hl7bus_mllp_framing_errors_total", "Framing errors.", ["feed", "reason"])
DLQ = Counter("hl7bus_mllp_dlq_total", "Messages sent to the DLQ.", ["feed", "reason"])
ACK_LATENCY = Histogram(
    "hl7bus_mllp_ack_latency_seconds",
    "From the last byte of a message to its ACK being written.",
    ["feed"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
CONNECTIONS = Gauge("hl7bus_mllp_connections", "Open connections.", ["feed"])
IN_FLIGHT = Gauge("hl7bus_mllp_in_flight", "Messages awaiting Kafka.", ["feed"])


@dataclass(frozen=True)
class Route:
    raw_topic: str
    dlq_topic: str


class MllpListener:
    def __init__(self, cfg: MllpConfig, producer: AsyncProducer, route: Route) -> None:
        self.cfg = cfg
        self.producer = producer
        self.route = route
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "listener not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.cfg.host, self.cfg.port, limit=_READ_CHUNK
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let open connections finish their in-flight messages, close."""
        if self._server is not None:
            self._server.close()
        if self._connections:
            _, pending = await asyncio.wait(self._connections, timeout=grace_s)
            for task in pending:
                task.cancel()
        self.producer.flush()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if peername else "unknown"
        feed = self.cfg.feed
        CONNECTIONS.labels(feed).inc()
        acks: asyncio.Queue[tuple[asyncio.Task[bytes], float] | None] = asyncio.Queue(
            self.cfg.max_in_flight
        )
        ack_writer = asyncio.create_task(self._write_acks(acks, writer))
        framer = Framer(self.cfg.max_frame_bytes)
        try:
            while not ack_writer.done():
                try:
                    chunk = await asyncio.wait_for(
                        reader.read(_READ_CHUNK), self.cfg.idle_timeout_s
                    )
                except (TimeoutError, ConnectionError):
                    break
                events = framer.feed(chunk) if chunk else framer.close()
                for event in events:
                    received = time.monotonic()
                    if isinstance(event, Frame):
                        work = self._accept(event.payload, peer)
                    else:
                        FRAMING_ERRORS.labels(feed, event.code).inc()
                        if event.code == "junk":
                            continue
                        work = self._reject_framing(event.code, event.head)
                    await acks.put((asyncio.create_task(work), received))
                if not chunk:
                    break
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                acks.put_nowait(None)
            if not ack_writer.done():
                await acks.put(None)
            await ack_writer
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            CONNECTIONS.labels(feed).dec()
            self._connections.discard(task)

    async def _write_acks(
        self,
        acks: asyncio.Queue[tuple[asyncio.Task[bytes], float] | None],
        writer: asyncio.StreamWriter,
    ) -> None:
        while (item := await acks.get()) is not None:
            work, received = item
            ack = await work
            try:
                writer.write(encode_frame(ack))
                await writer.drain()
            except ConnectionError:
                # The sender hung up; it will resend what it has no ACK for.
                continue
            ACK_LATENCY.labels(self.cfg.feed).observe(time.monotonic() - received)

    async def _accept(self, payload: bytes, peer: str) -> bytes:
        """Store one message durably, then answer. Never raises: every path ends in an ACK."""
        feed = self.cfg.feed
        MESSAGES.labels(feed).inc()
        BYTES.labels(feed).inc(len(payload))
        IN_FLIGHT.labels(feed).inc()
        try:
            return await self._store(payload, peer)
        finally:
            IN_FLIGHT.labels(feed).dec()

    async def _store(self, payload: bytes, peer: str) -> bytes:
        feed = self.cfg.feed
        envelope = {
            "feed": feed,
            "received_at": datetime.now(UTC),
            "peer": peer,
            "raw": payload,
        }
        try:
            text, charset = decode_bytes(
                payload, charset=self.cfg.charset, fallback=self.cfg.fallback_charset
            )
            message = parse(text, charset=charset)
        except Hl7ParseError as exc:
            # Kept whole in the DLQ; AE tells the sender not to resend the same bytes. When even
            # the DLQ write fails nothing is stored, so AR asks for a resend instead.
            reason = "charset" if isinstance(exc, Hl7CharsetError) else "parse"
            error = AckError(code=102 if reason == "charset" else 100, text=exc.reason)
            stored = await self._to_dlq(envelope, stage="receiving", reason=reason)
            # latin-1 reads any bytes, so the ACK can still echo the sender's MSH.
            return self._ack(payload, "errored" if stored else "rejected", error, "latin-1")
        envelope.update(
            charset=charset,
            control_id=message.control_id,
            message_type=message.message_type,
            patient_key=patient_key(feed, message),
        )
        key = envelope["patient_key"]
        try:
            await self.producer.send(
                self.route.raw_topic,
                codec.encode("RawMessage", envelope),
                key=key.encode("utf-8") if isinstance(key, str) else None,
                headers=[(codec.EVENT_TYPE_HEADER, b"RawMessage")],
            )
        except DeliveryError as exc:
            log.warning("hl7.raw delivery failed (%s); answering reject", exc.code)
            return self._ack(message, "rejected", AckError(code=207, text="storage unavailable"))
        return self._ack(message, "delivered", None)

    async def _reject_framing(self, code: str, head: bytes) -> bytes:
        feed = self.cfg.feed
        DLQ.labels(feed, f"framing_{code}").inc()
        text = f"frame {code}: message dropped (limit {self.cfg.max_frame_bytes} bytes)"
        return self._ack(head, "rejected", AckError(code=207, text=text), "latin-1")

    async def _to_dlq(self, envelope: dict[str, object], stage: str, reason: str) -> bool:
        feed = self.cfg.feed
        DLQ.labels(feed, reason).inc()
        try:
            await self.producer.send(
                self.route.dlq_topic,
                codec.encode("RawMessage", envelope),
                key=feed.encode("utf-8"),
                headers=[
                    (codec.EVENT_TYPE_HEADER, b"RawMessage"),
                    ("hl7bus.stage", stage.encode()),
                    ("hl7bus.reason", reason.encode()),
                ],
            )
        except DeliveryError:
            return False
        return True

    def _ack(
        self,
        source: bytes | Message,
        status: str,
        error: AckError | None,
        charset: str | None = None,
    ) -> bytes:
        ack = build_ack(source, status, error, charset=charset)
        code = parse(ack, charset=charset).get("MSA-1") or "none"
        ACKS.labels(self.cfg.feed, code).inc()
        return ack
