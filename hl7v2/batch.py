"""Batch files: FHS/BHS ... BTS/FTS envelopes, or messages simply concatenated.

The file is split into messages on its raw bytes (:func:`split_batch`), then each message is
decoded on its own (its own MSH-18) and parsed (:func:`parse_batch`).

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
from collections.abc import Callable
from dataclasses import dataclass

from .charset import decode_bytes, lookup_codec, read_msh18
from .errors import Hl7CharsetError, Hl7ParseError
from .message import Message, _build, _split_segments

__all__ = ["BatchSplit", "parse_batch", "split_batch"]

_UTF8_BOM = b"\xef\xbb\xbf"
_TERMINATOR = re.compile(rb"\r\n|\r|\n")
# The ASCII characters str.isspace() accepts, so blank lines are those the parser drops.
_BLANK = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_ENVELOPE = frozenset({b"FHS", b"BHS", b"BTS", b"FTS"})
_PROBE = "\r\nMSH|^~\\&|BTS|0\r"


@dataclass(frozen=True)
class BatchSplit:
    """The messages of a batch file as byte ranges ``(start, end)``, in file order.

    A range runs from the message's MSH to the terminator of its last segment; blank lines
    between messages belong to none. ``charset`` is set when the file itself fixes the charset
    of all its messages (the override given, or a UTF-8 byte-order mark), else None: each
    message is decoded by its own MSH-18. ``batches`` counts BHS segments, ``segments`` all
    segments (blank lines not counted).
    """

    ranges: list[tuple[int, int]]
    charset: str | None = None
    batches: int = 0
    segments: int = 0


def _ascii_compatible(codec: str) -> bool:
    try:
        return _PROBE.encode(codec) == _PROBE.encode("ascii")
    except (LookupError, UnicodeError):
        return False


def _count(seg: bytes, component: bytes, index: int) -> int | None:
    """Field 1 of a BTS/FTS segment as a number, None when empty."""
    if len(seg) < 5:
        return None
    value = seg.split(seg[3:4])[1]
    if component:
        value = value.split(component, 1)[0]
    value = value.strip(_BLANK)
    if not value:
        return None
    if not value.isdigit():
        raise Hl7ParseError(
            f"{seg[:3].decode('ascii')}-1 is not a count", segment_index=index, field=1
        )
    return int(value)


def _component(seg: bytes) -> bytes:
    # Envelope segments use the same delimiters as the messages.
    return seg[4:5] if len(seg) > 4 and seg[4:5] != seg[3:4] else b""


def split_batch(
    data: bytes,
    charset: str | None = None,
    *,
    on_message: Callable[[int, int, int], None] | None = None,
) -> BatchSplit:
    """Find the messages of a batch file on its raw bytes; check its envelope.

    FHS only first; BTS-1 equals the messages since the preceding BHS and FTS-1 the number of
    BHS segments (1 is also accepted when the file has messages but no BHS, which some writers
    emit); empty counts are not checked; nothing after FTS; no segment outside a message.
    ``charset`` is an override (HL7 or Python name) for all messages; the charset in use must
    be ASCII-compatible. ``on_message(start, end, segment_index)`` is called for each message
    as soon as it ends, before the segment after it is checked, so errors it raises come in
    file order. Raises :class:`Hl7ParseError` (:class:`Hl7CharsetError` for the charset),
    segment indexes counted from the first segment of the file.
    """
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    fixed = charset if charset is not None else ("utf-8" if skip else None)
    declared = fixed if fixed is not None else read_msh18(data)
    codec = lookup_codec(declared)
    if codec is not None and not _ascii_compatible(codec):
        raise Hl7CharsetError(
            f"charset {codec} is not ASCII-compatible; batch files in it are not supported",
            charset=codec,
        )

    ranges: list[tuple[int, int]] = []
    start = -1  # byte offset of the current message's MSH, -1 outside a message
    end = -1  # byte offset just past the current message's last segment terminator
    base = -1  # segment index of the current message's MSH
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
            if on_message is not None:
                on_message(start, end, base)
            start = -1

    pos = skip
    size = len(data)
    while pos < size:
        m = _TERMINATOR.search(data, pos)
        seg_end, next_pos = (m.start(), m.end()) if m else (size, size)
        seg_start = pos
        pos = next_pos
        seg = data[seg_start:seg_end]
        if not seg.strip(_BLANK):
            continue
        index += 1
        if index == 0:
            stripped = seg.lstrip(_BLANK)
            seg_start += len(seg) - len(stripped)
            seg = stripped
        name = seg[:3]
        if ended:
            raise Hl7ParseError("segment after FTS", segment_index=index)
        if name == b"MSH":
            flush()
            start, end, base = seg_start, next_pos, index
            continue
        if name not in _ENVELOPE:
            if start < 0:
                raise Hl7ParseError("segment outside a message", segment_index=index)
            end = next_pos
            continue
        flush()
        if name == b"FHS":
            if index != 0:
                raise Hl7ParseError("FHS is not the first segment", segment_index=index)
            component = _component(seg)
        elif name == b"BHS":
            if index == 0:
                component = _component(seg)
            batches += 1
            in_batch = 0
        elif name == b"BTS":
            expected = _count(seg, component, index)
            if expected is not None and expected != in_batch:
                raise Hl7ParseError(
                    f"BTS-1 says {expected} messages, batch has {in_batch}",
                    segment_index=index,
                    field=1,
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
                raise Hl7ParseError(
                    f"FTS-1 says {expected} batches, file has {batches}",
                    segment_index=index,
                    field=1,
                )
            ended = True
    flush()
    return BatchSplit(ranges, fixed, batches, index + 1)


def parse_batch(data: bytes | str) -> list[Message]:
    """Parse a batch file into its messages.

    Accepts the FHS/BHS/BTS/FTS envelope (all parts optional, several batches per
    file allowed) and bare concatenations of messages, each starting at its MSH;
    the envelope rules are those of :func:`split_batch`. Bytes are decoded message
    by message, each with its own MSH-18 (UTF-8 for all when the file starts with a
    UTF-8 byte-order mark); text is split the same way. Any message that does not
    parse or decode makes the whole file fail, with the first error in file order;
    error indexes count segments, and charset error offsets bytes, from the start
    of the file. Empty input gives ``[]``.
    """
    text_input = isinstance(data, str)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    messages: list[Message] = []
    file_charset = "utf-8" if raw.startswith(_UTF8_BOM) else None

    def build(lo: int, hi: int, base: int) -> None:
        if text_input:
            text, codec = raw[lo:hi].decode("utf-8", "surrogatepass"), None
        else:
            try:
                text, codec = decode_bytes(raw[lo:hi], charset=file_charset)
            except Hl7CharsetError as exc:
                if exc.offset is None:
                    raise Hl7CharsetError(
                        exc.reason, charset=exc.charset, segment_index=base
                    ) from None
                offset = lo + exc.offset
                raise Hl7CharsetError(
                    f"bytes not decodable as {exc.charset} at byte offset {offset}",
                    charset=exc.charset,
                    offset=offset,
                    segment_index=base + (exc.segment_index or 0),
                ) from None
        messages.append(_build(_split_segments(text), codec, base=base))

    # Text needs no charset detection (and UTF-8 passes the ASCII-compatibility check).
    split_batch(raw, "utf-8" if text_input else None, on_message=build)
    return messages
