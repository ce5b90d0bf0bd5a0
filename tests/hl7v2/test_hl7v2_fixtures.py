"""Real-world test messages of other open-source HL7 libraries (tests/hl7v2/fixtures/,
provenance and licences in fixtures/README.md), table-driven.

Each fixture file must:

* parse (batch files through ``parse_batch``);
* serialize byte-identically to its input after terminator normalization (``\\n`` and
  ``\\r\\n`` become ``\\r``, every segment ends with ``\\r``, blank lines are dropped; the
  bytes are re-encoded with the charset MSH-18 names);
* agree with python-hl7 on every leaf (``SEG-f[r].c.s``); the justified differences
  are those of test_hl7v2_differential.py, plus one seen here: python-hl7 strips
  whitespace at the end of the whole message (``node-hl7_adt_a08_nld_8859``'s last
  field ends with a blank), we keep it as data;
* agree with hl7apy, where hl7apy parses the message (tolerant, no groups), on every
  component hl7apy exposes. Justified differences, skipped:

  - fields beyond the segment definition of the message's version: hl7apy does not
    name them (``name is None``), so their position is unknown;
  - components beyond the datatype definition (``CX`` has 8 components in 2.3.1;
    ``PID-3.9`` is sent anyway): hl7apy re-packs them, we keep the wire positions;
  - numeric datatypes (SI, NM, ...): hl7apy normalizes ``0001`` to ``1``;
  - values containing the escape character: hl7apy's ``to_er7`` escapes the escape
    character of sequences it does not decode (``\\X0D\\`` becomes ``\\E\\X0D\\E\\``);
  - trailing empty components and subcomponents, which hl7apy's ``to_er7`` drops.
"""

from __future__ import annotations

import re
from pathlib import Path

import hl7
import pytest
from test_hl7v2_differential import _FORMATTING, leaf_paths

from hl7bus.hl7v2 import Message, parse, parse_batch

FIXTURES = Path(__file__).parent / "fixtures"
FILES = sorted(FIXTURES.glob("*.hl7"))


def _normalize(raw: bytes) -> bytes:
    text = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return b"".join(seg + b"\r" for seg in text.split(b"\r") if seg.strip())


def _messages(path: Path) -> list[Message]:
    data = path.read_bytes()
    if data[:3] in (b"FHS", b"BHS"):
        return parse_batch(data)
    return [parse(data)]


def test_there_are_enough_fixtures() -> None:
    assert 10 <= len(FILES) <= 20
    readme = (FIXTURES / "README.md").read_text()
    for path in FILES:
        assert path.name in readme, f"{path.name} has no provenance in fixtures/README.md"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fixture_round_trips(path: Path) -> None:
    raw = path.read_bytes()
    messages = _messages(path)
    assert messages
    if raw[:3] in (b"FHS", b"BHS"):
        envelope = [
            s for s in _normalize(raw).split(b"\r") if s[:3] in (b"FHS", b"BHS", b"BTS", b"FTS")
        ]
        body = b"".join(m.to_bytes() for m in messages)
        assert body in _normalize(raw)
        assert len(envelope) == 4
    else:
        assert messages[0].to_bytes() == _normalize(raw)
        # parse(serialize(m)) == m
        again = parse(messages[0].to_bytes())
        assert again.to_er7() == messages[0].to_er7()


def _agree_with_python_hl7(msg: Message) -> int:
    text = msg.to_er7()
    theirs = hl7.parse(text)
    compared = 0
    last = list(leaf_paths(msg))[-1]
    for name, occ, (f, r, c, s) in leaf_paths(msg):
        raw = msg.segment(name, occ).fields[f]  # type: ignore[union-attr]
        if msg.encoding.escape == "\\" and _FORMATTING.search(raw):
            continue
        expected = theirs.segments(name)[occ - 1].extract_field(occ, f, r, c, s)
        got = msg.get(f"{name}[{occ}]-{f}[{r}].{c}.{s}") or ""
        if (name, occ, (f, r, c, s)) == last:
            got = got.rstrip()  # python-hl7 strips the end of the message
        assert got == expected, (name, occ, f, r, c, s)
        compared += 1
    return compared


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fixture_agrees_with_python_hl7(path: Path) -> None:
    for msg in _messages(path):
        assert _agree_with_python_hl7(msg) > 5


_POSITION = re.compile(r"_(\d+)$")
_NUMERIC = frozenset({"SI", "NM"})


def _agree_with_hl7apy(msg: Message) -> int | None:
    """Components compared, or None when hl7apy cannot parse the message."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    try:
        theirs = parse_message(
            msg.to_er7(), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False
        )
    except Exception:
        return None
    enc = msg.encoding
    compared = 0
    segments = list(msg.segments())
    assert [s.name for s in theirs.children] == [s.name for s in segments]
    for their_seg, seg in zip(theirs.children, segments, strict=True):
        fields = seg.fields
        seen: dict[int, int] = {}
        for field in their_seg.children:
            num = _position(field.name)
            if num is None:
                continue
            rep = seen[num] = seen.get(num, -1) + 1
            if seg.name == "MSH" and num <= 2:
                assert field.to_er7() == fields[num]
                compared += 1
                continue
            ours = fields[num].split(enc.repetition)[rep]
            if enc.escape in ours or field.datatype in _NUMERIC:
                continue
            children = [c for c in field.children if c.classname == "Component"]
            if not children:
                assert field.to_er7() == ours.rstrip(enc.component + enc.subcomponent), (
                    seg.name,
                    num,
                    rep,
                )
                compared += 1
                continue
            comps = ours.split(enc.component)
            defined = _defined_components(field)
            for comp in children:
                pos = _position(comp.name)
                if defined is not None and len(comps) > defined:
                    break  # components beyond the datatype: hl7apy re-packs them
                if pos is None or comp.datatype in _NUMERIC:
                    continue
                expected = comps[pos - 1].rstrip(enc.subcomponent)
                assert comp.to_er7() == expected, (seg.name, num, rep, pos)
                compared += 1
    return compared


def _position(name: str | None) -> int | None:
    """1-based position from an hl7apy element name (``PID_3``, ``CX_4``); None when
    hl7apy has no name for the element (beyond the version's definition)."""
    m = _POSITION.search(name or "")
    return int(m.group(1)) if m else None


def _defined_components(field: object) -> int | None:
    from hl7apy import load_reference

    try:
        ref = load_reference(field.datatype, "Datatypes_Structs", field.version)  # type: ignore[attr-defined]
    except Exception:
        return None
    return len(ref[1])


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_fixture_agrees_with_hl7apy(path: Path) -> None:
    for msg in _messages(path):
        compared = _agree_with_hl7apy(msg)
        if compared is None:
            pytest.skip("hl7apy cannot parse this message")
        assert compared > 0
