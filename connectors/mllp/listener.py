"""One feed's MLLP port: accepting connections, and the I/O around each connection's session.

The listener admits clients (allowed networks, TLS), then runs each connection as a reading task
that feeds its :class:`~hl7bus.connectors.mllp.session.Session` and does what the session says:
start the messages it admits (the feed's :class:`~hl7bus.connectors.mllp.intake.Intake` stores
and answers them), stop reading while messages wait for admission (TCP then pushes back on the
sender), write the ACKs it releases in arrival order, close an idle connection. The rules live
in the session; this module only owns sockets, tasks and timers.

Shutdown is graceful: stop accepting, stop reading, finish the messages already received (their
ACKs are written), flush the producer, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from functools import partial
from typing import Any

from hl7bus.connectors.envelope import Route
from hl7bus.connectors.kafka_clients import Submitter
from hl7bus.connectors.mllp.config import ListenerConfig, ssl_reason
from hl7bus.connectors.mllp.framer import Frame
from hl7bus.connectors.mllp.intake import Intake
from hl7bus.connectors.mllp.metrics import CLOSED, FRAMING_ERRORS, REFUSED, FeedMetrics
from hl7bus.connectors.mllp.session import Ack, Budget, Pending, Session

__all__ = ["ConnectionSlots", "MllpListener"]

log = logging.getLogger(__name__)

_READ_CHUNK = 64 * 1024


class ConnectionSlots:
    """Open connections shared by the listeners of a process (``max_connections_total``)."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class MllpListener:
    """One feed's port. Messages are written with ``producer``: the process's
    :class:`~hl7bus.connectors.kafka_clients.AsyncProducer` (benchmarks pass one that confirms
    at once, without Kafka). ``budget`` bounds the messages in flight across listeners."""

    def __init__(
        self,
        cfg: ListenerConfig,
        producer: Submitter,
        route: Route,
        *,
        budget: Budget | None = None,
        slots: ConnectionSlots | None = None,
    ) -> None:
        self.cfg = cfg
        self.producer = producer
        self.route = route
        self._budget = budget
        self._slots = slots
        self._open = 0  # connections accepted and not yet ended, TLS handshakes included
        self._metrics = FeedMetrics(cfg.feed)
        self._intake = Intake(cfg, producer, route, self._metrics)
        self._tls = cfg.tls.server_context() if cfg.tls is not None else None
        self._networks = [ipaddress.ip_network(str(n)) for n in cfg.allowed_networks]
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections: set[_Connection] = set()
        self._stopping = False
        #: Bytes taken off all connections so far (tests: reading stops under backpressure).
        self.read_bytes = 0
        #: Unix time of the feed's last message; silence is measured from the start until one.
        self.last_message_at = time.time()
        self._metrics.watch(
            lambda: len(self._connections),
            lambda: self._intake.in_flight,
            lambda: self.last_message_at,
            cfg.silence_threshold_s,
        )

    @property
    def feed(self) -> str:
        return self.cfg.feed

    @property
    def in_flight(self) -> int:
        """Messages received and not yet answered, over all connections (tests, /readyz)."""
        return self._intake.in_flight

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
        refusal = self._take_slot()
        if refusal is not None:
            REFUSED.labels(feed, refusal).inc()
            log.warning("mllp feed %s: refused a connection from %s (%s)", feed, address, refusal)
            writer.transport.abort()
            return
        try:
            await self._serve_admitted(reader, writer, address, peername)
        finally:
            self._open -= 1
            if self._slots is not None:
                self._slots.used -= 1

    def _take_slot(self) -> str | None:
        """Count a new connection in, or say which limit refuses it (the metric's reason)."""
        if self._open >= self.cfg.max_connections:
            return "max_connections"
        slots = self._slots
        if slots is not None:
            if slots.used >= slots.limit:
                return "max_connections_total"
            slots.used += 1
        self._open += 1
        return None

    async def _serve_admitted(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        peername: Any,
    ) -> None:
        feed = self.cfg.feed
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
                    ssl_reason(exc),
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


class _Connection:
    """One client connection: a reading task that feeds the session and starts the messages it
    admits, and the ACKs it releases, written together once per loop turn (a pipelining sender
    gets one write per batch, not one per ACK)."""

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
        self.broken = False
        self._loop = asyncio.get_running_loop()
        cfg = listener.cfg
        self.session = Session(
            max_frame_bytes=cfg.max_frame_bytes,
            max_in_flight=cfg.max_in_flight,
            idle_timeout_s=cfg.idle_timeout_s,
            now=self._loop.time(),
            budget=listener._budget,
            wake=self._wake,
            frame_timeout_s=cfg.frame_timeout_s,
        )
        self._reading: asyncio.Task[None] | None = None
        self._admission: asyncio.Future[None] | None = None  # the reader waits for admission
        self._flush_scheduled = False
        # While the sender does not read its ACKs and the transport's buffer is above its high
        # mark, a task awaits drain(); ACKs (and so the in-flight slots) wait for it.
        self._draining: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # run() waits for the last answer
        self._in_read = False  # the reader waits for bytes (not for admission)
        # Why the read was cut: "idle", "frame_timeout" (the timer), "shutdown" (stop_reading).
        self._expired: str | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def stop_reading(self) -> None:
        """Graceful stop: read nothing more; what was received still gets its ACK, and a frame
        received in part is kept in hl7.dlq as truncated (the read ends as if the sender had
        hung up). A reader waiting for admission instead (backpressure) drops what waits, as
        every close does: nothing of it was answered, so the sender resends it."""
        if self._reading is not None:
            if self._in_read:
                self._expired = "shutdown"  # _next_chunk turns the cancellation into a close
            self._reading.cancel()

    async def run(self) -> None:
        self._idle_timer = self._loop.call_at(
            self._loop.time() + self.listener.cfg.idle_timeout_s, self._watch_idle
        )
        self._reading = asyncio.create_task(self._read())
        try:
            await asyncio.wait([self._reading])
            if self.session.outstanding:  # every message received gets its answer first
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
            if self._expired is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            CLOSED.labels(feed, self._expired).inc()
            return b""
        except (ConnectionError, OSError):
            CLOSED.labels(feed, "error").inc()
            return b""
        finally:
            self._in_read = False
        if not chunk:
            CLOSED.labels(feed, "peer").inc()
        return chunk

    def _watch_idle(self) -> None:
        """Closes the connection when its session says it is idle or its open frame is overdue.
        One timer per connection, moved on lazily when it fires: a timeout armed around every
        read cost a timer handle (and a heap push and a cancel) per message."""
        self._idle_timer = None
        now = self._loop.time()
        session = self.session
        cfg = self.listener.cfg
        at = session.idle_check(now)
        expired = "idle" if at is None else None
        if session.frame_overdue(now):
            expired = "frame_timeout"
        if expired is not None and self._in_read and self._reading is not None:
            if expired == "frame_timeout":
                log.warning(
                    "mllp feed %s: closing the connection from %s: a frame not finished within "
                    "frame_timeout_s (%g s)",
                    cfg.feed,
                    self.peer.rsplit(":", 1)[0],
                    cfg.frame_timeout_s,
                )
            self._expired = expired  # _next_chunk turns the cancellation into a close
            self._reading.cancel()
            return
        if at is None:  # the reader is not waiting for bytes: it is done
            at = now + cfg.idle_timeout_s
        frame_at = session.frame_deadline
        if frame_at is not None and frame_at > now:
            at = min(at, frame_at)
        self._idle_timer = self._loop.call_at(at, self._watch_idle)

    def _watch_frame(self) -> None:
        """A frame opened: make sure the timer looks no later than its deadline. Moves the
        timer at most once per period (later frames have later deadlines)."""
        deadline = self.session.frame_deadline
        timer = self._idle_timer
        if deadline is not None and timer is not None and deadline < timer.when():
            timer.cancel()
            self._idle_timer = self._loop.call_at(deadline, self._watch_idle)

    async def _read(self) -> None:
        listener = self.listener
        feed = listener.cfg.feed
        metrics = listener._metrics
        intake = listener._intake
        session = self.session
        answered = self._answered
        peer = self.peer
        loop = self._loop
        frame_limit = listener.cfg.frame_timeout_s is not None
        try:
            while True:
                chunk = await self._next_chunk()
                listener.read_bytes += len(chunk)
                now = loop.time()
                # At the end (peer closed, idle, error, shutdown), an unfinished frame becomes a
                # "truncated" event: its bytes go to the DLQ like any other framing error's.
                events = session.receive(chunk, now)
                if frame_limit:
                    self._watch_frame()
                frames = [len(e.payload) for e in events if isinstance(e, Frame)]
                if frames:  # counted as received, once per read, before admission may block
                    metrics.received_messages(len(frames), sum(frames))
                    listener.last_message_at = time.time()
                if len(frames) < len(events):
                    for event in events:
                        if not isinstance(event, Frame):
                            FRAMING_ERRORS.labels(feed, event.code).inc()
                while True:
                    for item, event in session.admit(now):
                        if isinstance(event, Frame):
                            intake.submit(event.payload, peer, partial(answered, item))
                        else:
                            intake.submit_framing(event, peer, partial(answered, item))
                    if not session.waiting:
                        break
                    # Admission waits: read nothing more until a slot or a budget unit frees up.
                    self._admission = loop.create_future()
                    try:
                        await self._admission
                    finally:
                        self._admission = None
                    now = loop.time()
                if not chunk:
                    return
        finally:
            # Messages still waiting were never started: no ACK owed, nothing stored.
            session.close()

    def _wake(self) -> None:
        waiting = self._admission
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _answered(self, item: Pending, ack: Ack) -> None:
        # Only the oldest message's answer can make ACKs writable; one flush per loop turn
        # serves every answer of that turn (a delivery batch, or the messages of one read).
        if self.session.answer(item, ack) and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write every ACK that is ready in order from the oldest message, in one write."""
        self._flush_scheduled = False
        if self._draining is not None:
            return  # _drain flushes again once the sender has read enough
        data, received = self.session.take_acks()
        if not self.session.outstanding and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        if self.broken or not data:
            return
        transport = self.writer.transport
        if transport.is_closing():
            # The sender hung up; it will resend what it has no ACK for.
            self.broken = True
            return
        self.writer.write(data)
        now = self._loop.time()
        metrics = self.listener._metrics
        latency, stage_latency = metrics.latency, metrics.stage_latency
        for t in received:
            latency.observe(now - t)
            stage_latency.observe(now - t)
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
