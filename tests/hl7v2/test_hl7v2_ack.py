"""ACK building: original and enhanced mode, ERR layouts, garbage input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hl7v2_samples import ADT_A01, CUSTOM
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7bus.hl7v2 import AckError, build_ack, parse

NOW = datetime(2024, 3, 1, 8, 30, 5, tzinfo=timezone(timedelta(hours=9)))


def ack_of(data: bytes | str, code: str, error: AckError | None = None, **kw: str) -> list[str]:
    out = build_ack(data, code, error, now=NOW, control_id="ACK1", **kw)
    assert isinstance(out, bytes)
    assert out.endswith(b"\r")
    return out.decode(kw.get("charset") or "utf-8").split("\r")[:-1]


ORIGINAL = "MSH|^~\\&|LAB|SNUH|EHR|HOSP|20240301||ORU^R01^ORU_R01|C42|T|2.3\rPID|1\r"


def test_original_mode_ack() -> None:
    msh, msa = ack_of(ORIGINAL, "delivered")
    assert msh == "MSH|^~\\&|EHR|HOSP|LAB|SNUH|20240301083005+0900||ACK^R01^ACK|ACK1|T|2.3"
    assert msa == "MSA|AA|C42"


@pytest.mark.parametrize(
    ("status", "original", "enhanced"),
    [
        ("delivered", "AA", "CA"),
        ("errored", "AE", "CE"),
        ("rejected", "AR", "CR"),
        ("AA", "AA", "AA"),
        ("ce", "CE", "CE"),
        ("CR", "CR", "CR"),
    ],
)
def test_codes_by_mode(status: str, original: str, enhanced: str) -> None:
    assert ack_of(ORIGINAL, status)[1].split("|")[1] == original
    # ADT_A01 has MSH-15 AL / MSH-16 NE: enhanced mode
    assert ack_of(ADT_A01, status)[1].split("|")[1] == enhanced
    only16 = "MSH|^~\\&|A|B|C|D|1||ADT^A01|X|P|2.5||||AL\r"
    assert ack_of(only16, status)[1].split("|")[1] == enhanced


def test_invalid_code() -> None:
    with pytest.raises(ValueError):
        build_ack(ORIGINAL, "OK")
    with pytest.raises(ValueError):
        build_ack(b"garbage", "OK")


def test_ack_from_message_object_and_bytes_agree() -> None:
    a = build_ack(parse(ADT_A01), "delivered", now=NOW, control_id="X")
    b = build_ack(ADT_A01.encode(), "delivered", now=NOW, control_id="X")
    c = build_ack(ADT_A01, "delivered", now=NOW, control_id="X")
    assert a == b == c
    assert parse(a).get("MSA-2") == "CTRL0001"
    assert parse(a).message_type == "ACK^A01"


def test_fresh_control_id_and_clock() -> None:
    one = parse(build_ack(ORIGINAL, "AA"))
    two = parse(build_ack(ORIGINAL, "AA"))
    assert one.control_id and two.control_id and one.control_id != two.control_id
    assert len(one.control_id) <= 20
    assert one.get("MSH-7", "")[:4].isdigit()


def test_err_v25() -> None:
    err = AckError(101, "PID-3 missing", "PID", 1, 3)
    _, msa, err_seg = ack_of(ADT_A01, "errored", err)
    assert msa == "MSA|CE|CTRL0001|PID-3 missing"
    assert err_seg == "ERR||PID^1^3|101^Required field missing^HL70357|E|||PID-3 missing"


def test_err_before_v25() -> None:
    err = AckError(207, "store down", "OBX", 2, 5)
    _, msa, err_seg = ack_of(ORIGINAL, "rejected", err)
    assert msa == "MSA|AR|C42|store down"
    assert err_seg == "ERR|OBX^2^5^207&Application internal error&HL70357"
    _, _, no_location = ack_of(ORIGINAL, "errored", AckError(200, "type"))
    assert no_location == "ERR|^^^200&Unsupported message type&HL70357"


def test_err_text_is_escaped() -> None:
    *_, err_seg = ack_of(ADT_A01, "errored", AckError(102, "bad | value ^ here"))
    assert err_seg.endswith("|bad \\F\\ value \\S\\ here")
    assert parse("\r".join(ack_of(ADT_A01, "errored", AckError(102, "a|b")))).get("ERR-7") == "a|b"


@pytest.mark.parametrize("code", [99, 208, 1000])
def test_err_code_must_be_in_table_0357(code: int) -> None:
    with pytest.raises(ValueError):
        AckError(code, "x")


def test_custom_delimiters_echoed() -> None:
    msh, msa = ack_of(CUSTOM, "delivered")
    assert msh == "MSH#!@$%#RAPP#RFAC#APP#FAC#20240301083005+0900##ACK!A08!ACK#ACK1#P#2.4"
    assert msa == "MSA#AA#C1"


def test_ack_for_garbage_after_msh() -> None:
    data = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|C7|P|2.5\r\xff\xfe\x00garbage\nPI"
    msh, msa = ack_of(data, "errored")
    assert msa == "MSA|AE|C7"
    assert msh.startswith("MSH|^~\\&|C|D|A|B|")


def test_ack_when_header_itself_is_undecodable() -> None:
    # MSH says UTF-8 but the sending application's name is latin-1: echoed bytes
    # are returned unchanged (ACK in latin-1).
    data = "MSH|^~\\&|Müller|B|C|D|1||ADT^A01|C8|P|2.5||||||UNICODE UTF-8\r".encode("latin-1")
    out = build_ack(data, "errored", now=NOW, control_id="A")
    assert b"|C|D|M\xfcller|B|" in out
    assert b"MSA|AE|C8" in out
    assert b"|UNICODE UTF-8" in out


@pytest.mark.parametrize(
    ("data", "err_code"),
    [
        (b"", 100),
        (b"garbage\rMSH|^~\\&|", 100),
        (b"PID|1||x\r", 100),
        (b"MSH|", 102),
        (b"MSH|^^^^|A|B\r", 102),
    ],
)
def test_minimal_ack_when_msh_unreadable(data: bytes, err_code: int) -> None:
    msh, msa, err = ack_of(data, "delivered")
    assert msh == "MSH|^~\\&|||||20240301083005+0900||ACK|ACK1|P|2.5"
    assert msa.startswith("MSA|AE||MSH unreadable: ")
    assert err.startswith(f"ERR|||{err_code}^")
    out = build_ack(data, "delivered")
    assert b"garbage" not in out
    assert b"PID" not in out


@pytest.mark.parametrize(
    ("code", "msa1"),
    [
        ("delivered", "AE"),
        ("AA", "AE"),
        ("CA", "AE"),
        ("errored", "AE"),
        ("CE", "AE"),
        ("rejected", "AR"),
        ("CR", "AR"),
        ("AR", "AR"),
    ],
)
def test_minimal_ack_code_is_original_mode_and_never_accepts(code: str, msa1: str) -> None:
    assert ack_of(b"\x00garbage", code)[1].split("|")[1] == msa1


def test_ack_charset_follows_inbound() -> None:
    data = "MSH|^~\\&|병원|서울|BUS|LAB|1||ADT^A01|K1|P|2.5||||||KS X 1001\rPID|1\r"
    out = build_ack(data.encode("cp949"), "delivered", now=NOW, control_id="A")
    text = out.decode("cp949")
    assert "|BUS|LAB|병원|서울|" in text
    assert text.split("\r")[0].endswith("|KS X 1001")
    assert parse(out).get("MSH-5") == "병원"
    # a Message parsed with an override ACKs in that charset
    m = parse("MSH|^~\\&|병원|A|B|C|1||ADT^A01|K2|P|2.5\r".encode("cp949"), charset="CP949")
    assert "병원".encode("cp949") in build_ack(m, "AA")
    out = build_ack(data.encode("cp949"), "AE", AckError(207, "저장 실패"))
    assert "저장 실패".encode("cp949") in out


def test_unencodable_error_text_is_replaced_not_fatal() -> None:
    data = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|K1|P|2.5||||||ASCII\r"
    out = build_ack(data, "AE", AckError(207, "저장"))
    assert b"MSA|AE|K1|??" in out


def test_naive_now_has_no_offset() -> None:
    out = build_ack(ORIGINAL, "AA", now=datetime(2024, 1, 2, 3, 4, 5))
    assert parse(out).get("MSH-7") == "20240102030405"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["delivered", "errored", "rejected", "CA"]))
def test_build_ack_never_fails_on_bytes(data: bytes, code: str) -> None:
    out = build_ack(data, code, AckError(207, "x"))
    ack = parse(out, charset="latin-1")  # always a parseable message
    assert ack.get("MSH-9.1") == "ACK"
    assert ack.get("MSA-1") in {"AA", "AE", "AR", "CA", "CE", "CR"}


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ABCXYZ0123456789 -_.", min_size=1, max_size=20))
def test_msa2_echoes_control_id(control_id: str) -> None:
    data = f"MSH|^~\\&|A|B|C|D|1||ADT^A01|{control_id}|P|2.5\rPID|1\r"
    assert parse(build_ack(data, "delivered")).get("MSA-2") == parse(data).control_id
