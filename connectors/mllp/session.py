"""The rules of one MLLP connection, sans-I/O (the h11 model): bytes and times in, decisions out.

A :class:`Session` frames what the sender sent, decides which messages start and which wait,
keeps the answers in arrival order and says when the connection is idle. It never reads, writes,
sleeps or looks at a clock: the listener (``listener.py``) hands it the bytes it read and the time
(monotonic seconds), and does what it is told -- start a message, write ACK bytes, stop reading
until woken, close.

The rules:

- **ACK order.** Answers go out in the order their messages arrived, even when Kafka confirms
  them out of order: an answer waits until every older message of the connection has its own.
  All the ACKs that are ready in order are taken together, for one write.
- **Admission.** A message starts only while its connection has fewer than ``max_in_flight``
  messages whose ACK is not written yet, and the process-wide :class:`Budget`
  (``max_in_flight_total``, shared by every connection of every feed) has room. Otherwise it
  waits, and everything after it waits too: the listener reads nothing more, so TCP pushes back
  on the sender instead of the listener buffering without bound. A message that waits has not
  started: when the connection ends meanwhile it is dropped -- nothing stored, no ACK owed, the
  sender resends it. Junk between frames is no message: it is skipped, it takes no slot.
- **Idle.** A connection that sent no bytes for ``idle_timeout_s`` while none of its messages
  waits to start or for its ACK is idle; the listener closes it. A send-and-wait sender waiting
  on a slow Kafka is not idle.
- **Frame deadline.** A frame must end within ``frame_timeout_s`` of the read that brought its
  start block, however steadily its bytes trickle in (a slowloris sender keeps the idle timer
  fresh with a byte a second); the listener closes a connection whose open frame is overdue,
  and the frame's bytes become a truncated frame like any other. Time spent waiting for
  admission does not count: the listener was not reading then, the sender was not slow.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from hl7bus.connectors.mllp.framer import FrameEvent, Framer, FramingError, encode_frame

__all__ = ["Ack", "Budget", "Pending", "Session", "frame_ack"]

#: A message's answer: its ACK, or several ACKs each in its own frame (a batch acknowledged
#: message by message); ``b""`` when none is owed.
Ack = bytes | tuple[bytes, ...]


class Budget:
    """Units of in-flight messages shared by sessions (``max_in_flight_total``).

    A session takes one unit per message it starts and gives it back when that message's ACK is
    taken. A session that finds none left queues; returned units are handed to queued sessions
    first come, first served, and each is woken.
    """

    __slots__ = ("_queue", "free")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a budget needs at least one unit")
        #: Units nobody holds. Never more than 0 while a session queues.
        self.free = size
        self._queue: deque[Session] = deque()

    def _take(self, session: Session) -> bool:
        if self.free:
            self.free -= 1
            return True
        if not session._queued:
            session._queued = True
            self._queue.append(session)
        return False

    def _give(self, count: int) -> None:
        self.free += count
        queue = self._queue
        while self.free and queue:
            session = queue.popleft()
            session._queued = False
            self.free -= 1
            session._granted += 1
            session._wake()

    def _leave(self, session: Session) -> None:
        if session._queued:
            session._queued = False
            self._queue.remove(session)
        if session._granted:
            granted, session._granted = session._granted, 0
            self._give(granted)


class Pending:
    """One started message awaiting its ACK: ``ack`` is None until it is answered (``b""``: no
    ACK owed); ``received`` is when the session reached it (its ACK latency starts there)."""

    __slots__ = ("ack", "received")

    def __init__(self, received: float) -> None:
        self.ack: Ack | None = None
        self.received = received


class Session:
    """One connection's state: the framer, the messages waiting to start, the started ones in
    arrival order, and when bytes last came.

    ``wake`` is called when a message that waited may now start (a slot of this connection was
    freed, or the budget handed it a unit); it must only schedule a call to :meth:`admit`, not
    make it, since it runs inside :meth:`take_acks` of this or another session.
    """

    __slots__ = (
        "_blocked_since",
        "_budget",
        "_frame_s",
        "_frame_since",
        "_framer",
        "_granted",
        "_idle_s",
        "_last_bytes",
        "_max_in_flight",
        "_pending",
        "_queued",
        "_waiting",
        "_wake",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        max_in_flight: int,
        idle_timeout_s: float,
        now: float,
        budget: Budget | None = None,
        wake: Callable[[], None] | None = None,
        frame_timeout_s: float | None = None,
    ) -> None:
        self._framer = Framer(max_frame_bytes)
        self._frame_s = frame_timeout_s
        self._frame_since: float | None = None  # when the open frame's start block was read
        self._max_in_flight = max_in_flight
        self._idle_s = idle_timeout_s
        self._budget = budget
        self._wake: Callable[[], None] = wake or _nothing
        self._waiting: deque[FrameEvent] = deque()
        self._pending: deque[Pending] = deque()
        self._last_bytes = now
        # When the first waiting message was reached and could not start: its latency counts
        # from then, as if it had started.
        self._blocked_since: float | None = None
        self._granted = 0  # budget units handed to this session while it queued
        self._queued = False  # in the budget's queue

    @property
    def waiting(self) -> bool:
        """A message waits to start: read nothing more until ``wake``, then :meth:`admit`."""
        return bool(self._waiting)

    @property
    def outstanding(self) -> int:
        """Started messages whose ACK has not been taken yet (answered or not)."""
        return len(self._pending)

    def receive(self, data: bytes, now: float) -> list[FrameEvent]:
        """Bytes from the sender; ``b""`` for the end of the stream (an unfinished frame then
        becomes a "truncated" error). Returns the framing events, for counting; the frames and
        the oversize and truncated errors wait for :meth:`admit`."""
        self._last_bytes = now
        framer = self._framer
        events = framer.feed(data) if data else framer.close()
        self._waiting.extend(events)
        if not framer.in_frame:
            self._frame_since = None
        elif events or self._frame_since is None:
            # A frame ended (or began) in this read and another is open: it started now.
            self._frame_since = now
        return events

    def admit(self, now: float) -> list[tuple[Pending, FrameEvent]]:
        """Start the waiting messages, in arrival order, as far as the limits allow. Returns each
        started message with its event; the caller stores it and later calls :meth:`answer`.
        Check :attr:`waiting` afterwards: True means the rest waits for ``wake``."""
        started: list[tuple[Pending, FrameEvent]] = []
        waiting = self._waiting
        pending = self._pending
        while waiting:
            event = waiting[0]
            if type(event) is FramingError and event.code == "junk":
                waiting.popleft()
                continue
            if len(pending) >= self._max_in_flight or not self._take_unit():
                if self._blocked_since is None:
                    self._blocked_since = now
                break
            waiting.popleft()
            since = self._blocked_since
            self._blocked_since = None
            if since is not None and self._frame_since is not None:
                # Reading paused while admission waited: the open frame's clock did too.
                self._frame_since += now - since
            item = Pending(now if since is None else since)
            pending.append(item)
            started.append((item, event))
        return started

    def _take_unit(self) -> bool:
        budget = self._budget
        if budget is None:
            return True
        if self._granted:
            self._granted -= 1
            return True
        return budget._take(self)

    def answer(self, item: Pending, ack: Ack) -> bool:
        """A started message's ACK (``b""``: none owed). True when ACKs are ready to be taken
        (the oldest message is answered); one :meth:`take_acks` serves the answers of a moment."""
        item.ack = ack
        pending = self._pending
        return bool(pending) and pending[0] is item

    def take_acks(self) -> tuple[bytes, list[float]]:
        """The ACKs ready in arrival order from the oldest message: their frames, joined for one
        write, and when each of their messages was reached (for latency). Their slots and
        budget units are freed, which may wake this session or others."""
        pending = self._pending
        frames: list[bytes] = []
        received: list[float] = []
        taken = 0
        while pending and (ack := pending[0].ack) is not None:
            item = pending.popleft()
            taken += 1
            if ack:
                if isinstance(ack, tuple):
                    frames.extend(frame_ack(one) for one in ack)
                else:
                    frames.append(frame_ack(ack))
                received.append(item.received)
        if taken:
            if self._budget is not None:
                self._budget._give(taken)
            if self._waiting and not self._queued:
                self._wake()  # a slot of this connection is free
        return b"".join(frames), received

    def idle_check(self, now: float) -> float | None:
        """When to look again, or None: the connection is idle now."""
        deadline = self._last_bytes + self._idle_s
        # A millisecond of slack: a timer may run a hair before its time.
        if now + 0.001 < deadline:
            return deadline
        if self._pending or self._waiting:
            return now + self._idle_s  # busy: another full period from now
        return None

    @property
    def frame_deadline(self) -> float | None:
        """When the open frame must have ended, or None without one (or without a limit).
        At or past it (:meth:`frame_overdue`) the listener closes the connection."""
        if self._frame_since is None or self._frame_s is None:
            return None
        return self._frame_since + self._frame_s

    def frame_overdue(self, now: float) -> bool:
        deadline = self.frame_deadline
        # The same millisecond of slack as idle_check.
        return deadline is not None and now + 0.001 >= deadline

    def close(self) -> None:
        """Reading is over (the sender left, idle, error, shutdown): messages still waiting are
        dropped, and budget units this session holds for them go back. ACKs of the started
        messages are still answered and taken as usual."""
        self._waiting.clear()
        self._blocked_since = None
        if self._budget is not None:
            self._budget._leave(self)


def frame_ack(ack: bytes) -> bytes:
    """An ACK in its MLLP frame."""
    try:
        return encode_frame(ack)
    except ValueError:
        # An echoed MSH field held block bytes (a lone 0x1C survives framing): drop them.
        return encode_frame(ack.replace(b"\x0b", b"").replace(b"\x1c", b""))


def _nothing() -> None:
    pass
