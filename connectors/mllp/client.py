"""An asyncio MLLP sender: ``hl7bus send``, the benchmarks and the tests use it.

One connection carries up to ``window`` unacknowledged messages (senders in the field pipeline
too: docs/architecture.md, "HL7 v2 and MLLP"). MLLP has no correlation id on the wire, so ACKs are
matched to messages strictly in send order, and each match is checked: MSA-2 must echo the sent
MSH-10. A mismatch is the classic interface-engine bug, so it is recorded as an error rather than
trusted.

Failures never raise; every message gets exactly one :class:`AckResult`. ``error`` is ``None`` or a
string whose part before the first ``":"`` is a stable kind (what :func:`summarize` counts):

================== ================================================================
``timeout``         no ACK within ``ack_timeout``; the connection is then closed
``connection closed`` sent, but the connection ended before its ACK arrived
``not sent``        never written, because its connection had already failed
``connection refused`` / ``connect failed``  the connection could not be opened
``ack mismatch``    MSA-2 differs from the MSH-10 that was sent
``bad ack``         the reply could not be read as an ACK (no MSA, unparseable, bad framing)
``unframeable``     the message holds MLLP block bytes and cannot be framed
================== ================================================================

``on_ack`` is called once per message, in completion order, for failures too (progress bars);
it runs on the event loop inside the reader and must not raise or block.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl as ssl_module
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hl7bus.connectors.mllp.framer import Frame, Framer, encode_frame
from hl7bus.connectors.tls import client_ssl_context
from hl7bus.hl7v2 import parse, read_msh_field

__all__ = [
    "AckResult",
    "SendSummary",
    "client_ssl_context",
    "send_many",
    "send_messages",
    "summarize",
]

_READ_SIZE = 65536
# An ACK is small; a reply bigger than this is not an ACK and must not exhaust memory.
_MAX_ACK_BYTES = 1024 * 1024
_ACCEPT_CODES = frozenset({"AA", "CA"})


@dataclass(frozen=True, slots=True)
class AckResult:
    """The outcome of sending one message. ``index`` is its position in the input."""

    index: int
    control_id: str | None
    code: str | None
    latency_s: float
    error: str | None
    ack: bytes | None

    @property
    def accepted(self) -> bool:
        """True for a well-matched positive ACK (AA or CA)."""
        return self.error is None and self.code in _ACCEPT_CODES


@dataclass(frozen=True, slots=True)
class SendSummary:
    """Counts and ACK latencies of a send run (latencies over results that carry an ACK)."""

    total: int
    accepted: int
    by_code: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None

    @property
    def ok(self) -> bool:
        """True when every message was accepted."""
        return self.accepted == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "accepted": self.accepted,
            "by_code": dict(self.by_code),
            "errors": dict(self.errors),
            "latency_p50_s": self.latency_p50_s,
            "latency_p90_s": self.latency_p90_s,
            "latency_p99_s": self.latency_p99_s,
            "latency_max_s": self.latency_max_s,
        }


def summarize(results: Iterable[AckResult]) -> SendSummary:
    """Aggregate results: ACK codes, error kinds, nearest-rank latency percentiles."""
    items = list(results)
    by_code = Counter(r.code for r in items if r.code is not None)
    errors = Counter(r.error.split(":", 1)[0] for r in items if r.error is not None)
    latencies = sorted(r.latency_s for r in items if r.ack is not None)

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[max(0, math.ceil(q * len(latencies)) - 1)]

    return SendSummary(
        total=len(items),
        accepted=sum(r.accepted for r in items),
        by_code=dict(sorted(by_code.items())),
        errors=dict(sorted(errors.items())),
        latency_p50_s=pct(0.50),
        latency_p90_s=pct(0.90),
        latency_p99_s=pct(0.99),
        latency_max_s=latencies[-1] if latencies else None,
    )


async def send_messages(
    host: str,
    port: int,
    messages: Iterable[bytes],
    *,
    window: int = 1,
    ack_timeout: float = 30.0,
    ssl: ssl_module.SSLContext | None = None,
    on_ack: Callable[[AckResult], None] | None = None,
) -> list[AckResult]:
    """Send ``messages`` over one MLLP connection; return one result per message, in input order.

    ``ack_timeout`` also bounds opening the connection (and the TLS handshake).
    """
    results = await _send_on_connection(
        host, port, enumerate(messages), window, ack_timeout, ssl, on_ack, None
    )
    return sorted(results, key=lambda r: r.index)


async def send_many(
    host: str,
    port: int,
    messages: Iterable[bytes],
    *,
    connections: int = 1,
    window: int = 1,
    ack_timeout: float = 30.0,
    ssl: ssl_module.SSLContext | None = None,
    rate: float | None = None,
    on_ack: Callable[[AckResult], None] | None = None,
) -> list[AckResult]:
    """Spread ``messages`` round-robin over ``connections`` concurrent connections.

    Message *i* goes to connection ``i % connections``; ``index`` in the results is *i*.
    ``rate`` caps the overall send rate in messages per second (evenly spaced sends shared by
    all connections); ``None`` sends as fast as the windows allow.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    source = _RoundRobin(messages, connections)
    pacer = _Pacer(rate) if rate is not None else None
    per_connection = await asyncio.gather(
        *(
            _send_on_connection(host, port, source.lane(k), window, ack_timeout, ssl, on_ack, pacer)
            for k in range(connections)
        )
    )
    return sorted((r for rs in per_connection for r in rs), key=lambda r: r.index)


# -- internals -----------------------------------------------------------------------------------


class _RoundRobin:
    """Deals one iterable out to N lanes lazily, so a generator input is never read whole.

    Items for lanes that are behind are buffered until those lanes ask for them.
    """

    def __init__(self, messages: Iterable[bytes], lanes: int) -> None:
        self._source = enumerate(messages)
        self._lanes = lanes
        self._queues: list[deque[tuple[int, bytes]]] = [deque() for _ in range(lanes)]

    def lane(self, k: int) -> Iterator[tuple[int, bytes]]:
        queue = self._queues[k]
        while True:
            if queue:
                yield queue.popleft()
                continue
            item = next(self._source, None)
            if item is None:
                return
            self._queues[item[0] % self._lanes].append(item)


class _Pacer:
    """Evenly spaced send slots shared by all connections (a one-token bucket)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next: float | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Claim the slot before sleeping, so concurrent callers get distinct slots.
        slot = now if self._next is None else max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(slots=True)
class _InFlight:
    index: int
    control_id: str | None
    sent_at: float


def _control_id(message: bytes) -> str | None:
    """MSH-10, the value the receiver echoes in MSA-2. Read from the MSH bytes when it is plain
    ASCII without delimiters or escapes (parsing the whole message cost the sender more than the
    rest of its work per message); parsed otherwise, or when the MSH does not start the bytes."""
    if message[:3] == b"MSH":
        value = read_msh_field(message, 10)
        delimiters = message[3:8].decode("latin-1")
        if value and value.isascii() and not any(c in value for c in delimiters):
            return value
    try:
        return parse(message).get("MSH-10")
    except ValueError:  # Hl7ParseError and charset errors; the message is still sent as given
        return None


class _Connection:
    """One connection's pipeline: the caller's task writes, a reader task matches ACKs."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        window: int,
        ack_timeout: float,
        on_ack: Callable[[AckResult], None] | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ack_timeout = ack_timeout
        self.on_ack = on_ack
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(window)
        self.inflight: deque[_InFlight] = deque()
        self.idle = asyncio.Event()
        self.idle.set()
        self.failed = False
        self.results: list[AckResult] = []
        self.framer = Framer(_MAX_ACK_BYTES)
        # One ACK timer per connection, for the oldest message (ACKs come in order): a timer per
        # message cost a heap push and a cancel each.
        self.timer: asyncio.TimerHandle | None = None

    def record(self, result: AckResult) -> None:
        self.results.append(result)
        if self.on_ack is not None:
            self.on_ack(result)

    async def send(self, index: int, message: bytes, pacer: _Pacer | None) -> None:
        if not self.failed:
            await self.slots.acquire()
        if self.failed:
            self.record(_unsent(index, "not sent"))
            return
        try:
            frame = encode_frame(message)
        except ValueError as exc:
            self.slots.release()
            self.record(_unsent(index, f"unframeable: {exc}"))
            return
        if pacer is not None:
            await pacer.wait()
            if self.failed:
                self.record(_unsent(index, "not sent"))
                return
        self.inflight.append(_InFlight(index, _control_id(message), self.loop.time()))
        if self.timer is None:
            self._arm()
        self.idle.clear()
        self.writer.write(frame)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.fail("connection closed")

    async def receive(self) -> None:
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    break
                for event in self.framer.feed(data):
                    if not self.inflight:
                        continue  # an unsolicited reply matches nothing we sent
                    pending = self.inflight[0]
                    if isinstance(event, Frame):
                        self._complete(pending, *_check_ack(event.payload, pending.control_id))
                    elif event.code != "junk":
                        self._complete(pending, None, f"bad ack: {event.reason}", None)
        except (ConnectionError, OSError):
            pass
        self.fail("connection closed")

    def _complete(
        self, pending: _InFlight, code: str | None, error: str | None, ack: bytes | None
    ) -> None:
        self.inflight.popleft()
        latency = self.loop.time() - pending.sent_at
        self.record(AckResult(pending.index, pending.control_id, code, latency, error, ack))
        self.slots.release()
        if not self.inflight:
            self.idle.set()

    def _arm(self) -> None:
        if self.inflight:
            deadline = self.inflight[0].sent_at + self.ack_timeout
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        """The oldest message's deadline, as of when the timer was set: if that message (or a
        later one that became the oldest meanwhile) is past its deadline, time out."""
        self.timer = None
        if not self.inflight:
            return
        pending = self.inflight[0]
        # A millisecond of slack: the loop may run a timer a hair before its time.
        if self.loop.time() + 0.001 < pending.sent_at + self.ack_timeout:
            self._arm()
            return
        self._complete(pending, None, "timeout", None)
        self.fail("connection closed")

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def fail(self, error: str) -> None:
        """Stop the connection: in-flight messages get ``error``, later ones "not sent"."""
        self.stop_timer()
        if not self.failed:
            self.failed = True
            # abort(), not close(): a silent peer may not be reading, and close() would wait to
            # flush the write buffer while drain() stays blocked.
            self.writer.transport.abort()
        while self.inflight:
            self._complete(self.inflight[0], None, error, None)
        # Wake a sender blocked on a full window so it can report the rest as not sent.
        self.slots.release()
        self.idle.set()


def _check_ack(payload: bytes, control_id: str | None) -> tuple[str | None, str | None, bytes]:
    """Return (MSA-1, error, ack bytes) for one reply frame."""
    try:
        ack = parse(payload)
    except ValueError as exc:
        return None, f"bad ack: {exc}", payload
    code = ack.get("MSA-1")
    if code is None:
        return None, "bad ack: no MSA-1", payload
    echoed = ack.get("MSA-2")
    if control_id is not None and echoed != control_id:
        return code, f"ack mismatch: MSA-2 {echoed!r} != MSH-10 {control_id!r}", payload
    return code, None, payload


def _unsent(index: int, error: str, control_id: str | None = None) -> AckResult:
    return AckResult(index, control_id, None, 0.0, error, None)


def _connect_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return "connect failed: timed out"
    return f"connect failed: {type(exc).__name__}: {exc}"


async def _send_on_connection(
    host: str,
    port: int,
    items: Iterable[tuple[int, bytes]],
    window: int,
    ack_timeout: float,
    ssl: ssl_module.SSLContext | None,
    on_ack: Callable[[AckResult], None] | None,
    pacer: _Pacer | None,
) -> list[AckResult]:
    if window < 1:
        raise ValueError("window must be at least 1")
    if ack_timeout <= 0:
        raise ValueError("ack_timeout must be positive")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl), ack_timeout
        )
    except (OSError, TimeoutError, ssl_module.SSLError) as exc:
        error = _connect_error(exc)
        failed: list[AckResult] = []
        for index, _ in items:
            failed.append(_unsent(index, error))
            if on_ack is not None:
                on_ack(failed[-1])
        return failed

    conn = _Connection(reader, writer, window, ack_timeout, on_ack)
    receiver = asyncio.create_task(conn.receive())
    try:
        for index, message in items:
            await conn.send(index, message, pacer)
        await conn.idle.wait()
    finally:
        if not conn.failed:
            conn.failed = True
            writer.close()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        conn.stop_timer()  # only still set when the caller itself was cancelled
    # Bounded: a TLS peer that never answers close_notify must not hold the caller.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    return conn.results
