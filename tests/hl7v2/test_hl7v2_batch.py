"""Batch files (FHS/BHS/BTS/FTS) and concatenated messages."""

from __future__ import annotations

import pytest
from hl7v2_samples import ADT_A01, CUSTOM, ORU_R01

from hl7bus.hl7v2 import Hl7ParseError, parse_batch

FHS = "FHS|^~\\&|LAB|SNUH|||20240301\r"
BHS = "BHS|^~\\&|LAB|SNUH|||20240301\r"


def ids(text: str | bytes) -> list[str | None]:
    return [m.control_id for m in parse_batch(text)]


def test_plain_concatenation() -> None:
    assert ids(ADT_A01 + ORU_R01 + CUSTOM) == ["CTRL0001", "LAB00042", "C1"]


def test_concatenation_with_lf_and_blank_lines() -> None:
    text = (ADT_A01 + "\n\n" + ORU_R01).replace("\r", "\n")
    msgs = parse_batch(text.encode())
    assert [m.control_id for m in msgs] == ["CTRL0001", "LAB00042"]
    assert msgs[1].to_er7() == ORU_R01


def test_full_envelope_with_correct_counts() -> None:
    text = FHS + BHS + ADT_A01 + ORU_R01 + "BTS|2\r" + BHS + ADT_A01 + "BTS|1\rFTS|2\r"
    assert ids(text) == ["CTRL0001", "LAB00042", "CTRL0001"]


@pytest.mark.parametrize(
    "text",
    [
        BHS + ADT_A01 + "BTS\r",  # counts absent
        BHS + ADT_A01 + "BTS|\r",
        BHS + ADT_A01 + "BTS|1^x\r",
        FHS + ADT_A01 + "FTS|1\r",  # no BHS: one implicit batch
        FHS + ADT_A01 + "FTS|0\r",
        FHS + BHS + ADT_A01,  # trailers missing
        FHS + "FTS|0\r",
    ],
)
def test_lenient_envelopes(text: str) -> None:
    assert len(parse_batch(text)) == (0 if "MSH" not in text else 1)


@pytest.mark.parametrize(
    ("text", "segment_index", "field"),
    [
        (BHS + ADT_A01 + ORU_R01 + "BTS|3\r", 14, 1),
        (BHS + ADT_A01 + "BTS|0\r", 7, 1),
        (FHS + BHS + ADT_A01 + "BTS|1\rFTS|2\r", 9, 1),
        (BHS + ADT_A01 + "BTS|one\r", 7, 1),
        (ADT_A01 + FHS, 6, None),  # FHS not first
        ("PID|1\r" + ADT_A01, 0, None),  # data before any MSH
        (FHS + ADT_A01 + "FTS|1\r" + ORU_R01, 8, None),  # after FTS
        (ADT_A01 + "MSH|^^|x\r", 6, 2),  # error inside a later message
        (ADT_A01 + ORU_R01 + "garbage line\r", 13, None),
    ],
)
def test_batch_errors(text: str, segment_index: int, field: int | None) -> None:
    with pytest.raises(Hl7ParseError) as info:
        parse_batch(text)
    assert (info.value.segment_index, info.value.field) == (segment_index, field)


def test_empty_and_charset() -> None:
    assert parse_batch("") == []
    assert parse_batch(b"\r\n") == []
    msh = "MSH|^~\\&|A|B|C|D|1||ADT^A01|K{}|P|2.5||||||KS X 1001\rPID|1||||홍^길동\r"
    data = (msh.format(1) + msh.format(2)).encode("cp949")
    msgs = parse_batch(data)
    assert [m.get("PID-5.1") for m in msgs] == ["홍", "홍"]
    assert {m.charset for m in msgs} == {"cp949"}


def test_custom_delimiter_envelope() -> None:
    text = "BHS#!@$%#X\r" + CUSTOM + "BTS#1\r"
    assert ids(text) == ["C1"]
