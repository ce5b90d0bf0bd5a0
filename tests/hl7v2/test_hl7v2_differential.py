"""Differential tests against python-hl7 (``import hl7``) and hl7apy, independent
parsers, and of our fast read path against a plain reference reader.

python-hl7 is compared at leaf level (SEG-field[rep].component.subcomponent), where both
parsers return decoded text. Justified differences, excluded here:

* a path that stops above the leaves: python-hl7 follows the first child
  (``PID.F5`` is the family name), we return the raw composite (documented);
* empty values: python-hl7 gives ``""``, we give the caller's default (None);
* formatting escapes: python-hl7 turns ``\\.br\\`` into ``\\r`` and ``\\H\\`` into
  ``_``; we give ``\\n`` and ``""`` (a ``\\r`` inside a value would break any
  re-serialization);
* fewer than four encoding characters: python-hl7 substitutes the default
  delimiters for the missing ones, we do not split at undeclared levels;
* python-hl7 strips leading/trailing whitespace of the whole message, we keep
  trailing blanks of the last segment as data;
* an MSH that ends right after MSH-2 (``MSH|^~\\&``): python-hl7 loses the last
  encoding character (its ``find`` returns -1), so generated MSHs carry a field;
* a segment with no field separator at all (``ZZZ``): python-hl7 does not index
  it under its name, so generated segments carry a field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import hl7
import pytest
from hl7v2_samples import ADT_A01, CUSTOM, ORU_R01
from hypothesis import given, settings
from hypothesis import strategies as st

from hl7bus.hl7v2 import Encoding, Message, escape, parse, split_field, unescape


def leaf_paths(msg: Message) -> Iterator[tuple[str, int, tuple[int, int, int, int]]]:
    """(segment id, occurrence, (field, rep, comp, sub)) for every leaf present."""
    enc = msg.encoding
    seen: dict[str, int] = {}
    for seg in msg.segments():
        occ = seen[seg.name] = seen.get(seg.name, 0) + 1
        for f, field in enumerate(seg.fields):
            if f == 0 or (seg.name == "MSH" and f <= 2):
                continue
            for r, rep in enumerate(field.split(enc.repetition), 1):
                for c, comp in enumerate(rep.split(enc.component), 1):
                    for s, _ in enumerate(comp.split(enc.subcomponent), 1):
                        yield seg.name, occ, (f, r, c, s)


_FORMATTING = re.compile(r"\\(?:\.|H\\|N\\|X|Z|C|M)")


def assert_same_as_python_hl7(text: str) -> int:
    ours = parse(text)
    theirs = hl7.parse(text)
    assert ours.get("MSH-1") == str(theirs.segment("MSH")(1))
    assert ours.get("MSH-2") == str(theirs.segment("MSH")(2))
    compared = 0
    for name, occ, (f, r, c, s) in leaf_paths(ours):
        raw = ours.segment(name, occ).fields[f]  # type: ignore[union-attr]
        if ours.encoding.escape == "\\" and _FORMATTING.search(raw):
            continue
        expected = theirs.segments(name)[occ - 1].extract_field(occ, f, r, c, s)
        got = ours.get(f"{name}[{occ}]-{f}[{r}].{c}.{s}")
        assert (got or "") == expected, (name, occ, f, r, c, s)
        compared += 1
    return compared


@pytest.mark.parametrize("text", [ADT_A01, ORU_R01, CUSTOM], ids=["adt", "oru", "custom"])
def test_corpus_matches_python_hl7(text: str) -> None:
    assert assert_same_as_python_hl7(text) > 10


# -- generated messages ---------------------------------------------------------

_PUNCT = "|^~\\&#!@$%*+/:;=?"


@st.composite
def encodings(draw: st.DrawFn) -> Encoding:
    if draw(st.booleans()):
        return Encoding()
    chars = draw(st.permutations(_PUNCT))
    return Encoding(*chars[:5])


_LEAF = st.text(alphabet=st.sampled_from("abcXYZ019.-_'\"홍길동é" + _PUNCT), min_size=0, max_size=6)


# Leaves without delimiters, escapes or repetitions, and often empty: segments that take
# the fast read path of hl7v2/message.py (no repetition, subcomponent or escape character).
_PLAIN_LEAF = st.text(alphabet=st.sampled_from("ab01 "), max_size=2)


@st.composite
def messages(draw: st.DrawFn, leaves: st.SearchStrategy[str] = _LEAF) -> str:
    enc = draw(encodings())

    def field() -> str:
        reps = draw(
            st.lists(
                st.lists(st.lists(leaves, min_size=1, max_size=2), min_size=1, max_size=3),
                min_size=1,
                max_size=2,
            )
        )
        return enc.repetition.join(
            enc.component.join(enc.subcomponent.join(escape(v, enc) for v in comp) for comp in rep)
            for rep in reps
        )

    msh = enc.field.join(["MSH", enc.msh2, *[field() for _ in range(draw(st.integers(1, 12)))]])
    names = draw(
        st.lists(
            st.from_regex(r"[A-Z][A-Z0-9]{2}", fullmatch=True).filter(
                lambda n: n not in {"MSH", "BHS", "FHS", "BTS", "FTS"}
            ),
            max_size=5,
        )
    )
    segs = [msh] + [
        enc.field.join([n, *[field() for _ in range(draw(st.integers(1, 6)))]]) for n in names
    ]
    return "\r".join(segs) + "\r"


@settings(max_examples=60, deadline=None)
@given(messages())
def test_generated_messages_match_python_hl7(text: str) -> None:
    assert_same_as_python_hl7(text)
    assert parse(text).to_er7() == text


@settings(max_examples=100, deadline=None)
@given(messages())
def test_split_field_matches_get(text: str) -> None:
    """split_field gives every leaf of a field at once, as get() reads it one path at a time."""
    msg = parse(text)
    seen: dict[str, int] = {}
    for seg in msg.segments():
        occ = seen[seg.name] = seen.get(seg.name, 0) + 1
        for f, raw in enumerate(seg.fields):
            if f == 0 or (seg.name == "MSH" and f <= 2):
                continue
            for r, rep in enumerate(split_field(raw, msg.encoding, msg.charset), 1):
                for c, comp in enumerate(rep, 1):
                    for s, leaf in enumerate(comp, 1):
                        got = msg.get(f"{seg.name}[{occ}]-{f}[{r}].{c}.{s}")
                        assert (got or "") == leaf, (seg.name, occ, f, r, c, s)


# -- hl7apy on generated messages -------------------------------------------------------
#
# hl7apy needs a version it knows and segments it has definitions for, so these messages
# are ADT^A01 (2.5) with segments drawn from a fixed list (a Z-segment among them),
# default delimiters, and leaves of non-ASCII text holding delimiters (escaped). hl7apy
# reads them with tolerant validation and without group finding (segment order is then
# free). Every leaf it exposes (a field, component or subcomponent with no children
# named by position) must equal Segment.get at the same path. Justified differences
# (see assert_same_as_hl7apy):
#
# * hl7apy's to_er7() re-escapes what it decoded, so its leaf is compared after our
#   unescape (the leaves hold only \F\ \S\ \T\ \R\ \E\, which both decode);
# * where we return a composite (raw ER7, escapes kept: the path stops above the leaves),
#   hl7apy holds one value of a primitive datatype (ST holding "a^b") or a composite
#   whose trailing empty components it dropped: compared as ER7, with our trailing
#   component/subcomponent separators stripped if need be;
# * blanks at the end of a segment: hl7apy strips them, we keep them as data (the last
#   field is compared without trailing blanks), and a value of blanks only (" ", " ^")
#   is empty to hl7apy;
# * numeric datatypes (SI, NM): hl7apy normalizes "01" to "1" and drops blanks; a field
#   of a primitive datatype holding components is untyped to hl7apy (datatype None)
#   and normalized alike: both skipped;
# * fields beyond the segment's definition and components beyond the datatype's have no
#   position name in hl7apy (skipped), and hl7apy re-packs a field that has more
#   components than its datatype defines (skipped: ours are the wire positions);
# * MSH-1/MSH-2 are compared in test_hl7v2_fixtures.py.

_APY_SEGMENTS = ["EVN", "PID", "NK1", "PV1", "PV2", "OBX", "NTE", "AL1", "DG1", "ZPD"]
_APY_LEAF = st.text(alphabet=st.sampled_from("abcXYZ019 .-_'홍길동é|^~\\&"), max_size=6)
_APY_POSITION = re.compile(r"_(\d+)$")
_NUMERIC = frozenset({"SI", "NM"})


@st.composite
def hl7apy_messages(draw: st.DrawFn) -> str:
    enc = Encoding()

    def field() -> str:
        reps = draw(
            st.lists(
                st.lists(st.lists(_APY_LEAF, min_size=1, max_size=2), min_size=1, max_size=3),
                min_size=1,
                max_size=2,
            )
        )
        return enc.repetition.join(
            enc.component.join(enc.subcomponent.join(escape(v, enc) for v in comp) for comp in rep)
            for rep in reps
        )

    header = "MSH|^~\\&|HIS|SNUH|HL7BUS|LAB|20240301083000||ADT^A01^ADT_A01|C1|P|2.5"
    names = draw(st.lists(st.sampled_from(_APY_SEGMENTS), min_size=1, max_size=5))
    segs = [header] + [
        "|".join([n, *[field() for _ in range(draw(st.integers(1, 9)))]]) for n in names
    ]
    return "\r".join(segs) + "\r"


def _apy_position(name: str | None) -> int | None:
    m = _APY_POSITION.search(name or "")
    return int(m.group(1)) if m else None


def assert_same_as_hl7apy(text: str) -> int | None:
    """Leaves compared, or None when hl7apy cannot parse the message."""
    from hl7apy import load_reference
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    ours = parse(text)
    enc = ours.encoding
    try:
        theirs = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except Exception:
        return None
    segments = list(ours.segments())
    assert [s.name for s in theirs.children] == [s.name for s in segments]
    compared = 0
    for their_seg, seg in zip(theirs.children, segments, strict=True):
        last_field = len(seg.fields) - 1
        seen: dict[int, int] = {}
        for field in their_seg.children:
            num = _apy_position(field.name)
            if num is None or (seg.name == "MSH" and num <= 2):
                continue
            rep = seen[num] = seen.get(num, 0) + 1
            raw = seg.fields[num].split(enc.repetition)[rep - 1]
            try:
                defined = len(load_reference(field.datatype, "Datatypes_Structs", "2.5")[1])
            except Exception:
                defined = None
            if defined is not None and len(raw.split(enc.component)) > defined:
                continue  # more components than the datatype: hl7apy re-packs them
            if field.datatype is None or field.datatype in _NUMERIC:
                continue  # untyped (a primitive holding components) or numeric: normalized
            stack: list[tuple[Any, tuple[int, ...]]] = [(field, ())]
            while stack:
                node, levels = stack.pop()
                # Children named by position (XPN_1, FN_1) are components/subcomponents;
                # a leaf has none (only its base datatype, named "ST", "SI" ...).
                named = [
                    (child, pos)
                    for child in node.children
                    if (pos := _apy_position(child.name)) is not None
                ]
                if named:
                    stack.extend((child, (*levels, pos)) for child, pos in named)
                    continue
                if node.datatype in _NUMERIC:
                    continue
                path = f"{num}[{rep}]" + "".join(f".{n}" for n in levels)
                got = seg.get(path) or ""
                # Does our value stop above the leaves (a composite, raw ER7)?
                piece = raw
                for n, sep in zip(levels, (enc.component, enc.subcomponent), strict=False):
                    parts = piece.split(sep)
                    piece = parts[n - 1] if n <= len(parts) else ""
                deeper = (enc.component, enc.subcomponent)[len(levels) :]
                composite = any(sep in piece for sep in deeper)
                theirs = node.to_er7()
                expected = theirs if composite else unescape(theirs, enc)
                if num == last_field:  # hl7apy strips blanks at the end of the segment
                    got, expected = got.rstrip(" "), expected.rstrip(" ")
                if not expected and not got.strip(" " + enc.component + enc.subcomponent):
                    continue  # blanks only: empty to hl7apy
                if composite:
                    # hl7apy also empties a blank-only component inside a composite.
                    emptied = _blank_parts_emptied(got, enc)
                    trailing = enc.component + enc.subcomponent
                    allowed = (got, got.rstrip(trailing), emptied, emptied.rstrip(trailing))
                    assert expected in allowed, (seg.name, path, got, theirs)
                else:
                    assert got == expected, (seg.name, path, got, theirs)
                compared += 1
    return compared


def _blank_parts_emptied(value: str, enc: Encoding) -> str:
    """``value`` with every component and subcomponent that holds only blanks made empty."""
    return enc.component.join(
        enc.subcomponent.join(s if s.strip(" ") else "" for s in c.split(enc.subcomponent))
        for c in value.split(enc.component)
    )


def test_hl7apy_comparison_is_not_vacuous() -> None:
    text = (
        "MSH|^~\\&|HIS|SNUH|HL7BUS|LAB|20240301083000||ADT^A01^ADT_A01|C1|P|2.5\r"
        "PID|1||123^^^SNUH^MR~456^^^KOR^NI||HONG\\S\\X^GIL&DONG^^^^^L|홍길동|19900101|M\r"
        "NK1|1|^&|SPO\r"
    )
    compared = assert_same_as_hl7apy(text)
    assert compared is not None and compared >= 10


@settings(max_examples=25, deadline=None)
@given(hl7apy_messages())
def test_generated_messages_match_hl7apy(text: str) -> None:
    assert assert_same_as_hl7apy(text) is not None  # hl7apy parses all of these


# -- the read path against a plain reference ---------------------------------------------


def reference_get(
    msg: Message, fields: list[str], i: int, f: int, r: int, c: int, s: int
) -> str | None:
    """Message.get's rules (its class docstring) written plainly, without the fast paths
    of hl7v2/message.py: split, select, unescape a leaf. ``fields`` of segment ``i``."""
    enc = msg.encoding
    if f >= len(fields):
        return None
    v = fields[f]
    if i == 0 and f <= 2:
        return None if r > 1 or c > 1 or s > 1 else v
    if not v:
        return None

    def pick(value: str, sep: str, n: int) -> str | None:
        parts = value.split(sep) if sep else [value]
        return parts[n - 1] if n <= len(parts) else None

    picked = pick(v, enc.repetition, r or 1)
    if picked is None:
        return None
    v = picked
    if c:
        picked = pick(v, enc.component, c)
        if picked is None:
            return None
        v = picked
        if s:
            picked = pick(v, enc.subcomponent, s)
            if picked is None:
                return None
            v = picked
        elif enc.subcomponent and enc.subcomponent in v:
            return v
    elif any(sep and sep in v for sep in (enc.component, enc.subcomponent)):
        return v
    return unescape(v, enc, msg.charset) if v else None


def assert_reads_like_reference(text: str) -> int:
    msg = parse(text)
    seen: dict[str, int] = {}
    checked = 0
    for i, seg in enumerate(msg.segments()):
        occ = seen[seg.name] = seen.get(seg.name, 0) + 1
        for f in range(1, len(seg.fields) + 1):
            for r in range(3):
                for c in range(4):
                    for s in range(3 if c else 1):
                        path = f"{f}" + (f"[{r}]" if r else "") + (f".{c}" if c else "")
                        path += f".{s}" if s else ""
                        expected = reference_get(msg, seg.fields, i, f, r, c, s)
                        # Segment.get (its inlined fast path) and Message.get (_read).
                        assert seg.get(path) == expected, (seg.name, occ, path)
                        assert msg.get(f"{seg.name}[{occ}]-{path}") == expected
                        checked += 1
    return checked


@settings(max_examples=60, deadline=None)
@given(st.one_of(messages(), messages(_PLAIN_LEAF)))
def test_generated_messages_read_like_the_reference(text: str) -> None:
    assert_reads_like_reference(text)


@pytest.mark.parametrize("text", [ADT_A01, ORU_R01, CUSTOM], ids=["adt", "oru", "custom"])
def test_corpus_reads_like_the_reference(text: str) -> None:
    assert assert_reads_like_reference(text) > 100


def test_set_leaves_the_fast_path() -> None:
    """A segment read through the fast path (no repetition, subcomponent or escape
    character in it) that gets an escaped value by set() must be read fully again."""
    msg = parse(ORU_R01)
    obx = msg.segment("OBX")
    assert obx is not None and obx.get("5") == "13.5"
    msg.set("OBX-5", "a~b|c")
    assert obx.get("5") == "a~b|c"
    assert msg.get("OBX-5") == "a~b|c"
    msg.set("OBX-5.2", "x")
    assert obx.get("5") == "a\\R\\b\\F\\c^x"
    assert obx.get("5.1") == "a~b|c"
