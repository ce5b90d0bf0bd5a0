"""HL7 escape sequences (v2.x chapter 2, "Use of escape sequences in text fields").

Decoding is one left-to-right pass, so an escaped escape character (``\\E\\``)
can never start a second sequence: ``\\E\\F\\E\\`` is the text ``\\F\\``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .delimiters import Encoding

__all__ = ["escape", "unescape"]

_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")


@lru_cache(maxsize=64)
def _sequence_map(enc: Encoding) -> dict[str, str]:
    table = {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        "P": enc.truncation,
    }
    # An undeclared delimiter has no escape; its sequence stays verbatim.
    resolved = {k: v for k, v in table.items() if v}
    # Highlighting has no meaning in plain text; line breaks do.
    resolved.update({"H": "", "N": "", ".br": "\n"})
    return resolved


def _decode_hex(digits: str, codec: str | None) -> str:
    raw = bytes.fromhex(digits)
    if codec:
        try:
            return raw.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    # latin-1 maps every byte, so a hex escape is never lost.
    return raw.decode("latin-1")


def unescape(value: str, enc: Encoding, codec: str | None = None) -> str:
    """Resolve escape sequences in one leaf value.

    ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\`` (and v2.7 ``\\P\\``) give the delimiters,
    ``\\Xhh..\\`` gives bytes decoded with ``codec`` (latin-1 when that fails),
    ``\\.br\\`` a newline, ``\\H\\``/``\\N\\`` nothing. Other formatting
    (``\\.sp\\``, ``\\.in\\`` ...), charset switches (``\\C..\\``, ``\\M..\\``),
    local ``\\Z..\\`` sequences, malformed and unterminated ones are kept verbatim:
    dropping them would lose information the caller may still want.
    """
    esc = enc.escape
    if not esc or esc not in value:
        return value
    table = _sequence_map(enc)
    out: list[str] = []
    i = 0
    while True:
        j = value.find(esc, i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        k = value.find(esc, j + 1)
        if k < 0:
            out.append(value[j:])
            break
        seq = value[j + 1 : k]
        repl = table.get(seq)
        if repl is None and seq[:1] == "X" and _HEX.fullmatch(seq, 1):
            repl = _decode_hex(seq[1:], codec)
        out.append(value[j : k + 1] if repl is None else repl)
        i = k + 1
    return "".join(out)


@lru_cache(maxsize=64)
def _escape_table(enc: Encoding) -> dict[int, str]:
    esc = enc.escape
    table = {
        ord(ch): f"{esc}{code}{esc}"
        for ch, code in (
            (enc.escape, "E"),
            (enc.field, "F"),
            (enc.component, "S"),
            (enc.subcomponent, "T"),
            (enc.repetition, "R"),
            (enc.truncation, "P"),
        )
        if ch
    }
    # A raw CR would end the segment; LF is turned into CR by the parser.
    table[ord("\r")] = f"{esc}X0D{esc}"
    table[ord("\n")] = f"{esc}.br{esc}"
    return table


def escape(value: str, enc: Encoding) -> str:
    """Escape ``value`` for use as one leaf (subcomponent) in a message with ``enc``.

    ``unescape(escape(v, enc), enc) == v`` for every ``v``. Raises ValueError when
    ``value`` contains a delimiter or line break but the message declares no
    escape character, since it then cannot be represented.
    """
    if not enc.escape:
        if any(c and c in value for c in (*enc[:5], enc.truncation, "\r", "\n")):
            raise ValueError("value holds a delimiter but the message has no escape character")
        return value
    return value.translate(_escape_table(enc))
