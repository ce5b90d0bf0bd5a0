"""The MLLP listener: frames in, RawMessage envelopes to hl7.raw, ACKs out only after commit.

Each connection has a reader task (framer -> envelope -> queued to the producer, the message
kept in arrival order); each delivery report answers its message, and the ACKs that are ready in
arrival order are written, so pipelined senders get their ACKs in order. In-flight messages are
bounded per connection (``max_in_flight``) and per process (``max_in_flight_total``): when Kafka
slows, the reader stops reading and TCP pushes back on the sender instead of the listener
buffering without bound.

One process serves every feed of the ``mllp`` config section (:class:`MllpService`): each feed
is one :class:`MllpListener` on its own port, with its own charset policy, ACK mode, size limit,
allowed client networks and TLS settings, all sharing one Kafka producer.

Shutdown is graceful: stop accepting, stop reading, finish the messages already received (their
ACKs are written), flush the producer, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)

from hl7bus.connectors.envelope import (
    FEED_NAME_PATTERN,
    Built,
    Route,
    build_envelope,
    dlq_headers,
    header_fields,
    msh_segment,
    raw_headers,
)
from hl7bus.connectors.kafka_clients import AsyncProducer, DeliveryError
from hl7bus.connectors.mllp.framer import (
    DEFAULT_MAX_FRAME_BYTES,
    Frame,
    Framer,
    FramingError,
    encode_frame,
)
from hl7bus.hl7v2 import ACK_CODES, AckError, Hl7CharsetError, Message, build_ack, codec_for, parse
from hl7bus.schemas import codec

__all__ = [
    "FeedConfig",
    "ListenerConfig",
    "MllpConfig",
    "MllpListener",
    "MllpService",
    "Route",
    "TlsConfig",
]

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024

AckMode = Literal["auto", "original", "enhanced"]
ClientCerts = Literal["none", "optional", "required"]

# delivery status -> literal MSA-1 code, per forced ACK mode ("auto" lets MSH-15/16 decide).
_FORCED_CODES: dict[str, dict[str, str]] = {
    "original": {"delivered": "AA", "errored": "AE", "rejected": "AR"},
    "enhanced": {"delivered": "CA", "errored": "CE", "rejected": "CR"},
}


# -- config --------------------------------------------------------------------------------------


class TlsConfig(BaseModel):
    """TLS for one feed's port; with `client_ca`, mutual TLS."""

    model_config = ConfigDict(extra="forbid")

    cert: FilePath = Field(description="PEM file with the listener's certificate (and chain).")
    key: FilePath = Field(description="PEM file with the private key of `cert`.")
    client_ca: FilePath | None = Field(
        None,
        description="PEM file of the CA(s) that sign client certificates; set for mutual TLS.",
    )
    client_certs: ClientCerts | None = Field(
        None,
        description=(
            "Whether clients must present a certificate signed by client_ca: required (mutual "
            "TLS), optional (checked when presented) or none. Default: required when client_ca "
            "is set, else none."
        ),
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="A client that has not finished the TLS handshake by then is cut."
    )

    @property
    def client_cert_mode(self) -> ClientCerts:
        if self.client_certs is not None:
            return self.client_certs
        return "required" if self.client_ca is not None else "none"

    @model_validator(mode="after")
    def _loadable(self) -> TlsConfig:
        if self.client_certs in ("optional", "required") and self.client_ca is None:
            raise ValueError(
                f"client_certs={self.client_certs!r} needs client_ca (the CA file that signs "
                "client certificates)"
            )
        self.server_context()  # fail at load time, naming the key, not at the first client
        return self

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if self.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        try:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"cert/key: cannot load them ({_ssl_reason(exc)})") from None
        mode = self.client_cert_mode
        if mode != "none" and self.client_ca is not None:
            try:
                ctx.load_verify_locations(cafile=str(self.client_ca))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"client_ca: cannot load it ({_ssl_reason(exc)})") from None
            ctx.verify_mode = ssl.CERT_REQUIRED if mode == "required" else ssl.CERT_OPTIONAL
        return ctx


_ANY_NETWORK: list[Any] = ["0.0.0.0/0", "::/0"]


class ListenerConfig(BaseModel):
    """Everything one feed's listener needs (the `mllp` section itself is the one-feed case)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(2575, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    feed: str = Field(
        "default",
        pattern=FEED_NAME_PATTERN,
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    charset: str | None = Field(
        None,
        description=(
            "Decode every message with this charset, ignoring MSH-18 (feeds that lie); an HL7 "
            "name (KS X 1001, 8859/1, UNICODE UTF-8) or a Python codec name."
        ),
    )
    fallback_charset: str | None = Field(
        None, description="Charset to try when MSH-18's charset cannot decode the bytes."
    )
    ack_mode: AckMode = Field(
        "auto",
        description=(
            "ACK codes: auto (enhanced CA/CE/CR when MSH-15 or MSH-16 is set, else original "
            "AA/AE/AR), or force original or enhanced for every message."
        ),
    )
    max_frame_bytes: int = Field(
        DEFAULT_MAX_FRAME_BYTES,
        ge=1024,
        description=(
            "Largest accepted message. A bigger one is not stored in hl7.raw: its first 4 KiB go "
            "to hl7.dlq (reason oversize, its size in a header) and the sender gets AE/CE (AR/CR "
            "if even that DLQ write fails)."
        ),
    )
    max_in_flight: int = Field(
        256,
        ge=1,
        description="Messages one connection may have awaiting Kafka before reading pauses.",
    )
    idle_timeout_s: float = Field(
        600.0,
        gt=0,
        description=(
            "Close a connection that sent nothing for this long while no message of it awaited "
            "its ACK (an unfinished frame is then kept in hl7.dlq as truncated)."
        ),
    )
    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(_ANY_NETWORK),
        min_length=1,
        validate_default=True,
        description=(
            "Client networks (CIDRs) allowed to connect; others are closed at once, counted and "
            "logged by address. Default: everyone."
        ),
    )
    tls: TlsConfig | None = Field(
        None, description="TLS (and mutual TLS) on this port; null: plain TCP."
    )

    @field_validator("charset", "fallback_charset")
    @classmethod
    def _known_charset(cls, value: str | None) -> str | None:
        if value is not None:
            codec_for(value)  # Hl7CharsetError is a ValueError: pydantic reports the key
        return value


class FeedConfig(ListenerConfig):
    """One entry of `mllp.feeds`; keys left out are taken from the `mllp` section."""

    feed: str = Field(
        pattern=FEED_NAME_PATTERN,
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    port: int = Field(ge=0, le=65535, description="TCP port of this feed; 0 picks a free one.")


class MllpConfig(ListenerConfig):
    """The MLLP section: one feed from its own keys, or several from `feeds`."""

    feeds: list[FeedConfig] = Field(
        default_factory=list,
        description=(
            "Several feeds in one process, each on its own port. When set, only these run and "
            "the section's other listener keys are their defaults."
        ),
    )
    max_in_flight_total: int = Field(
        10_000,
        ge=1,
        description="Messages awaiting Kafka across all connections and feeds of the process.",
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="On stop, how long in-flight messages may take to get their ACKs."
    )
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )

    @model_validator(mode="after")
    def _distinct_feeds(self) -> MllpConfig:
        names: dict[str, int] = {}
        ports: dict[tuple[str, int], int] = {}
        for i, item in enumerate(self.listeners()):
            if item.feed in names:
                raise ValueError(
                    f"feeds[{i}].feed {item.feed!r} is also the name of feeds[{names[item.feed]}]"
                )
            names[item.feed] = i
            where = (item.host, item.port)
            if item.port and where in ports:
                raise ValueError(
                    f"feeds[{i}].port {item.port} is also the port of feeds[{ports[where]}]"
                )
            ports[where] = i
        return self

    def narrowed(
        self, feed: str | None = None, host: str | None = None, port: int | None = None
    ) -> MllpConfig:
        """The config of `mllp serve --feed NAME --listen HOST:PORT`.

        One feed (no `feeds` list): ``feed`` renames it, ``host``/``port`` move it. With `feeds`,
        ``feed`` picks the one feed to run and ``host``/``port`` move that one; moving needs a
        single feed. Raises ValueError naming the option and the feeds there are.
        """
        moved = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        base = self.model_dump(exclude_unset=True)
        if not self.feeds:
            return MllpConfig.model_validate({**base, **({"feed": feed} if feed else {}), **moved})
        names = [f.feed for f in self.feeds]
        if feed is not None:
            chosen = [f for f in self.feeds if f.feed == feed]
            if not chosen:
                raise ValueError(f"--feed {feed!r} is not in mllp.feeds ({', '.join(names)})")
        else:
            chosen = list(self.feeds)
            if moved and len(chosen) > 1:
                raise ValueError(
                    f"--listen needs one feed; name it with --feed ({', '.join(names)})"
                )
        feeds = [{**f.model_dump(exclude_unset=True), **moved} for f in chosen]
        return MllpConfig.model_validate({**base, "feeds": feeds})

    def listeners(self) -> list[ListenerConfig]:
        """The resolved config of every feed to serve, section defaults filled in."""
        if not self.feeds:
            return [ListenerConfig.model_construct(**_listener_fields(self))]
        base = _listener_fields(self)
        return [
            ListenerConfig.model_construct(
                **{**base, **{k: getattr(f, k) for k in f.model_fields_set}}
            )
            for f in self.feeds
        ]


def _listener_fields(cfg: ListenerConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in ListenerConfig.model_fields}


# -- metrics -------------------------------------------------------------------------------------

MESSAGES = Counter("hl7bus_mllp_messages_total", "Frames received.", ["feed"])
BYTES = Counter("hl7bus_mllp_received_bytes_total", "Payload bytes received.", ["feed"])
ACKS = Counter("hl7bus_mllp_acks_total", "ACKs sent, by MSA-1 code.", ["feed", "code"])
FRAMING_ERRORS = Counter("hl7bus_mllp_framing_errors_total", "Framing errors.", ["feed", "reason"])
DLQ = Counter("hl7bus_mllp_dlq_total", "Records written to the DLQ.", ["feed", "reason"])
DLQ_FAILURES = Counter(
    "hl7bus_mllp_dlq_failures_total",
    "DLQ writes that Kafka did not confirm (the sender got AR/CR, or no ACK was owed).",
    ["feed", "reason"],
)
CLOSED = Counter(
    "hl7bus_mllp_closed_connections_total",
    "Connections that ended, by reason: idle (closed by the listener after idle_timeout_s), "
    "peer (the sender closed), error (reset or other socket error).",
    ["feed", "reason"],
)
REFUSED = Counter(
    "hl7bus_mllp_refused_connections_total",
    "Connections closed before any message: client network not allowed, or TLS failed.",
    ["feed", "reason"],
)
ACK_LATENCY = Histogram(
    "hl7bus_mllp_ack_latency_seconds",
    "From the last byte of a message to its ACK being written.",
    ["feed"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
CONNECTIONS = Gauge("hl7bus_mllp_connections", "Open connections.", ["feed"])
IN_FLIGHT = Gauge("hl7bus_mllp_in_flight", "Messages awaiting Kafka.", ["feed"])


class _FeedMetrics:
    """The label children of one feed, looked up once instead of per message."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.messages = MESSAGES.labels(feed)
        self.bytes = BYTES.labels(feed)
        self.latency = ACK_LATENCY.labels(feed)
        self._acks: dict[str, Any] = {}

    def watch(self, listener: MllpListener) -> None:
        """The gauges read the listener's counts at scrape time, not per message."""
        CONNECTIONS.labels(self.feed).set_function(lambda: len(listener._connections))
        IN_FLIGHT.labels(self.feed).set_function(lambda: listener.in_flight)

    def ack(self, code: str) -> None:
        child = self._acks.get(code)
        if child is None:
            child = self._acks[code] = ACKS.labels(self.feed, code)
        child.inc()


# -- the listener --------------------------------------------------------------------------------


class MllpListener:
    """One feed's port. ``kafka=False`` is for benchmarks only: every message that decodes is
    answered AA/CA without being produced anywhere (the cost-of-durability baseline). It is a
    constructor argument on purpose, out of reach of any config file."""

    def __init__(
        self,
        cfg: ListenerConfig,
        producer: AsyncProducer | None,
        route: Route,
        *,
        budget: asyncio.Semaphore | None = None,
        kafka: bool = True,
    ) -> None:
        if kafka and producer is None:
            raise ValueError("a producer is required unless kafka=False")
        self.cfg = cfg
        self.producer = producer
        self.route = route
        self._kafka = kafka
        self._budget = budget
        self._metrics = _FeedMetrics(cfg.feed)
        self._tls = cfg.tls.server_context() if cfg.tls is not None else None
        self._networks = [ipaddress.ip_network(str(n)) for n in cfg.allowed_networks]
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[bytes]] = set()  # the rare paths of messages (DLQ, ...)
        self._connections: set[_Connection] = set()
        self._stopping = False
        #: Messages received and not yet answered, over all connections (tests, /readyz).
        self.in_flight = 0
        #: Bytes taken off all connections so far (tests: reading stops under backpressure).
        self.read_bytes = 0
        # ACK control ids (MSH-10, 20 characters): a random prefix per listener and a counter,
        # instead of a uuid4 (an urandom syscall) per message.
        self._ack_prefix = secrets.token_hex(6).upper()
        self._ack_seq = itertools.count()
        self._metrics.watch(self)

    @property
    def feed(self) -> str:
        return self.cfg.feed

    @property
    def port(self) -> int:
        assert self._server is not None, "listener not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.cfg.host, self.cfg.port, limit=_READ_CHUNK
        )

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting and reading; in-flight messages get their ACKs; flush; close.

        Connections still busy after ``grace_s`` are cut (their senders resend what has no ACK).
        """
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.stop_reading()
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self.producer is not None:
            await asyncio.to_thread(self.producer.flush, grace_s)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve_connection(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        feed = self.cfg.feed
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if peername else "unknown"
        if self._stopping or not self._allowed(address):
            if not self._stopping:
                REFUSED.labels(feed, "network").inc()
                log.warning("mllp feed %s: refused a connection from %s", feed, address)
            writer.transport.abort()
            return
        if self._tls is not None:
            assert self.cfg.tls is not None
            try:
                await writer.start_tls(
                    self._tls, ssl_handshake_timeout=self.cfg.tls.handshake_timeout_s
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                REFUSED.labels(feed, "tls").inc()
                log.warning(
                    "mllp feed %s: TLS handshake with %s failed (%s)",
                    feed,
                    address,
                    _ssl_reason(exc),
                )
                writer.transport.abort()
                return
        peer = f"{address}:{peername[1]}" if peername else "unknown"
        conn = _Connection(self, reader, writer, peer)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._networks)

    # -- one message -----------------------------------------------------------------------------
    #
    # The common case -- a message that decodes, produced to hl7.raw -- runs without a task of
    # its own: the envelope is built and queued in the reader, and the ACK is built in the
    # delivery callback (a task per message cost more than the rest of the asyncio work). The
    # rare paths (DLQ writes, a full producer queue) run as tasks.

    def _begin(self, answer: Callable[[bytes], None]) -> Callable[[bytes], None]:
        """Count one message in flight; the function returned answers it, once."""
        self.in_flight += 1
        answered = False

        def finish(ack: bytes) -> None:
            nonlocal answered
            if not answered:
                answered = True
                self.in_flight -= 1
                answer(ack)

        return finish

    def _submit(self, payload: bytes, peer: str, answer: Callable[[bytes], None]) -> None:
        """Store one message durably, then call ``answer`` with its ACK on the event loop (maybe
        before this returns). Never raises: every path ends in exactly one answer."""
        finish = self._begin(answer)
        try:
            self._store(payload, peer, finish)
        except Exception as exc:  # a bug; the sender still gets an answer, and resends
            log.error("mllp feed %s: unexpected %s", self.cfg.feed, type(exc).__name__)
            finish(self._internal_error(payload))

    def _submit_framing(
        self, event: FramingError, peer: str, answer: Callable[[bytes], None]
    ) -> None:
        """An oversize or truncated frame (:meth:`_accept_framing`); ``answer`` as for
        :meth:`_submit`, with ``b""`` when no ACK is owed."""
        echo = msh_segment(event.head) if event.code == "oversize" else None
        self._spawn(self._accept_framing(event, peer), self._begin(answer), echo)

    def _spawn(
        self,
        work: Coroutine[Any, Any, bytes],
        finish: Callable[[bytes], None],
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
                finish(b"" if payload is None else self._internal_error(payload))
            else:
                finish(task.result())

        task.add_done_callback(done)

    def _store(self, payload: bytes, peer: str, finish: Callable[[bytes], None]) -> None:
        cfg = self.cfg
        try:
            built = build_envelope(
                payload,
                feed=cfg.feed,
                peer=peer,
                charset=cfg.charset,
                fallback=cfg.fallback_charset,
                received_at=datetime.now(UTC),
            )
        except Exception as exc:  # a bug, not the sender's: keep the bytes, say AE
            log.error("mllp feed %s: envelope failed (%s)", cfg.feed, type(exc).__name__)
            self._spawn(self._envelope_failed(payload, peer), finish, payload)
            return
        message = built.message
        if message is None:
            self._spawn(self._undecodable(built, payload), finish, payload)
            return
        value = codec.encode("RawMessage", built.record)
        if not self._kafka:
            finish(self._ack(message, "delivered", None))  # same CPU work, no Kafka
            return
        assert self.producer is not None

        def delivered(report: Any) -> None:
            try:
                finish(self._delivered(message, report))
            except Exception as exc:  # a bug; answer like _submit does
                log.error("mllp feed %s: unexpected %s", cfg.feed, type(exc).__name__)
                finish(self._internal_error(payload))

        try:
            self.producer.submit(self.route.raw_topic, value, built.key, raw_headers(), delivered)
        except BufferError:
            # librdkafka's local queue is full: wait for room in a task (send retries).
            self._spawn(self._send_raw(message, value, built.key), finish, payload)

    def _delivered(self, message: Message, report: Any) -> bytes:
        """The ACK for a delivery report of hl7.raw: (partition, offset) or DeliveryError."""
        if isinstance(report, DeliveryError):
            log.warning("hl7.raw delivery failed (%s); answering reject", report.code)
            error = AckError(code=207, text="storage unavailable")
            return self._ack(message, "rejected", error)
        return self._ack(message, "delivered", None)

    async def _send_raw(self, message: Message, value: bytes, key: bytes | None) -> bytes:
        assert self.producer is not None
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
        error = AckError(code=207, text="internal error; message kept for review")
        return self._ack(payload, "errored" if stored else "rejected", error, "latin-1")

    async def _undecodable(self, built: Built, payload: bytes) -> bytes:
        # Kept whole in the DLQ; AE tells the sender not to resend the same bytes. When even
        # the DLQ write fails nothing is stored, so AR asks for a resend instead.
        reason = built.reason or "parse"
        detail = built.error.reason if built.error is not None else reason
        is_charset = isinstance(built.error, Hl7CharsetError)
        error = AckError(code=102 if is_charset else 100, text=detail)
        stored = await self._to_dlq(built.record, reason, detail)
        # latin-1 reads any bytes, so the ACK can still echo the sender's MSH.
        return self._ack(payload, "errored" if stored else "rejected", error, "latin-1")

    def _internal_error(self, payload: bytes) -> bytes:
        error = AckError(code=207, text="internal error")
        return self._ack(payload, "rejected", error, "latin-1")

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
            self._metrics.bytes.inc(size)
            record: dict[str, Any] = {
                "feed": cfg.feed,
                "received_at": datetime.now(UTC),
                "peer": peer,
                "raw": event.data or event.head,
                **header_fields(event.head, charset=cfg.charset, fallback=cfg.fallback_charset),
            }
            if event.code != "oversize":
                detail = f"frame of {size} bytes ended without its end block"
                await self._to_dlq(record, event.code, detail, size_bytes=size)
                return b""
            self._metrics.messages.inc()
            limit = cfg.max_frame_bytes
            detail = f"frame of {size} bytes exceeds max_frame_bytes {limit}; first bytes kept"
            stored = await self._to_dlq(record, "oversize", detail, size_bytes=size)
            text = f"message of {size} bytes exceeds the limit of {limit} bytes; " + (
                "not accepted, kept for review" if stored else "not stored"
            )
            error = AckError(code=104, text=text)
            status = "errored" if stored else "rejected"
            return self._ack(msh_segment(event.head), status, error, "latin-1")
        except Exception as exc:  # a bug; answer like _submit does
            log.error("mllp feed %s: unexpected %s", cfg.feed, type(exc).__name__)
            if event.code != "oversize":
                return b""
            return self._internal_error(msh_segment(event.head))

    async def _to_dlq(
        self,
        record: dict[str, Any],
        reason: str,
        detail: str | None,
        *,
        size_bytes: int | None = None,
    ) -> bool:
        """Write one hl7.dlq record; True once Kafka confirmed it (always, without Kafka)."""
        if not self._kafka:
            return True
        assert self.producer is not None
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
            if isinstance(exc, DeliveryError):
                log.warning("mllp feed %s: DLQ delivery failed (%s)", feed, exc.code)
            else:
                log.error("mllp feed %s: DLQ record failed (%s)", feed, type(exc).__name__)
            return False
        DLQ.labels(feed, reason).inc()
        return True

    def _ack(
        self,
        source: bytes | Message,
        status: str,
        error: AckError | None,
        charset: str | None = None,
    ) -> bytes:
        forced = _FORCED_CODES.get(self.cfg.ack_mode)
        ack = build_ack(
            source,
            forced[status] if forced else status,
            error,
            charset=charset,
            now=_now(),
            control_id=f"{self._ack_prefix}{next(self._ack_seq) & 0xFFFFFFFF:08X}",
        )
        self._metrics.ack(_msa1(ack, charset))
        return ack


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


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class _Pending:
    """One message of a connection awaiting its answer: the ACK (``b""``: none owed), or None
    while it is not known yet."""

    __slots__ = ("ack", "received")

    def __init__(self, received: float) -> None:
        self.ack: bytes | None = None
        self.received = received


class _Connection:
    """One client connection: a reading task, and ACKs written as their messages are answered.

    ``pending`` holds the connection's messages in arrival order. When the oldest has its answer,
    a flush writes, in one go, every ACK that is ready in order from there (a pipelining sender
    gets one write per batch, not one per ACK); answers that arrive out of order wait their turn.
    """

    def __init__(
        self,
        listener: MllpListener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.slots = asyncio.Semaphore(listener.cfg.max_in_flight)
        self.pending: deque[_Pending] = deque()
        self.broken = False
        self._loop = asyncio.get_running_loop()
        self._reading: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        # While the sender does not read its ACKs and the transport's buffer is above its high
        # mark, a task awaits drain(); ACKs (and so the in-flight slots) wait for it.
        self._draining: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # run() waits for the last answer
        self._last_read = 0.0
        self._in_read = False  # the reader waits for bytes (not for admission)
        self._idle_expired = False
        self._idle_timer: asyncio.TimerHandle | None = None

    def stop_reading(self) -> None:
        """Graceful stop: read nothing more; what was received still gets its ACK."""
        if self._reading is not None:
            self._reading.cancel()

    async def run(self) -> None:
        self._last_read = self._loop.time()
        self._idle_timer = self._loop.call_at(
            self._last_read + self.listener.cfg.idle_timeout_s, self._watch_idle
        )
        self._reading = asyncio.create_task(self._read())
        try:
            await asyncio.wait([self._reading])
            if self.pending:  # every message received gets its answer first
                self._idle = self._loop.create_future()
                await self._idle
        finally:
            self._reading.cancel()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            if self._draining is not None:
                self._draining.cancel()
            if self.broken or self.listener._stopping:
                self.writer.transport.abort()
            else:
                self.writer.close()
                with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                    await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    async def _next_chunk(self) -> bytes:
        """The next bytes from the sender; ``b""`` once the connection is over for reading."""
        feed = self.listener.cfg.feed
        self._in_read = True
        try:
            chunk = await self.reader.read(_READ_CHUNK)
        except asyncio.CancelledError:
            if not self._idle_expired:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            CLOSED.labels(feed, "idle").inc()
            return b""
        except (ConnectionError, OSError):
            CLOSED.labels(feed, "error").inc()
            return b""
        finally:
            self._in_read = False
        self._last_read = self._loop.time()
        if not chunk:
            CLOSED.labels(feed, "peer").inc()
        return chunk

    def _watch_idle(self) -> None:
        """Idle means: nothing received for idle_timeout_s while no message of this connection
        awaits its ACK (a send-and-wait sender waiting on a slow Kafka is not idle). One timer
        per connection, moved on lazily when it fires: a timeout armed around every read cost
        a timer handle (and a heap push and a cancel) per message."""
        self._idle_timer = None
        idle_s = self.listener.cfg.idle_timeout_s
        now = self._loop.time()
        deadline = self._last_read + idle_s
        # A millisecond of slack: the loop may run a timer a hair before its time.
        if now + 0.001 < deadline:
            self._idle_timer = self._loop.call_at(deadline, self._watch_idle)
        elif self.pending or not self._in_read:
            # Busy (ACKs owed, or waiting for admission): another full period from now.
            self._idle_timer = self._loop.call_at(now + idle_s, self._watch_idle)
        elif self._reading is not None:
            self._idle_expired = True  # _next_chunk turns the cancellation into "idle"
            self._reading.cancel()

    async def _read(self) -> None:
        listener = self.listener
        cfg = listener.cfg
        budget = listener._budget
        metrics = listener._metrics
        framer = Framer(cfg.max_frame_bytes)
        pending = self.pending
        answered = self._answered
        while True:
            chunk = await self._next_chunk()
            listener.read_bytes += len(chunk)
            # At the end (peer closed, idle, error), an unfinished frame becomes a "truncated"
            # event: its bytes go to the DLQ like any other framing error's.
            events = framer.feed(chunk) if chunk else framer.close()
            frames = [len(e.payload) for e in events if isinstance(e, Frame)]
            if frames:  # counted as received, once per read, before admission may block
                metrics.messages.inc(len(frames))
                metrics.bytes.inc(sum(frames))
            for event in events:
                received = time.monotonic()
                if isinstance(event, FramingError):
                    FRAMING_ERRORS.labels(cfg.feed, event.code).inc()
                    if event.code == "junk":
                        continue
                # Admission before any work: a message cancelled while it waits here was never
                # started, so no ACK is owed and nothing is stored.
                await self.slots.acquire()
                if budget is not None:
                    try:
                        await budget.acquire()
                    except asyncio.CancelledError:
                        self.slots.release()
                        raise
                item = _Pending(received)
                pending.append(item)
                if isinstance(event, Frame):
                    listener._submit(event.payload, self.peer, partial(answered, item))
                else:
                    listener._submit_framing(event, self.peer, partial(answered, item))
            if not chunk:
                return

    def _answered(self, item: _Pending, ack: bytes) -> None:
        item.ack = ack
        pending = self.pending
        # Only the oldest message's answer can make ACKs writable; one flush per loop turn
        # serves every answer of that turn (a delivery batch, or the messages of one read).
        if not self._flush_scheduled and pending and pending[0] is item:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write every ACK that is ready in order from the oldest message, in one write."""
        self._flush_scheduled = False
        if self._draining is not None:
            return  # _drain flushes again once the sender has read enough
        pending = self.pending
        budget = self.listener._budget
        frames: list[bytes] = []
        received: list[float] = []
        while pending and (ack := pending[0].ack) is not None:
            item = pending.popleft()
            self.slots.release()
            if budget is not None:
                budget.release()
            if ack:  # b"": no ACK owed (a truncated frame)
                frames.append(_frame(ack))
                received.append(item.received)
        if not pending and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        if self.broken or not frames:
            return
        transport = self.writer.transport
        if transport.is_closing():
            # The sender hung up; it will resend what it has no ACK for.
            self.broken = True
            return
        self.writer.write(b"".join(frames))
        now = time.monotonic()
        latency = self.listener._metrics.latency
        for t in received:
            latency.observe(now - t)
        if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            self._draining = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.broken = True
        finally:
            self._draining = None
        self._flush()


def _frame(ack: bytes) -> bytes:
    try:
        return encode_frame(ack)
    except ValueError:
        # An echoed MSH field held block bytes (a lone 0x1C survives framing): drop them.
        return encode_frame(ack.replace(b"\x0b", b"").replace(b"\x1c", b""))


# -- all feeds of a process ----------------------------------------------------------------------


def settle_gc() -> None:
    """Garbage collection for a long-running listener process, called once after start-up.

    Every message allocates hundreds of short-lived objects and almost none that form cycles;
    with CPython's default threshold (700 allocations) the young generation was collected every
    few messages, about 15-20 % of the listener's CPU at 32 connections (BENCHMARKS.md, mllp).
    What start-up allocated (modules, schemas, config) is frozen out of every collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


#: Starts the HTTP endpoints on (host, port) with a readiness check; returns the aiohttp runner.
StartHttp = Callable[[str, int, Callable[[], Awaitable[bool]]], Awaitable[Any]]


class MllpService:
    """Every feed of the `mllp` section, one shared producer, and the health endpoints."""

    def __init__(
        self,
        cfg: MllpConfig,
        producer: AsyncProducer | None,
        route: Route,
        *,
        kafka: bool = True,
        start_http: StartHttp | None = None,
    ) -> None:
        """`start_http`, given by the composition root, serves /metrics, /healthz and /readyz
        on mllp.metrics_port; without it the service has no HTTP endpoints."""
        self.cfg = cfg
        self.producer = producer
        self._start_http = start_http
        self._budget = asyncio.Semaphore(cfg.max_in_flight_total)
        self.listeners = [
            MllpListener(item, producer, route, budget=self._budget, kafka=kafka)
            for item in cfg.listeners()
        ]
        self._http: Any = None

    def listener(self, feed: str) -> MllpListener:
        for item in self.listeners:
            if item.feed == feed:
                return item
        raise KeyError(feed)

    @property
    def http_port(self) -> int | None:
        if self._http is None:
            return None
        addresses: Sequence[Any] = self._http.addresses
        return int(addresses[0][1]) if addresses else None

    async def start(self) -> None:
        started: list[MllpListener] = []
        try:
            for item in self.listeners:
                await item.start()
                started.append(item)
        except OSError as exc:
            for item in started:
                await item.stop(0.1)
            raise OSError(
                exc.errno, f"feed {item.feed}: cannot listen on {item.cfg.host}:{item.cfg.port}"
            ) from exc
        if self.cfg.metrics_port is not None and self._start_http is not None:
            self._http = await self._start_http(self.cfg.host, self.cfg.metrics_port, self.ready)

    async def ready(self) -> bool:
        """Ready: every feed is accepting connections and the Kafka cluster answers."""
        if not all(item.serving for item in self.listeners):
            return False
        if self.producer is None:
            return True
        return await asyncio.to_thread(self.producer.cluster_reachable)

    async def stop(self) -> None:
        grace = self.cfg.shutdown_grace_s
        await asyncio.gather(*(item.stop(grace) for item in self.listeners))
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

    def describe(self) -> list[str]:
        """One line per feed, for the console: where it listens and how."""
        lines = []
        for item in self.listeners:
            cfg = item.cfg
            tls = "plain TCP"
            if cfg.tls is not None:
                tls = "TLS" if cfg.tls.client_cert_mode == "none" else "mutual TLS"
                if cfg.tls.client_cert_mode == "optional":
                    tls += " (client certificate optional)"
            lines.append(f"feed {cfg.feed}: {cfg.host}:{item.port} ({tls})")
        return lines
