"""Batch files: FHS/BHS ... BTS/FTS envelopes, or messages simply concatenated."""

from __future__ import annotations

from .charset import decode_bytes
from .errors import Hl7ParseError
from .message import Message, _build, _split_segments

__all__ = ["parse_batch"]

_ENVELOPE = frozenset({"FHS", "BHS", "BTS", "FTS"})


def _count(seg: str, component: str, index: int) -> int | None:
    """Field 1 of a BTS/FTS segment as a number, None when empty."""
    if len(seg) < 5:
        return None
    value = seg.split(seg[3])[1]
    if component:
        value = value.split(component, 1)[0]
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise Hl7ParseError(f"{seg[:3]}-1 is not a count", segment_index=index, field=1)
    return int(value)


def parse_batch(data: bytes | str) -> list[Message]:
    """Parse a batch file into its messages.

    Accepts the FHS/BHS/BTS/FTS envelope (all parts optional, several batches per
    file allowed) and bare concatenations of messages, each starting at its MSH.
    Bytes are decoded as a whole with the charset of the first MSH. BTS-1 must
    equal the number of messages since the preceding BHS and FTS-1 the number of
    BHS segments (1 is also accepted when the file has messages but no BHS,
    which some writers emit); empty counts are not checked. Any message that
    does not parse makes the whole file fail; error indexes count segments from
    the start of the file. Empty input gives ``[]``.
    """
    if isinstance(data, str):
        text, codec = data, None
    else:
        text, codec = decode_bytes(bytes(data))
    segs = _split_segments(text)
    messages: list[Message] = []
    start = -1  # index of the current message's MSH, -1 outside a message
    batches = 0
    in_batch = 0
    component = "^"
    ended = False

    def flush(end: int) -> None:
        nonlocal start, in_batch
        if start >= 0:
            messages.append(_build(segs[start:end], codec, base=start))
            in_batch += 1
            start = -1

    for i, seg in enumerate(segs):
        name = seg[:3]
        if ended:
            raise Hl7ParseError("segment after FTS", segment_index=i)
        if name == "MSH":
            flush(i)
            start = i
            continue
        if name not in _ENVELOPE:
            if start < 0:
                raise Hl7ParseError("segment outside a message", segment_index=i)
            continue
        flush(i)
        if name == "FHS":
            if i != 0:
                raise Hl7ParseError("FHS is not the first segment", segment_index=i)
            # Envelope segments use the same delimiters as the messages.
            component = seg[4:5] if len(seg) > 4 and seg[4] != seg[3] else ""
        elif name == "BHS":
            if i == 0:
                component = seg[4:5] if len(seg) > 4 and seg[4] != seg[3] else ""
            batches += 1
            in_batch = 0
        elif name == "BTS":
            expected = _count(seg, component, i)
            if expected is not None and expected != in_batch:
                raise Hl7ParseError(
                    f"BTS-1 says {expected} messages, batch has {in_batch}",
                    segment_index=i,
                    field=1,
                )
            in_batch = 0
        else:  # FTS
            expected = _count(seg, component, i)
            ok = (
                expected is None
                or expected == batches
                or (batches == 0 and expected == 1 and bool(messages))
            )
            if not ok:
                raise Hl7ParseError(
                    f"FTS-1 says {expected} batches, file has {batches}",
                    segment_index=i,
                    field=1,
                )
            ended = True
    flush(len(segs))
    return messages
