"""Totality: any input parses or raises Hl7ParseError, and a parsed message behaves."""

from __future__ import annotations

from hl7v2_samples import CORPUS
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hl7bus.hl7v2 import Hl7ParseError, Message, parse, parse_batch

SEEDS = [t.encode("utf-8") for t in CORPUS.values()]
PATHS = [
    "MSH-1",
    "MSH-2",
    "MSH-9.2",
    "MSH-10",
    "PID-3[2].1",
    "PID-5",
    "PID-5.1.1",
    "OBX[2]-5",
    "ZPD-2.2",
    "MSH-18",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        junk = draw(
            st.sampled_from(
                [
                    b"\r",
                    b"\n",
                    b"|",
                    b"^",
                    b"\\",
                    b"\xff",
                    b"\xc3",
                    b"\x00",
                    b"MSH|",
                    b"\xef\xbb\xbf",
                    b"~",
                    b" ",
                    b"&",
                    b"",
                ]
            )
        )
        cut = draw(st.integers(0, 3))
        data[pos : pos + cut] = junk
    return bytes(data)


def exercise(msg: Message) -> None:
    for path in PATHS:
        msg.get(path)
    msg.get_all("PID-3")
    for seg in msg.segments():
        seg.get("1")
    text = msg.to_er7()
    again = parse(text)
    assert again.to_er7() == text
    assert [again.get(p) for p in PATHS] == [msg.get(p) for p in PATHS]
    _ = (msg.control_id, msg.message_type, msg.version, msg.charset, repr(msg))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated()))
@example(b"MSH|^~\\&")
@example(b"MSH\xff^~\\&|")
@example(b"MSH|^~\\&|||||||||||||||\xff")
def test_bytes_parse_or_raise_parse_error(data: bytes) -> None:
    try:
        msg = parse(data)
    except Hl7ParseError:
        pass
    else:
        exercise(msg)
    try:
        batch = parse_batch(data)
    except Hl7ParseError:
        pass
    else:
        for m in batch:
            exercise(m)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("MSHPID|^~\\&\r\n XF0.9홍\ufeff"), max_size=80))
def test_text_parse_or_raise_parse_error(text: str) -> None:
    try:
        msg = parse(text)
    except Hl7ParseError:
        return
    exercise(msg)
