"""The MLLP framer: examples, a byte-at-a-time reference model, and h11-style fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7bus.connectors.mllp.framer import (
    Frame,
    FrameEvent,
    Framer,
    FramingError,
    encode_frame,
)

SB, EB = b"\x0b", b"\x1c\r"
MSG = b"MSH|^~\\&|LAB|H1|EHR|H1|20240101000000||ORU^R01|C1|P|2.5\rPID|1||123\r"


def run(
    stream: bytes, chunks: list[int] | None = None, max_frame_bytes: int = 1 << 20
) -> list[FrameEvent]:
    framer = Framer(max_frame_bytes)
    events: list[FrameEvent] = []
    pos = 0
    for size in chunks or []:
        events += framer.feed(stream[pos : pos + size])
        pos += size
    events += framer.feed(stream[pos:])
    events += framer.close()
    return events


def shape(events: list[FrameEvent]) -> list[tuple[object, ...]]:
    """Events without the human-readable reason, for comparing with the reference model."""
    return [
        ("frame", e.payload) if isinstance(e, Frame) else (e.code, e.skipped_bytes, e.head, e.data)
        for e in events
    ]


def reference(stream: bytes, max_frame_bytes: int) -> list[tuple[object, ...]]:
    """A deliberately naive per-byte model of the rules documented in framer.py."""
    head_limit = min(4096, max_frame_bytes)
    out: list[tuple[object, ...]] = []
    inside = False
    payload = bytearray()
    junk = bytearray()

    def flush_junk() -> None:
        if junk.translate(None, b"\r\n\t \x00"):
            out.append(("junk", len(junk), bytes(junk[:head_limit]), b""))
        junk.clear()

    def finish(complete: bool) -> None:
        if len(payload) > max_frame_bytes:
            out.append(("oversize", len(payload), bytes(payload[:head_limit]), b""))
        elif complete:
            out.append(("frame", bytes(payload)))
        else:
            # A truncated frame keeps all its bytes (bounded by max_frame_bytes) for the DLQ.
            out.append(("truncated", len(payload), bytes(payload[:head_limit]), bytes(payload)))

    i = 0
    while i < len(stream):
        byte = stream[i]
        if not inside:
            if byte == 0x0B:
                flush_junk()
                inside, payload = True, bytearray()
            else:
                junk.append(byte)
            i += 1
        elif byte == 0x0B:
            finish(complete=False)
            payload = bytearray()
            i += 1
        elif stream[i : i + 2] == EB:
            finish(complete=True)
            inside = False
            i += 2
        else:
            payload.append(byte)
            i += 1
    if inside:
        finish(complete=False)
    flush_junk()
    return out


# -- examples ---------------------------------------------------------------------------------


def test_one_frame_byte_exact() -> None:
    assert run(encode_frame(MSG)) == [Frame(MSG)]


def test_many_frames_in_one_read_and_crlf_between_is_silent() -> None:
    framer = Framer()
    data = (encode_frame(MSG) + b"\r\n") * 3
    assert framer.feed(data) == [Frame(MSG)] * 3
    assert framer.close() == []
    assert framer.junk_bytes == 6
    assert framer.frames == 3


def test_partial_reads_byte_by_byte() -> None:
    data = encode_frame(MSG) * 2
    assert run(data, [1] * (len(data) - 1)) == [Frame(MSG)] * 2


def test_lone_fs_is_payload() -> None:
    payload = b"A\x1cB\x1c\x1c"
    assert encode_frame(payload) == b"\x0bA\x1cB\x1c\x1c\x1c\r"
    assert run(encode_frame(payload)) == [Frame(payload)]
    # The held-back 0x1C at a chunk edge must not be lost or duplicated.
    assert run(encode_frame(payload), [3, 1, 1, 1]) == [Frame(payload)]


def test_end_block_split_across_reads() -> None:
    framer = Framer()
    assert framer.feed(SB + b"abc\x1c") == []
    assert framer.pending_bytes == 4
    assert framer.feed(b"\r") == [Frame(b"abc")]
    assert framer.pending_bytes == 0
    assert not framer.in_frame


def test_junk_between_frames_is_reported_once_per_run() -> None:
    events = run(b"garbage" + encode_frame(b"x") + b"\r\nmore" + encode_frame(b"y") + b"tail")
    assert shape(events) == [
        ("junk", 7, b"garbage", b""),
        ("frame", b"x"),
        ("junk", 6, b"\r\nmore", b""),
        ("frame", b"y"),
        ("junk", 4, b"tail", b""),
    ]


def test_new_start_block_truncates_open_frame() -> None:
    events = run(SB + b"half a mess" + encode_frame(MSG))
    assert isinstance(events[0], FramingError)
    assert (events[0].code, events[0].skipped_bytes, events[0].head, events[0].data) == (
        "truncated",
        11,
        b"half a mess",
        b"half a mess",
    )
    assert events[1:] == [Frame(MSG)]


def test_eof_inside_frame_is_truncated() -> None:
    framer = Framer()
    assert framer.feed(SB + b"abc\x1c") == []
    (event,) = framer.close()
    assert isinstance(event, FramingError)
    assert (event.code, event.skipped_bytes, event.head, event.data) == (
        "truncated",
        4,
        b"abc\x1c",
        b"abc\x1c",
    )
    # close() resets: the framer is usable again.
    assert framer.feed(encode_frame(b"ok")) == [Frame(b"ok")]


def test_oversize_discarded_and_resynced_at_end_block() -> None:
    big = b"B" * 100
    events = run(encode_frame(big) + encode_frame(b"small"), [7] * 10, max_frame_bytes=50)
    assert shape(events) == [("oversize", 100, b"B" * 50, b""), ("frame", b"small")]


def test_oversize_resynced_at_next_start_block() -> None:
    events = run(SB + b"B" * 100 + encode_frame(b"small"), max_frame_bytes=50)
    assert shape(events) == [("oversize", 100, b"B" * 50, b""), ("frame", b"small")]


def test_frame_of_exactly_max_bytes_is_accepted() -> None:
    assert run(encode_frame(b"x" * 10), [11], max_frame_bytes=10) == [Frame(b"x" * 10)]
    assert shape(run(encode_frame(b"x" * 11), max_frame_bytes=10))[0][0] == "oversize"


def test_encode_frame_refuses_unrecoverable_payloads() -> None:
    for bad in (b"a\x0bb", b"a\x1c\rb"):
        with pytest.raises(ValueError):
            encode_frame(bad)


def test_bad_max_frame_bytes() -> None:
    with pytest.raises(ValueError):
        Framer(0)


def test_large_message_in_64k_chunks() -> None:
    # Its time (linear, not a rescan per read) is `hl7bus bench mllp`'s "framer" figure.
    payload = (MSG * 200_000)[: 12 * 1024 * 1024]
    data = encode_frame(payload)
    framer = Framer(16 * 1024 * 1024)
    events: list[FrameEvent] = []
    for pos in range(0, len(data), 65536):
        events += framer.feed(data[pos : pos + 65536])
    assert events == [Frame(payload)]


def test_memory_bounded_while_discarding() -> None:
    framer = Framer(max_frame_bytes=1024 * 1024)
    assert framer.feed(SB) == []
    chunk = b"Z" * 65536
    peak = 0
    for _ in range(20 * 16):  # 20 MiB streamed into one frame
        assert framer.feed(chunk) == []
        peak = max(peak, framer.pending_bytes)
    assert peak <= 1024 * 1024
    (event,) = framer.feed(EB)
    assert isinstance(event, FramingError)
    assert event.code == "oversize"
    assert event.skipped_bytes == 20 * 1024 * 1024
    assert len(event.head) == 4096


# -- properties -------------------------------------------------------------------------------

# Streams built from the bytes that matter, so frame boundaries are common.
tokens = st.one_of(
    st.sampled_from([SB, EB, b"\x1c", b"\r", b"\n", b" ", b"MSH|", b"A", b"\x00"]),
    st.binary(max_size=6),
)
streams = st.lists(tokens, max_size=60).map(b"".join)
cuts = st.lists(st.integers(min_value=0, max_value=12), max_size=40)
limits = st.integers(min_value=1, max_value=40)


@settings(max_examples=300, deadline=None)
@given(stream=streams, chunks=cuts, max_frame_bytes=limits)
def test_rechunking_never_changes_events(
    stream: bytes, chunks: list[int], max_frame_bytes: int
) -> None:
    whole = run(stream, max_frame_bytes=max_frame_bytes)
    assert run(stream, chunks, max_frame_bytes) == whole
    assert run(stream, [1] * len(stream), max_frame_bytes) == whole


@settings(max_examples=300, deadline=None)
@given(stream=streams, chunks=cuts, max_frame_bytes=limits)
def test_matches_reference_model(stream: bytes, chunks: list[int], max_frame_bytes: int) -> None:
    assert shape(run(stream, chunks, max_frame_bytes)) == reference(stream, max_frame_bytes)


@settings(max_examples=200, deadline=None)
@given(stream=st.binary(max_size=300), chunks=cuts, max_frame_bytes=limits)
def test_arbitrary_bytes_never_raise_and_stay_bounded(
    stream: bytes, chunks: list[int], max_frame_bytes: int
) -> None:
    framer = Framer(max_frame_bytes)
    pos = 0
    for size in [*chunks, len(stream)]:
        for event in framer.feed(stream[pos : pos + size]):
            assert isinstance(event, Frame | FramingError)
            if isinstance(event, Frame):
                assert len(event.payload) <= max_frame_bytes
        assert framer.pending_bytes <= max_frame_bytes + 1
        pos += size
    framer.close()
    assert framer.pending_bytes == 0


payloads = st.binary(max_size=40).filter(lambda p: SB not in p and EB not in p)
benign = st.sampled_from([b"", b"\r", b"\n", b"\r\n", b" \t"])


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.tuples(benign, payloads), max_size=12), chunks=cuts)
def test_payloads_round_trip_byte_exact(
    items: list[tuple[bytes, bytes]], chunks: list[int]
) -> None:
    stream = b"".join(gap + encode_frame(p) for gap, p in items)
    assert run(stream, chunks) == [Frame(p) for _, p in items]


@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(payloads, st.booleans()), min_size=1, max_size=10),
    chunks=cuts,
)
def test_oversize_frames_never_hide_their_neighbours(
    items: list[tuple[bytes, bool]], chunks: list[int]
) -> None:
    limit = 40
    sized = [p + b"O" * (limit + 1 - len(p)) if big else p for p, big in items]
    stream = b"".join(encode_frame(p) for p in sized)
    expected: list[tuple[object, ...]] = [
        ("oversize", len(p), p[:limit], b"") if len(p) > limit else ("frame", p) for p in sized
    ]
    assert shape(run(stream, chunks, limit)) == expected
