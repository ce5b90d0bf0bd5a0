"""MLLP framing as a sans-I/O state machine (the h11 model: docs/architecture.md, Layers).

The framer takes bytes as they arrive from any transport and returns events; it never reads,
writes or sleeps, so the asyncio listener, the sender client, the file reader and the tests all
share one implementation of the wire rules.

Wire rules (HL7 v2 MLLP, release 2):

- A frame is ``0x0B`` + payload + ``0x1C 0x0D``. The end block is the *two-byte sequence*; a lone
  ``0x1C`` that is not followed by ``0x0D`` is payload and is kept byte-exact.
- Bytes outside frames are junk. Every junk byte is counted in :attr:`Framer.junk_bytes`. A run of
  junk that holds anything besides CR, LF, space, tab or NUL is also reported as one
  ``FramingError(code="junk")`` when the run ends (at the next start block, or at :meth:`close`),
  because real senders routinely put a CR or LF after each end block and that is not worth an
  event, while anything else is a sender bug the ops team should see.
- A start block while a frame is open ends the open frame as ``code="truncated"`` (with
  ``at_start_block``; its bytes go to the dead-letter queue) and opens a new one: the sender
  gave up on the first frame, or a stray 0x0B sits inside it.
- A frame whose payload grows past ``max_frame_bytes`` is discarded as it streams in (memory stays
  bounded) and reported once, ``code="oversize"``, when that frame ends -- at its end block, at the
  next start block, or at :meth:`close`. Reporting at the end rather than at the moment the limit
  is crossed keeps events independent of how the stream was chunked, and it is the moment the
  sender starts waiting for its (negative) ACK.

Errors carry ``head``: the first bytes of what was dropped (at most 4 KiB), enough to find MSH-10
for a NAK and to put something useful in the dead-letter record without buffering the whole frame.
A truncated frame also carries ``data``, *all* its bytes: they were held anyway (a truncated frame
is never bigger than ``max_frame_bytes``), so the dead-letter record can keep them whole.

Invariant (fuzzed in tests): for any byte stream, any chunking of it fed to ``feed`` followed by
``close`` yields the same list of events, and never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

__all__ = [
    "END_BLOCK",
    "START_BLOCK",
    "Frame",
    "FrameEvent",
    "Framer",
    "FramingError",
    "encode_frame",
]

START_BLOCK: Final = b"\x0b"
END_BLOCK: Final = b"\x1c\x0d"
_FS: Final = 0x1C
_CR: Final = 0x0D
_HEAD_LIMIT: Final = 4096
# Bytes a sender may legitimately leave between frames (terminators after the end block, padding).
_BENIGN_JUNK: Final = b"\r\n\t \x00"

DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete MLLP frame; ``payload`` is exactly the bytes between the blocks."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes the framer could not deliver as a frame.

    ``code`` is one of ``"oversize"``, ``"truncated"``, ``"junk"``; ``skipped_bytes`` counts the
    dropped payload (or junk) bytes, framing blocks excluded; ``head`` is a prefix of them (at
    most 4 KiB); ``data`` holds all of them for ``"truncated"`` (bounded by ``max_frame_bytes``)
    and is empty otherwise. ``at_start_block`` is True for a frame truncated by a start block
    inside it (a stray 0x0B, or a sender that gave up on the frame), False when the stream
    ended inside it.
    """

    reason: str
    code: str
    skipped_bytes: int
    head: bytes = b""
    data: bytes = b""
    at_start_block: bool = False


FrameEvent: TypeAlias = Frame | FramingError


class _State(Enum):
    OUTSIDE = "outside"  # between frames, looking for a start block
    INSIDE = "inside"  # collecting a frame's payload
    DISCARDING = "discarding"  # inside an oversize frame, counting instead of buffering


class Framer:
    """Incremental MLLP deframer. Not thread-safe; one instance per connection."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        self.max_frame_bytes: Final = max_frame_bytes
        #: Bytes seen outside any frame since creation (whitespace included).
        self.junk_bytes = 0
        #: Complete frames emitted since creation.
        self.frames = 0
        self._head_limit = min(_HEAD_LIMIT, max_frame_bytes)
        self._reset()

    def _reset(self) -> None:
        self._state = _State.OUTSIDE
        self._buf = bytearray()
        # A 0x1C at the very end of a chunk may be the first half of the end block; it is held
        # back (not in _buf) until the next byte decides.
        self._pending_fs = False
        self._discarded = 0
        self._head = bytearray()
        self._junk_run = 0
        self._junk_head = bytearray()
        self._junk_notable = False

    @property
    def pending_bytes(self) -> int:
        """Bytes held for the open frame (bounded by ``max_frame_bytes`` + 1)."""
        return len(self._buf) + int(self._pending_fs)

    @property
    def in_frame(self) -> bool:
        """True while a start block has been seen and its frame has not ended."""
        return self._state is not _State.OUTSIDE

    def feed(self, data: bytes | bytearray | memoryview) -> list[FrameEvent]:
        """Consume the next bytes of the stream; return the events they complete."""
        view = bytes(data)
        events: list[FrameEvent] = []
        pos = 0
        n = len(view)
        while pos < n:
            if self._state is _State.OUTSIDE:
                start = view.find(START_BLOCK, pos)
                stop = n if start < 0 else start
                self._note_junk(view, pos, stop)
                if start < 0:
                    break
                self._flush_junk(events)
                self._open()
                pos = start + 1
                continue

            if self._pending_fs:
                self._pending_fs = False
                if view[pos] == _CR:
                    self._end_frame(events)
                    pos += 1
                    continue
                self._append(b"\x1c")

            end = view.find(END_BLOCK, pos)
            start = view.find(START_BLOCK, pos, n if end < 0 else end)
            if start >= 0:
                self._append(view[pos:start])
                self._drop_open_frame(events)
                self._open()
                pos = start + 1
            elif end >= 0:
                self._append(view[pos:end])
                self._end_frame(events)
                pos = end + 2
            else:
                stop = n
                if view[-1] == _FS:
                    self._pending_fs = True
                    stop -= 1
                self._append(view[pos:stop])
                pos = n
        return events

    def close(self) -> list[FrameEvent]:
        """Signal end of stream: report an unfinished frame or junk run, then reset.

        The framer is reusable afterwards, as if newly created (counters are kept).
        """
        events: list[FrameEvent] = []
        if self._state is not _State.OUTSIDE:
            if self._pending_fs:
                self._pending_fs = False
                self._append(b"\x1c")
            self._drop_open_frame(events, at_eof=True)
        self._flush_junk(events)
        self._reset()
        return events

    # -- internals -------------------------------------------------------------------------------

    def _open(self) -> None:
        self._state = _State.INSIDE
        self._buf = bytearray()
        self._discarded = 0
        self._head = bytearray()

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._state is _State.INSIDE:
            if len(self._buf) + len(chunk) <= self.max_frame_bytes:
                self._buf += chunk
                return
            # Switch to counting: keep only a bounded head, release the buffer.
            self._state = _State.DISCARDING
            self._discarded = len(self._buf)
            self._head = self._buf[: self._head_limit]
            self._buf = bytearray()
        self._discarded += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]

    def _end_frame(self, events: list[FrameEvent]) -> None:
        if self._state is _State.DISCARDING:
            events.append(self._oversize_error())
        else:
            events.append(Frame(bytes(self._buf)))
            self.frames += 1
        self._state = _State.OUTSIDE
        self._buf = bytearray()
        self._head = bytearray()

    def _drop_open_frame(self, events: list[FrameEvent], *, at_eof: bool = False) -> None:
        if self._state is _State.DISCARDING:
            events.append(self._oversize_error())
        else:
            where = "end of stream" if at_eof else "a new start block"
            data = bytes(self._buf)
            events.append(
                FramingError(
                    reason=f"frame cut by {where} after {len(data)} bytes, before its end block",
                    code="truncated",
                    skipped_bytes=len(data),
                    head=data[: self._head_limit],
                    data=data,
                    at_start_block=not at_eof,
                )
            )
        self._state = _State.OUTSIDE
        self._buf = bytearray()
        self._head = bytearray()

    def _oversize_error(self) -> FramingError:
        return FramingError(
            reason=f"frame of {self._discarded} bytes exceeds max_frame_bytes "
            f"({self.max_frame_bytes}); discarded",
            code="oversize",
            skipped_bytes=self._discarded,
            head=bytes(self._head),
        )

    def _note_junk(self, view: bytes, start: int, stop: int) -> None:
        if stop <= start:
            return
        chunk = view[start:stop]
        self.junk_bytes += len(chunk)
        self._junk_run += len(chunk)
        room = self._head_limit - len(self._junk_head)
        if room > 0:
            self._junk_head += chunk[:room]
        if not self._junk_notable and chunk.translate(None, _BENIGN_JUNK):
            self._junk_notable = True

    def _flush_junk(self, events: list[FrameEvent]) -> None:
        if self._junk_notable:
            events.append(
                FramingError(
                    reason=f"{self._junk_run} bytes outside any frame skipped",
                    code="junk",
                    skipped_bytes=self._junk_run,
                    head=bytes(self._junk_head),
                )
            )
        self._junk_run = 0
        self._junk_head = bytearray()
        self._junk_notable = False


def encode_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in MLLP blocks.

    Raises ``ValueError`` if the payload holds a start block or the end-block sequence: no receiver
    could recover the original bytes from such a frame.
    """
    if START_BLOCK in payload or END_BLOCK in payload:
        raise ValueError("payload contains an MLLP start block (0x0B) or end block (0x1C 0x0D)")
    return START_BLOCK + payload + END_BLOCK
