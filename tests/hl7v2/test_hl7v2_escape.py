"""Escape sequences of hl7bus.hl7v2."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7bus.hl7v2 import DEFAULT_ENCODING, Encoding, escape, parse, unescape

CUSTOM = Encoding("#", "!", "@", "$", "%")


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("plain", "plain"),
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d\\E\\e", "a^b&c~d\\e"),
        ("\\E\\F\\E\\", "\\F\\"),  # never double-decoded
        ("\\E\\E\\E\\", "\\E\\"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\H\\bold\\N\\", "bold"),
        ("\\.sp2\\x\\.in+4\\y\\.ce\\", "\\.sp2\\x\\.in+4\\y\\.ce\\"),  # formatting kept
        ("\\X41\\", "A"),
        ("\\X4142\\", "AB"),
        ("\\XC3A9\\", "é"),  # UTF-8 bytes in a UTF-8 message
        ("\\XE9\\", "é"),  # not valid UTF-8: latin-1
        ("\\X4\\", "\\X4\\"),  # odd digit count: verbatim
        ("\\XZZ\\", "\\XZZ\\"),
        ("\\X\\", "\\X\\"),
        ("\\Zlocal\\", "\\Zlocal\\"),
        ("\\C2842\\x", "\\C2842\\x"),
        ("\\\\", "\\\\"),  # empty sequence
        ("tail \\F", "tail \\F"),  # unterminated
        ("\\P\\", "\\P\\"),  # no truncation character declared
    ],
)
def test_unescape(raw: str, decoded: str) -> None:
    assert unescape(raw, DEFAULT_ENCODING, "utf-8") == decoded


def test_unescape_hex_in_message_charset() -> None:
    # 0xC8AB is 홍 in EUC-KR / cp949.
    assert unescape("\\XC8AB\\", DEFAULT_ENCODING, "cp949") == "홍"
    assert unescape("\\XC8AB\\", DEFAULT_ENCODING, "ascii") == "\xc8\xab"
    m = parse("MSH|^~\\&|A" + "|" * 15 + "KS X 1001\rPID|1||\\XC8AB\\\r")
    assert m.hl7_charset == "KS X 1001"
    assert m.get("PID-3") == "홍"


def test_custom_escape_character() -> None:
    assert unescape("a$F$b$S$c$E$", CUSTOM) == "a#b!c$"
    assert unescape("a\\F\\b", CUSTOM) == "a\\F\\b"
    assert escape("a#b!c$d@e%f", CUSTOM) == "a$F$b$S$c$E$d$R$e$T$f"


def test_no_escape_character() -> None:
    enc = Encoding("|", "^", "~", "", "")
    assert unescape("a\\F\\b", enc) == "a\\F\\b"
    assert escape("plain", enc) == "plain"
    with pytest.raises(ValueError):
        escape("a|b", enc)


def test_escape_line_breaks() -> None:
    assert escape("a\nb\rc", DEFAULT_ENCODING) == "a\\.br\\b\\X0D\\c"


ENCODINGS = st.sampled_from([DEFAULT_ENCODING, CUSTOM, Encoding("|", "^", "~", "\\", "&", "#")])


@settings(max_examples=200, deadline=None)
@given(st.text(), ENCODINGS)
def test_escape_round_trip(value: str, enc: Encoding) -> None:
    escaped = escape(value, enc)
    assert unescape(escaped, enc, "utf-8") == value
    for delimiter in (enc.field, enc.component, enc.repetition, enc.subcomponent, "\r", "\n"):
        assert delimiter not in escaped


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab\\FSTREX.br0123456789HNZ"))
def test_unescape_total(value: str) -> None:
    # Any text unescapes without error; text without escape characters is unchanged.
    out = unescape(value, DEFAULT_ENCODING, "utf-8")
    if "\\" not in value:
        assert out == value
