"""Parser, path access, empty/null semantics, serialization of hl7bus.hl7v2."""

from __future__ import annotations

import pickle

import pytest
from hl7v2_samples import ADT_A01, CORPUS, CUSTOM, ORU_R01, SHORT_ENCODING

from hl7bus.hl7v2 import (
    HL7_NULL,
    Encoding,
    Hl7ParseError,
    Message,
    parse,
    parse_path,
    split_field,
)


@pytest.mark.parametrize(
    ("text", "path", "expected"),
    [
        # MSH numbering: MSH-1 is the field separator, MSH-2 the encoding characters.
        (ADT_A01, "MSH-1", "|"),
        (ADT_A01, "MSH-2", "^~\\&"),
        (ADT_A01, "MSH-2.2", None),
        (ADT_A01, "MSH-3", "HIS"),
        (ADT_A01, "MSH-9", "ADT^A01^ADT_A01"),
        (ADT_A01, "MSH-9.1", "ADT"),
        (ADT_A01, "MSH-9.2", "A01"),
        (ADT_A01, "MSH-9.3", "ADT_A01"),
        (ADT_A01, "MSH-9.4", None),
        (ADT_A01, "MSH-10", "CTRL0001"),
        (ADT_A01, "MSH-12", "2.5.1"),
        (ADT_A01, "MSH-99", None),
        # repetitions: first one unless asked
        (ADT_A01, "PID-3", "12345^^^SNUH^MR"),
        (ADT_A01, "PID-3.1", "12345"),
        (ADT_A01, "PID-3[1].4", "SNUH"),
        (ADT_A01, "PID-3[2].1", "900101-1234567"),
        (ADT_A01, "PID-3[2].5", "NI"),
        (ADT_A01, "PID-3[3].1", None),
        (ADT_A01, "PID-5[2].1", "홍"),
        (ADT_A01, "PID-5.1.1", "HONG"),
        (ADT_A01, "PID-5.1.2", None),
        (ADT_A01, "PID-5.7", "L"),
        (ADT_A01, "PID-7", "19900101"),
        (ADT_A01, "PID-7[2]", None),
        (ADT_A01, "PID-7.2", None),
        (ADT_A01, "PID-13.2", "PRN"),
        (ADT_A01, "pid-7", "19900101"),
        # empty -> default
        (ADT_A01, "PID-2", None),
        (ADT_A01, "PID-5.3", None),
        (ADT_A01, "PID-13.1", None),
        # Z-segments are kept and addressable
        (ADT_A01, "ZPD-2.2", "stuff"),
        (ADT_A01, "ZPD-3", None),
        (ADT_A01, "ZZZ-1", None),
        # segment occurrences
        (ORU_R01, "OBX-5", "13.5"),
        (ORU_R01, "OBX[1]-5", "13.5"),
        (ORU_R01, "OBX[2]-5", "Fe^Hb ratio & note\nsecond line"),
        (ORU_R01, "OBX[3]-5", HL7_NULL),
        (ORU_R01, "OBX[4]-5", None),
        (ORU_R01, "NTE-3", "free text with \\ backslash and | pipe"),
        # composite field: raw ER7 with escapes kept
        (ORU_R01, "OBX-6", "g/dL^g/dL^UCUM"),
        # custom delimiters
        (CUSTOM, "MSH-1", "#"),
        (CUSTOM, "MSH-2", "!@$%"),
        (CUSTOM, "MSH-9.2", "A08"),
        (CUSTOM, "PID-3[2].4", "AUTH2"),
        (CUSTOM, "PID-5.2.2", "JR"),
        (CUSTOM, "PID-5.2", "JOHN%JR"),
        (CUSTOM, "OBX-5", "a#b!c@d%e$f"),
        # fewer than four encoding characters: undeclared levels are not split
        (SHORT_ENCODING, "MSH-2", "^~"),
        (SHORT_ENCODING, "PID-5.1", "X&Y"),
        (SHORT_ENCODING, "PID-5.1.1", "X&Y"),
        (SHORT_ENCODING, "PID-5.1.2", None),
        (SHORT_ENCODING, "PID-5.2", "Z\\W"),
    ],
)
def test_get(text: str, path: str, expected: str | None) -> None:
    assert parse(text).get(path) == expected


def test_get_default_and_null() -> None:
    m = parse(ORU_R01)
    assert m.get("PID-2", "x") == "x"  # empty
    assert m.get("ABC-2", "x") == "x"  # absent segment
    assert m.get("OBX[3]-5", "x") == '""'  # explicit null is a value, not absence


def test_get_all() -> None:
    m = parse(ADT_A01)
    assert m.get_all("PID-3.1") == ["12345", "900101-1234567"]
    assert m.get_all("PID-2") == []
    assert m.get_all("ABC-1") == []
    assert parse("MSH|^~\\&|A\rPID|1|a~~b\r").get_all("PID-2") == ["a", "", "b"]
    with pytest.raises(ValueError):
        m.get_all("PID-3[1]")


def test_split_field() -> None:
    enc = Encoding()
    assert split_field("", enc) == []
    assert split_field("KIM^MINJUN", enc) == [[["KIM"], ["MINJUN"]]]
    assert split_field("a~~b^", enc) == [[["a"]], [[""]], [["b"], [""]]]
    # Every subcomponent decoded, with the message's codec for hex escapes.
    assert split_field("1 Main\\T\\St&Apt 2^\\XC8AB\\", enc, "euc-kr") == [
        [["1 Main&St", "Apt 2"], ["홍"]]
    ]
    assert split_field('""', enc) == [[['""']]]  # the HL7 null is data here
    # Undeclared levels are not split (only ^ and ~ declared).
    short = Encoding(escape="", subcomponent="")
    assert split_field("X&Y^Z\\W", short) == [[["X&Y"], ["Z\\W"]]]


@pytest.mark.parametrize("bad", ["", "PID", "PID-0", "PID-1.0", "P-1", "PID-1..2", "PID[0]-1"])
def test_bad_path(bad: str) -> None:
    with pytest.raises(ValueError):
        parse(ADT_A01).get(bad)


def test_parse_path() -> None:
    assert tuple(parse_path("OBX[2]-5[3].1.2")) == ("OBX", 2, 5, 3, 1, 2)
    assert tuple(parse_path("5")) == (None, 1, 5, 0, 0, 0)


def test_header_properties() -> None:
    m = parse(ADT_A01)
    assert m.control_id == "CTRL0001"
    assert m.message_type == "ADT^A01"
    assert m.version == "2.5.1"
    assert m.processing_id == "P"
    assert m.charset == "utf-8"
    assert m.hl7_charset is None
    assert m.encoding == Encoding("|", "^", "~", "\\", "&")
    c = parse(CUSTOM)
    assert c.message_type == "ADT^A08"  # always '^', whatever the separator
    assert c.encoding == Encoding("#", "!", "@", "$", "%")
    assert parse("MSH|^~\\&|||||||ACK|1\r").message_type == "ACK"
    assert parse("MSH|^~\\&|\r").message_type is None


def test_segments_iteration() -> None:
    m = parse(ORU_R01)
    assert [s.name for s in m.segments()] == ["MSH", "PID", "OBR", "OBX", "OBX", "OBX", "NTE"]
    assert [s.get("1") for s in m.segments("OBX")] == ["1", "2", "3"]
    assert next(s.get("OBX-3.2") for s in m.segments("obx")) == "Hemoglobin"
    assert list(m.segments("ZZZ")) == []
    assert m.segment("OBX", 2) is not None
    assert m.segment("OBX", 4) is None
    msh = next(m.segments("MSH"))
    assert msh.fields[:4] == ["MSH", "|", "^~\\&", "LAB"]
    assert msh.get("9.2") == "R01"
    with pytest.raises(ValueError):
        msh.get("PID-3")
    assert len(m) == 7
    assert m.segment_names[-1] == "NTE"


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_round_trip_is_identical(name: str) -> None:
    text = CORPUS[name]
    assert parse(text).to_er7() == text
    assert str(parse(text.encode("utf-8"))) == text
    assert parse(text).to_bytes() == text.encode("utf-8")


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("MSH|^~\\&|A\nPID|1\n", "MSH|^~\\&|A\rPID|1\r"),
        ("MSH|^~\\&|A\r\nPID|1\r\n", "MSH|^~\\&|A\rPID|1\r"),
        ("MSH|^~\\&|A\rPID|1", "MSH|^~\\&|A\rPID|1\r"),
        ("MSH|^~\\&|A\rPID|1\r\r\n  \n\t\n", "MSH|^~\\&|A\rPID|1\r"),
        ("\n\n  MSH|^~\\&|A\r\rPID|1\r", "MSH|^~\\&|A\rPID|1\r"),
        ("\ufeffMSH|^~\\&|A\rPID|1\r", "MSH|^~\\&|A\rPID|1\r"),
        # trailing blanks inside a segment are data
        ("MSH|^~\\&|A\rPID|1|x  \r", "MSH|^~\\&|A\rPID|1|x  \r"),
    ],
)
def test_terminator_normalization(raw: str, normalized: str) -> None:
    assert parse(raw).to_er7() == normalized
    assert parse(raw.encode()).to_er7() == normalized


def test_trailing_blanks_kept_as_data() -> None:
    assert parse("MSH|^~\\&|A\rPID|1|x  \r\n").get("PID-2") == "x  "


@pytest.mark.parametrize(
    ("raw", "segment_index", "field"),
    [
        ("", 0, None),
        ("   \r\n", 0, None),
        ("PID|1\r", 0, None),
        ("FHS|^~\\&\r", 0, None),
        ("MSH", 0, None),
        ("MSH|", 0, None),
        ("MSH||A", 0, 2),
        ("MSH|^^~\\&|A", 0, 2),
        ("MSH|^~\\&&|A", 0, 2),
        ("MSH|^~\\&#!|A", 0, 2),
        ("MSH|a~\\&|A", 0, 2),
        ("MSH| ~\\&|A", 0, 2),
        ("MSHA^~\\&|A", 0, 2),
        ("MSH|^~\\&|A\rPID|1\rthe patient was seen\r", 2, None),
        ("MSH|^~\\&|A\rPI\r", 1, None),
        ("MSH|^~\\&|A\rpid|1\r", 1, None),
        ("MSH|^~\\&|A\rPIDX1\r", 1, None),
        ("MSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\r", 2, None),
    ],
)
def test_parse_errors(raw: str, segment_index: int, field: int | None) -> None:
    with pytest.raises(Hl7ParseError) as info:
        parse(raw)
    assert info.value.segment_index == segment_index
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_error_message_has_no_patient_data() -> None:
    with pytest.raises(Hl7ParseError) as info:
        parse("MSH|^~\\&|A\rPID|1||HONG^GILDONG\rGildong was seen today\r")
    assert "Gildong" not in str(info.value)
    assert "segment 2" in str(info.value)


def test_error_pickles() -> None:
    err = Hl7ParseError("invalid segment id", segment_index=3, field=4)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.segment_index, copy.field, str(copy)) == (3, 4, str(err))


def test_parse_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        parse(42)  # type: ignore[arg-type]


def test_parse_accepts_bytearray() -> None:
    assert parse(bytearray(ORU_R01.encode())).control_id == "LAB00042"


def test_truncation_character_v27() -> None:
    m = parse("MSH|^~\\&#|A|B|||||ADT^A01|1|P|2.7\rPID|1||a\\P\\b\r")
    assert m.encoding.truncation == "#"
    assert m.get("MSH-2") == "^~\\&#"
    assert m.get("PID-3") == "a#b"


@pytest.mark.parametrize(
    ("path", "value", "segment"),
    [
        ("PID-3", "X|Y", "PID|1||X\\F\\Y||DOE^JANE"),
        ("PID-5.2", "ANN", "PID|1||A||DOE^ANN"),
        ("PID-5.4", "III", "PID|1||A||DOE^JANE^^III"),
        ("PID-5[2].1", "ROE", "PID|1||A||DOE^JANE~ROE"),
        ("PID-5.1.2", "VAN", "PID|1||A||DOE&VAN^JANE"),
        ("PID-8", "F", "PID|1||A||DOE^JANE|||F"),
        ("PID-1", "", "PID|||A||DOE^JANE"),
    ],
)
def test_set(path: str, value: str, segment: str) -> None:
    m = parse("MSH|^~\\&|A\rPID|1||A||DOE^JANE\r")
    m.set(path, value)
    assert m.to_er7().split("\r")[1] == segment
    assert m.get(path, "") == value
    assert parse(m.to_er7()).get(path, "") == value


def test_set_msh_and_errors() -> None:
    m = parse("MSH|^~\\&|A\rPID|1\r")
    m.set("MSH-10", "C9")
    assert m.to_er7() == "MSH|^~\\&|A|||||||C9\rPID|1\r"
    assert m.control_id == "C9"
    m.set("MSH-9", "ADT^A01", raw=True)
    assert m.message_type == "ADT^A01"
    with pytest.raises(ValueError):
        m.set("MSH-2", "x")
    with pytest.raises(KeyError):
        m.set("OBX-5", "x")
    with pytest.raises(ValueError):
        parse(SHORT_ENCODING).set("PID-5.1.2", "x")


def test_repr_has_no_patient_data() -> None:
    m = parse(ADT_A01)
    assert "HONG" not in repr(m)
    assert "ADT^A01" in repr(m)
    assert isinstance(m, Message)
