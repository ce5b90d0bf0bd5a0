"""The file splitter: byte ranges of the messages of a file, batch envelopes checked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7bus.connectors.envelope import build_envelope
from hl7bus.connectors.files import FileFormatError, split_file
from hl7bus.hl7v2 import Hl7ParseError, parse_batch
from hl7bus.ops.demo_run import sample_feed_path

MSH = "MSH|^~\\&|APP|FAC|HL7BUS|C|20260101120000||ADT^A01|{cid}|P|2.5.1"
PID = "PID|1||{pid}^^^HOSP^MR||DOE^JOHN"


def message(cid: str, pid: str = "123", term: str = "\r", charset: str = "") -> bytes:
    msh = MSH.format(cid=cid) + ("|" * 6 + charset if charset else "")
    return (msh + term + PID.format(pid=pid) + term).encode("utf-8")


def slices(data: bytes, charset: str | None = None) -> list[bytes]:
    return [data[lo:hi] for lo, hi in split_file(data, charset).ranges]


def test_sample_feed_split_matches_parse_batch_and_is_byte_exact() -> None:
    data = sample_feed_path().read_bytes()
    parts = slices(data)
    parsed = parse_batch(data)
    assert len(parts) == len(parsed) == 305
    # The ranges tile the file: nothing before, between or after them but nothing at all.
    assert b"".join(parts) == data
    for part, msg in zip(parts, parsed, strict=True):
        built = build_envelope(part, feed="f", peer="p")
        assert built.message is not None
        assert built.record["raw"] == part
        assert built.message.control_id == msg.control_id


@pytest.mark.parametrize("term", ["\r", "\n", "\r\n"])
def test_batch_envelope_any_terminator(term: str) -> None:
    msgs = [message(f"C{i}", term=term) for i in range(3)]
    head = f"FHS|^~\\&|APP{term}BHS|^~\\&|APP{term}".encode()
    tail = f"BTS|3{term}FTS|1{term}".encode()
    split = split_file(head + b"".join(msgs) + tail)
    assert split.batches == 1
    data = head + b"".join(msgs) + tail
    assert [data[lo:hi] for lo, hi in split.ranges] == msgs


def test_blank_lines_between_messages_belong_to_none() -> None:
    a, b = message("A"), message("B")
    data = b"\n\n  " + a + b"\r\n\r\n" + b + b"\n"
    # b's final CR and the LF after it are one terminator (CRLF), so the LF is b's.
    assert slices(data) == [a, b + b"\n"]


def test_message_without_final_terminator() -> None:
    data = message("A") + message("B").rstrip(b"\r")
    assert slices(data) == [message("A"), message("B").rstrip(b"\r")]


def test_several_batches_and_counts() -> None:
    one = b"BHS|^~\\&\r" + message("A") + message("B") + b"BTS|2\r"
    two = b"BHS|^~\\&\r" + message("C") + b"BTS|1^note\r"
    split = split_file(b"FHS|^~\\&\r" + one + two + b"FTS|2\r")
    assert len(split.ranges) == 3 and split.batches == 2


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"BHS|^~\\&\r" + message("A") + b"BTS|2\r", "batch"),
        (b"BHS|^~\\&\r" + message("A") + b"BTS|x\r", "batch"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + message("A") + b"BTS|1\rFTS|3\r", "batch"),
        (message("A") + b"FTS|1\r" + message("B"), "batch"),
        (message("A") + b"FHS|^~\\&\r", "batch"),
        (b"BHS|^~\\&\rPID|1\r", "batch"),
        (b"hello, world\nnot hl7\n", "not_hl7"),
        (b"PID|1||123\r", "not_hl7"),
        (b"", "empty"),
        (b" \r\n\n ", "empty"),
    ],
)
def test_unreadable_files(data: bytes, code: str) -> None:
    with pytest.raises(FileFormatError) as info:
        split_file(data)
    assert info.value.code == code


def test_bts_mismatch_names_the_segment_not_the_values() -> None:
    data = b"BHS|^~\\&\r" + message("SECRET1") + b"BTS|2\r"
    with pytest.raises(FileFormatError) as info:
        split_file(data)
    assert "BTS-1 says 2 messages, batch has 1" in str(info.value)
    assert "SECRET" not in str(info.value)


def test_utf8_bom_fixes_the_charset_and_is_not_part_of_a_message() -> None:
    a = message("A", charset="8859/1")
    split = split_file(b"\xef\xbb\xbf" + a)
    assert split.charset == "utf-8"
    assert split.ranges == [(3, 3 + len(a))]


def test_utf16_refused() -> None:
    with pytest.raises(FileFormatError) as info:
        split_file(message("A"), charset="UNICODE UTF-16")
    assert info.value.code == "charset"


def test_cp949_bytes_split_exactly_and_decode_per_message() -> None:
    korean = (MSH.format(cid="K1") + "||||||KS X 1001\rPID|1||77^^^H^MR||홍^길동\r").encode("cp949")
    plain = message("U", charset="UNICODE UTF-8")
    data = korean + plain
    parts = slices(data)
    assert parts == [korean, plain]
    built = build_envelope(parts[0], feed="f", peer="p")
    assert built.record["charset"] == "cp949"
    assert built.message is not None and built.message.get("PID-5.1") == "홍"


def test_one_undecodable_message_does_not_fail_the_file() -> None:
    bad = message("BAD", charset="UNICODE UTF-8").replace(b"JOHN", b"J\xffHN")
    data = message("A") + bad + message("B")
    parts = slices(data)
    assert len(parts) == 3
    envelopes = [build_envelope(p, feed="f", peer="p") for p in parts]
    assert [e.reason for e in envelopes] == [None, "charset", None]
    with pytest.raises(Hl7ParseError):
        parse_batch(data)  # parse_batch fails the whole file on one bad message


# -- split_file (FileFormatError codes) agrees with hl7v2.parse_batch --------------------------

_SEGMENTS = st.sampled_from(
    [
        "MSH|^~\\&|A|B|C|D|20260101||ADT^A01|X|P|2.5",
        "PID|1||9^^^H^MR",
        "OBX|1|ST|X||v",
        "FHS|^~\\&",
        "BHS|^~\\&",
        "BTS|0",
        "BTS|1",
        "BTS|2",
        "BTS|",
        "FTS|0",
        "FTS|1",
        "FTS|2",
        "",
        "  ",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_SEGMENTS, max_size=12),
    st.sampled_from(["\r", "\n", "\r\n"]),
)
def test_structure_agrees_with_parse_batch(segments: list[str], term: str) -> None:
    data = term.join(segments).encode("ascii")
    try:
        expected = len(parse_batch(data))
    except Hl7ParseError:
        expected = -1
    try:
        got = len(split_file(data).ranges)
    except FileFormatError as exc:
        # An empty file is no error to parse_batch, but nothing to ingest either.
        got = 0 if exc.code == "empty" else -1
    assert got == expected
