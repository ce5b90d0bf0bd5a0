"""Splitting a message file into its messages on the raw bytes, sans I/O.

A file is one message, an FHS/BHS ... BTS/FTS batch, or messages simply concatenated. Each
message is returned as a byte range of the file, so the envelope's ``raw`` is exactly the bytes
the file holds for it, and each message is decoded on its own (its own MSH-18): one message in
a charset the file's other messages do not share, or with undecodable bytes, goes to the DLQ
alone instead of failing the file.

Why splitting bytes is safe: every charset the bus can detect is ASCII-compatible, and none of
them (ISO 8859-x, UTF-8, cp949/EUC-KR, GB 18030, Big5, Shift-JIS) uses 0x0D or 0x0A inside a
multi-byte character (UTF-8 continuation bytes are >= 0x80; the trail bytes of the CJK
double-byte sets are >= 0x30). So CR and LF in the bytes are always segment terminators and the
three bytes after one are a segment id. Big5 and Shift-JIS trail bytes can equal ``|`` or
``\\``, which is why field values are not split here: only BTS-1/FTS-1 (ASCII digits before any
text field) are read. Charsets that are not ASCII-compatible (UTF-16/32) are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hl7bus.hl7v2 import lookup_codec
from hl7bus.hl7v2.charset import read_msh18

__all__ = ["FileFormatError", "SplitFile", "split_file"]

_UTF8_BOM = b"\xef\xbb\xbf"
_TERMINATOR = re.compile(rb"\r\n|\r|\n")
_ENVELOPE = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})
_PROBE = "\r\nMSH|^~\\&|BTS|0\r"


class FileFormatError(ValueError):
    """The file as a whole cannot be read as HL7 messages.

    ``code`` is a short label for metrics and DLQ headers ("empty", "not_hl7", "batch",
    "charset"); the text names what and where (segment index counted from the file's first
    segment), never values.
    """

    def __init__(self, code: str, reason: str, segment_index: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.segment_index = segment_index
        super().__init__(reason if segment_index is None else f"{reason} (segment {segment_index})")


@dataclass(frozen=True)
class SplitFile:
    """Byte ranges ``(start, end)`` of the messages of a file, in file order.

    ``charset`` is set when the file itself fixes the charset of all its messages (a UTF-8
    byte-order mark), else None: each message is decoded by its own MSH-18.
    """

    ranges: list[tuple[int, int]]
    charset: str | None = None
    batches: int = 0


def _ascii_compatible(codec: str) -> bool:
    try:
        return _PROBE.encode(codec) == _PROBE.encode("ascii")
    except (LookupError, UnicodeError):
        return False


def _count(seg: bytes, component: bytes, index: int) -> int | None:
    """Field 1 of a BTS/FTS segment as a number, None when empty (as hl7v2.parse_batch)."""
    if len(seg) < 5:
        return None
    value = seg.split(seg[3:4])[1]
    if component:
        value = value.split(component, 1)[0]
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise FileFormatError("batch", f"{seg[:3].decode('ascii')}-1 is not a count", index)
    return int(value)


def _component(seg: bytes) -> bytes:
    return seg[4:5] if len(seg) > 4 and seg[4:5] != seg[3:4] else b""


def split_file(data: bytes, charset: str | None = None) -> SplitFile:
    """Find the messages of a file; validate its batch envelope.

    The structure rules are those of :func:`hl7bus.hl7v2.parse_batch`: FHS only first; BTS-1
    equals the messages since the preceding BHS; FTS-1 the number of BHS (or 1 for a file with
    messages and no BHS); nothing after FTS; no segment outside a message. A message's range
    runs from its MSH to the terminator of its last segment; blank lines between messages
    belong to none. ``charset`` is the feed's override (checked for ASCII compatibility).
    Raises :class:`FileFormatError`.
    """
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    file_charset = "utf-8" if skip and charset is None else None
    declared = charset if charset is not None else ("utf-8" if skip else read_msh18(data))
    codec = lookup_codec(declared)
    if codec is not None and not _ascii_compatible(codec):
        raise FileFormatError(
            "charset", f"charset {codec} is not ASCII-compatible; files in it are not supported"
        )

    ranges: list[tuple[int, int]] = []
    start = -1  # byte offset of the current message's MSH, -1 outside a message
    end = -1  # byte offset just past the current message's last segment terminator
    batches = 0
    in_batch = 0
    component = b"^"
    ended = False
    index = -1  # segment index, blank lines not counted

    def flush() -> None:
        nonlocal start, in_batch
        if start >= 0:
            ranges.append((start, end))
            in_batch += 1
            start = -1

    pos = skip
    size = len(data)
    while pos < size:
        m = _TERMINATOR.search(data, pos)
        seg_end, next_pos = (m.start(), m.end()) if m else (size, size)
        seg_start = pos
        pos = next_pos
        seg = data[seg_start:seg_end]
        if not seg.strip():
            continue
        index += 1
        if index == 0:
            stripped = seg.lstrip()
            seg_start += len(seg) - len(stripped)
            seg = stripped
        name = seg[:3]
        if ended:
            raise FileFormatError("batch", "segment after FTS", index)
        if name == b"MSH":
            flush()
            start, end = seg_start, next_pos
            continue
        if name not in _ENVELOPE:
            if start < 0:
                if index == 0:
                    raise FileFormatError("not_hl7", "the file does not start with MSH or FHS/BHS")
                raise FileFormatError("batch", "segment outside a message", index)
            end = next_pos
            continue
        flush()
        if name == b"FHS":
            if index != 0:
                raise FileFormatError("batch", "FHS is not the first segment", index)
            component = _component(seg)
        elif name == b"BHS":
            if index == 0:
                component = _component(seg)
            batches += 1
            in_batch = 0
        elif name == b"BTS":
            expected = _count(seg, component, index)
            if expected is not None and expected != in_batch:
                raise FileFormatError(
                    "batch", f"BTS-1 says {expected} messages, batch has {in_batch}", index
                )
            in_batch = 0
        else:  # FTS
            expected = _count(seg, component, index)
            ok = (
                expected is None
                or expected == batches
                or (batches == 0 and expected == 1 and bool(ranges))
            )
            if not ok:
                raise FileFormatError(
                    "batch", f"FTS-1 says {expected} batches, file has {batches}", index
                )
            ended = True
    flush()
    if index < 0:
        raise FileFormatError("empty", "the file holds no segments")
    return SplitFile(ranges, file_charset, batches)
