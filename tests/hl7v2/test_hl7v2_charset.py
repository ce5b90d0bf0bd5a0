"""Character sets: MSH-18 names, decode_bytes, Korean feeds, errors with offsets."""

from __future__ import annotations

import pytest

from hl7bus.hl7v2 import (
    Hl7CharsetError,
    Hl7ParseError,
    codec_for,
    decode_bytes,
    lookup_codec,
    parse,
)


def msh(charset: str = "", tail: str = "") -> str:
    return f"MSH|^~\\&|HIS|SNUH|BUS|LAB|20240301||ADT^A01|C1|P|2.5||||||{charset}\r{tail}"


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "iso8859-1"),
        ("8859/2", "iso8859-2"),
        ("8859/5", "iso8859-5"),
        ("8859/9", "iso8859-9"),
        ("8859/15", "iso8859-15"),
        ("UNICODE UTF-8", "utf-8"),
        ("unicode  utf-8", "utf-8"),
        ("UNICODE", "utf-8"),
        ("KS X 1001", "cp949"),
        ("KS C 5601", "cp949"),
        ("EUC-KR", "cp949"),
        ("euc_kr", "cp949"),
        ("CP949", "cp949"),
        ("GB 18030-2000", "gb18030"),
        ("UTF-8", "utf-8"),
        ("latin-1", "iso8859-1"),
        ("", "utf-8"),
        ("  ", "utf-8"),
        (None, "utf-8"),
        ("NO SUCH SET", None),
    ],
)
def test_lookup_codec(name: str | None, codec: str | None) -> None:
    assert lookup_codec(name) == codec


def test_codec_for_unknown_raises() -> None:
    with pytest.raises(Hl7CharsetError) as info:
        codec_for("NO SUCH SET")
    assert isinstance(info.value, Hl7ParseError)


@pytest.mark.parametrize(
    ("data", "charset", "codec"),
    [
        (msh().encode(), None, "utf-8"),
        (msh("UNICODE UTF-8", "PID|1||||홍^길동\r").encode("utf-8"), None, "utf-8"),
        (msh("8859/1", "PID|1||||Müller\r").encode("latin-1"), None, "iso8859-1"),
        (msh("KS X 1001", "PID|1||||홍^길동\r").encode("euc-kr"), None, "cp949"),
        (msh("EUC-KR", "PID|1||||홍^길동\r").encode("euc-kr"), None, "cp949"),
        # 똠 is outside KS X 1001's precomposed set: only cp949 (UHC) has it.
        (msh("KS X 1001", "PID|1||||똠^양\r").encode("cp949"), None, "cp949"),
        (msh("CP949", "PID|1||||똠^양\r").encode("cp949"), None, "cp949"),
        # the override wins over a wrong MSH-18
        (msh("ASCII", "PID|1||||홍^길동\r").encode("cp949"), "KS X 1001", "cp949"),
        # MSH-18 with repetitions and components: first value counts
        (msh("8859/1~UNICODE UTF-8", "PID|1||||Ä\r").encode("latin-1"), None, "iso8859-1"),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, codec: str) -> None:
    text, used = decode_bytes(data, charset=charset)
    assert used == codec
    assert text == data.decode(codec)


def test_korean_names_through_parse() -> None:
    m = parse(msh("KS X 1001", "PID|1||||홍^길동~똠^양\r").encode("cp949"))
    assert (m.get("PID-5.1"), m.get("PID-5.2"), m.get("PID-5[2].1")) == ("홍", "길동", "똠")
    assert m.charset == "cp949"
    assert m.hl7_charset == "KS X 1001"
    assert m.to_bytes() == msh("KS X 1001", "PID|1||||홍^길동~똠^양\r").encode("cp949")


def test_bom_is_stripped_and_means_utf8() -> None:
    body = msh("8859/1", "PID|1||||Müller\r").encode("utf-8")
    text, codec = decode_bytes(b"\xef\xbb\xbf" + body)
    assert (text[:3], codec) == ("MSH", "utf-8")
    assert parse(b"\xef\xbb\xbf" + body).get("PID-5") == "Müller"
    # an explicit override still wins over the BOM
    assert decode_bytes(b"\xef\xbb\xbf" + body, charset="latin-1")[1] == "iso8859-1"


def test_wrong_charset_raises_with_byte_offset() -> None:
    data = msh("UNICODE UTF-8", "PID|1||||Müller\r").encode("latin-1")
    with pytest.raises(Hl7CharsetError) as info:
        decode_bytes(data)
    err = info.value
    assert err.offset == data.index(b"\xfc")
    assert err.charset == "utf-8"
    assert err.segment_index == 1
    assert f"byte offset {err.offset}" in str(err)
    assert "utf-8" in str(err)
    assert "M" + "ller" not in str(err)
    with pytest.raises(Hl7CharsetError):
        parse(data)


def test_offset_counts_the_bom() -> None:
    data = b"\xef\xbb\xbf" + msh().encode() + b"PID|\xff\r"
    with pytest.raises(Hl7CharsetError) as info:
        decode_bytes(data)
    assert info.value.offset == data.index(b"\xff")


def test_ascii_declared_latin1_sent() -> None:
    data = msh("ASCII", "PID|1||||Müller\r").encode("latin-1")
    with pytest.raises(Hl7CharsetError):
        decode_bytes(data)
    text, codec = decode_bytes(data, fallback="8859/1")
    assert codec == "iso8859-1"
    assert "Müller" in text


def test_fallback_failing_too_raises_naming_both() -> None:
    data = msh("ASCII", "PID|1||||\xff\r").encode("latin-1")
    with pytest.raises(Hl7CharsetError) as info:
        decode_bytes(data, fallback="UNICODE UTF-8")
    assert "ascii" in str(info.value)
    assert "utf-8" in str(info.value)


def test_korean_in_wrong_charset() -> None:
    data = msh("UNICODE UTF-8", "PID|1||||홍^길동\r").encode("euc-kr")
    with pytest.raises(Hl7CharsetError) as info:
        parse(data)
    # C8 AB happens to be valid UTF-8 (U+022B); the first invalid byte follows it.
    assert info.value.offset == data.index("길".encode("euc-kr"))
    assert parse(data, charset="KS X 1001").get("PID-5.1") == "홍"


def test_unknown_msh18_raises() -> None:
    with pytest.raises(Hl7CharsetError):
        parse(msh("KLINGON").encode())
    # for text input nothing needs decoding: unknown names fall back to UTF-8
    assert parse(msh("KLINGON")).charset == "utf-8"


def test_charset_override_for_text() -> None:
    assert parse(msh(), charset="KS X 1001").charset == "cp949"
