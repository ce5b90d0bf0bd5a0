"""Character sets: HL7 MSH-18 names, and turning raw bytes into text.

HL7 names its character sets in table 0211 (``8859/1``, ``UNICODE UTF-8``,
``KS X 1001`` ...), not with IANA names, and MSH-18 sits inside the very bytes
that need decoding. The header is therefore read from the raw bytes first: every
supported charset is ASCII-compatible in the MSH up to field 18 in practice
(application and facility names), so a byte-level split of the first MSH segment
is safe there, while the rest of the message is only split after decoding (Big5
or Shift-JIS trail bytes may equal ``|`` or ``\\``).
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

from .errors import Hl7CharsetError

__all__ = [
    "DEFAULT_CODEC",
    "codec_for",
    "decode_bytes",
    "lookup_codec",
    "read_msh18",
    "read_msh_field",
]

#: Used when MSH-18 is empty or absent. The standard default is ASCII, but UTF-8
#: decodes every ASCII message identically and also accepts the many UTF-8 feeds
#: that never fill MSH-18.
DEFAULT_CODEC = "utf-8"

_UTF8_BOM = b"\xef\xbb\xbf"

# Keys are normalized (upper case, single spaces). Korean names decode with cp949,
# the superset of EUC-KR that Korean HIS actually emit (UHC syllables outside
# KS X 1001's 2,350 precomposed Hangul show up in patient names).
_HL7_NAMES: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "ISO IR100": "iso8859-1",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    # Table 0211 leaves "UNICODE" unspecific; the MSH that named it was read as
    # ASCII-compatible bytes, so it cannot be UTF-16/32 and UTF-8 is what remains.
    "UNICODE": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "KS X 1001": "cp949",
    "KS C 5601": "cp949",
    "EUC-KR": "cp949",
    "CP949": "cp949",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
}

_WS = re.compile(r"\s+")


@lru_cache(maxsize=256)
def lookup_codec(name: str | None) -> str | None:
    """Python codec for an HL7 table 0211 name or a Python/IANA codec name.

    Empty or None gives :data:`DEFAULT_CODEC`; an unknown name gives None.
    """
    if name is None:
        return DEFAULT_CODEC
    key = _WS.sub(" ", name.strip()).upper()
    if not key:
        return DEFAULT_CODEC
    codec = _HL7_NAMES.get(key)
    if codec is not None:
        return codec
    try:
        codec = codecs.lookup(key).name
    except LookupError:
        return None
    return "cp949" if codec == "euc_kr" else codec


def codec_for(name: str | None) -> str:
    """Like :func:`lookup_codec` but an unknown name raises :class:`Hl7CharsetError`."""
    codec = lookup_codec(name)
    if codec is None:
        # The name is header metadata, not patient data; cap it all the same.
        raise Hl7CharsetError(f"unknown character set {str(name)[:32]!r}", charset=name)
    return codec


_MSH_AT_LINE_START = re.compile(rb"(?:^|[\r\n])MSH")


def read_msh18(data: bytes) -> str | None:
    """MSH-18 (first repetition, first component) read from raw bytes, or None.

    Looks at the first MSH segment, which is the first segment of a message and
    follows FHS/BHS in a batch file.
    """
    found = _msh_fields(data, 18)
    if found is None:
        return None
    enc, value = found
    if len(enc) > 1:
        value = value.split(enc[1:2], 1)[0]
    if enc[:1]:
        value = value.split(enc[:1], 1)[0]
    return value.decode("latin-1")


def read_msh_field(data: bytes, field: int) -> str | None:
    """MSH-``field`` (3 or more) exactly as sent -- repetitions, components and
    escape sequences untouched -- read from raw bytes as :func:`read_msh18` reads
    MSH-18, latin-1; None when the MSH has no such field. For header values needed
    without a full parse; a caller that finds delimiters in the value parses."""
    if field < 3:
        raise ValueError("MSH-1 and MSH-2 are the delimiters, not fields to read")
    found = _msh_fields(data, field)
    return None if found is None else found[1].decode("latin-1")


def _msh_fields(data: bytes, field: int) -> tuple[bytes, bytes] | None:
    """(MSH-2, MSH-``field``) as bytes, from the first MSH segment of ``data``."""
    start = 0 if data.startswith(b"MSH") else -1
    if start < 0:
        m = _MSH_AT_LINE_START.search(data)
        if m is None:
            return None
        start = m.end() - 3
    end = len(data)
    for term in (b"\r", b"\n"):
        i = data.find(term, start, end)
        if i >= 0:
            end = i
    seg = data[start:end]
    if len(seg) < 4:
        return None
    fields = seg.split(seg[3:4])
    if len(fields) < field:  # fields[0] is "MSH", fields[n - 1] is MSH-n
        return None
    return fields[1], fields[field - 1]


def _segment_index_at(data: bytes, start: int, offset: int) -> int:
    # Mirrors the parser's segment numbering: blank lines do not count.
    parts = re.split(rb"\r\n?|\n", data[start:offset])
    return sum(1 for p in parts[:-1] if p.strip())


def decode_bytes(
    data: bytes, *, charset: str | None = None, fallback: str | None = None
) -> tuple[str, str]:
    """Decode a message (or batch file) to text; return ``(text, codec)``.

    The charset is ``charset`` when given (a per-feed override; HL7 or Python
    name), else UTF-8 when the data starts with a UTF-8 byte-order mark (no
    single-byte writer emits one, while stale MSH-18 values are common), else
    MSH-18, else :data:`DEFAULT_CODEC`. A UTF-8 BOM is always stripped.
    Undecodable bytes are never replaced: ``fallback`` (if given) is tried, then
    :class:`Hl7CharsetError` names the byte offset and the charset.
    """
    skip = 3 if data.startswith(_UTF8_BOM) else 0
    if charset is not None:
        codec = codec_for(charset)
    elif skip:
        codec = "utf-8"
    else:
        codec = codec_for(read_msh18(data))
    body = data[skip:] if skip else data
    try:
        return body.decode(codec), codec
    except UnicodeDecodeError as exc:
        first = exc
    if fallback is not None:
        fb = codec_for(fallback)
        try:
            return body.decode(fb), fb
        except UnicodeDecodeError:
            pass
    offset = skip + first.start
    tried = codec if fallback is None else f"{codec} (fallback {codec_for(fallback)})"
    raise Hl7CharsetError(
        f"bytes not decodable as {tried} at byte offset {offset}",
        charset=codec,
        offset=offset,
        segment_index=_segment_index_at(data, skip, offset),
    )
