"""Parsing, path access and serialization of one HL7 v2 message (ER7 encoding).

The parser only splits the text into segments and checks the structure; fields
are split the first time a segment is read, components on each access. Most
consumers read a dozen fields of a message, so splitting everything up front
(as python-hl7 does) would be wasted work. A segment with no repetition separator,
subcomponent separator or escape character in it (most OBX, OBR, ORC, PV1) is read
on a fast path that only selects the field and component (``_plain``).

Text normalization (the only differences between input and ``to_er7()``):

* ``\\r\\n`` and ``\\n`` become ``\\r``; every segment, the last included, ends with ``\\r``;
* blank or whitespace-only lines are dropped wherever they are (trailing blank
  lines from files, blank lines between segments), as is whitespace before ``MSH``;
* a leading byte-order mark is dropped.

Trailing blanks *inside* a segment are data and are kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple, overload

from .charset import DEFAULT_CODEC, codec_for, decode_bytes, lookup_codec
from .delimiters import Encoding, read_encoding
from .errors import Hl7ParseError
from .escape import escape, unescape

__all__ = [
    "HL7_NULL",
    "Field",
    "Message",
    "Path",
    "Segment",
    "parse",
    "parse_path",
    "segment_offset",
    "split_field",
]

#: The HL7 explicit null ("delete this value"), as :meth:`Message.get` returns it.
HL7_NULL = '""'

#: A field in :meth:`Message.to_lists`: a string, or repetitions of components, each a
#: string or a list of subcomponents.
Field = str | list[list[str | list[str]]]


class Path(NamedTuple):
    """A parsed location. Numbers are 1-based; 0 means "not given"."""

    segment: str | None
    occurrence: int
    field: int
    repetition: int
    component: int
    subcomponent: int


_PATH = re.compile(
    r"(?:(?P<seg>[A-Za-z][A-Za-z0-9]{2})(?:\[(?P<occ>[1-9]\d*)\])?-)?"
    r"(?P<field>[1-9]\d*)(?:\[(?P<rep>[1-9]\d*)\])?"
    r"(?:\.(?P<comp>[1-9]\d*)(?:\.(?P<sub>[1-9]\d*))?)?"
)


@lru_cache(maxsize=4096)
def parse_path(path: str) -> Path:
    """Parse ``SEG[occ]-field[rep].component.subcomponent``; only ``field`` is required.

    Positions are 1-based. Raises ValueError (not :class:`Hl7ParseError`: a bad
    path is a programming error, not bad input).
    """
    m = _PATH.fullmatch(path.strip())
    if m is None:
        raise ValueError(f"not an HL7 path: {path!r}")
    seg = m["seg"]
    nums = [int(m[k]) if m[k] is not None else 0 for k in ("occ", "field", "rep", "comp", "sub")]
    occ, field, rep, comp, sub = nums
    return Path(seg.upper() if seg else None, occ or 1, field, rep, comp, sub)


# path -> (segment id or None, occurrence index (0-based), field, repetition, component,
# subcomponent): parse_path unpacked, looked up with one dict access on the hot path.
_Steps = tuple[str | None, int, int, int, int, int]
_STEPS: dict[str, _Steps] = {}


def _steps(path: str) -> _Steps:
    p = parse_path(path)
    steps = (p.segment, p.occurrence - 1, p.field, p.repetition, p.component, p.subcomponent)
    if len(_STEPS) >= 4096:
        _STEPS.clear()  # programs use a few dozen paths; this only bounds a pathological caller
    _STEPS[path] = steps
    return steps


def _split_segments(text: str) -> list[str]:
    if text[:1] == "\ufeff":
        text = text[1:]
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    segs = text.split("\r")
    if segs[-1] == "":
        segs.pop()  # the terminator of the last segment
    if "" in segs or any(map(str.isspace, segs)):
        segs = [s for s in segs if s and not s.isspace()]
    if segs and segs[0][:1].isspace():
        segs[0] = segs[0].lstrip()
    return segs


_LINE = re.compile(rb"[^\r\n]+")


def segment_offset(data: bytes, segment_index: int) -> int | None:
    """Byte offset in ``data`` at which segment ``segment_index`` starts, counting
    segments as :func:`parse` and ``parse_batch`` do (blank lines skipped). None when
    there is no such segment or the encoding is not ASCII-compatible (UTF-16/32).
    For error messages: :class:`Hl7ParseError` gives the segment index."""
    if segment_index < 0 or b"\x00" in data[:4]:
        return None
    i = 0
    for m in _LINE.finditer(data):
        line = m.group()
        if line.isspace():
            continue
        if i == segment_index:
            return m.start() + (len(line) - len(line.lstrip())) if i == 0 else m.start()
        i += 1
    return None


def _valid_segment_id(name: str) -> bool:
    return (
        len(name) == 3
        and name.isascii()
        and name.isalnum()
        and name[0].isalpha()
        and name == name.upper()
    )


class Segment:
    """A view of one segment of a :class:`Message` (changes go through to it)."""

    __slots__ = ("_msg", "index")

    def __init__(self, message: Message, index: int) -> None:
        self._msg = message
        self.index = index

    @property
    def name(self) -> str:
        return self._msg._segs[self.index][:3]

    @property
    def fields(self) -> list[str]:
        """Raw fields, numbered as in HL7: ``fields[0]`` is the segment id,
        ``fields[n]`` field n (for MSH, ``fields[1]`` is the field separator)."""
        return list(self._msg._fields_of(self.index))

    @overload
    def get(self, path: str) -> str | None: ...
    @overload
    def get(self, path: str, default: str) -> str: ...
    @overload
    def get(self, path: str, default: str | None) -> str | None: ...

    def get(self, path: str, default: str | None = None) -> str | None:
        """Value at a field path relative to this segment (``"5"``, ``"3[2].1"``);
        a full path (``"OBX-5"``) is accepted when its segment id matches."""
        seg, _, f, r, c, s = _STEPS.get(path) or _steps(path)
        if seg is not None and seg != self.name:
            raise ValueError(f"path {path!r} does not address a {self.name} segment")
        msg = self._msg
        i = self.index
        if msg._plain[i]:
            # The fast path of _read, inlined (keep the two in step: a property test
            # compares both with a plain reference reader, test_hl7v2_differential.py).
            fields: list[str] = msg._fields[i]  # type: ignore[assignment]
            if f >= len(fields):
                return default
            v = fields[f]
            if not v or r > 1:
                return default
            if not c:
                return v
            if s > 1:
                return default
            cs = msg._delims[1]
            j = v.find(cs)
            if j < 0:
                return v if c == 1 else default
            if c == 1:
                return v[:j] or default
            comps = v.split(cs)
            return (comps[c - 1] or default) if c <= len(comps) else default
        return _read(msg, i, f, r, c, s, default)

    def __str__(self) -> str:
        return self._msg._segs[self.index]

    def __repr__(self) -> str:
        return f"<Segment {self.name} #{self.index}>"


_new_view = object.__new__


class Message:
    """One parsed HL7 v2 message. Build it with :func:`parse`.

    Value semantics of :meth:`get`:

    * absent (no such segment, field, repetition, component) -> ``default``;
    * empty (``||``) -> ``default`` as well: in HL7 an empty field means "not
      sent", which a receiver must treat like an absent one;
    * the HL7 null ``""`` -> the two-character string ``'""'`` (:data:`HL7_NULL`),
      meaning "delete the value", so it is never confused with absence;
    * a leaf (subcomponent, or a component/field/repetition that contains no
      deeper delimiter) -> escape sequences resolved;
    * a path that stops above the leaves of a composite value (``PID-5`` when
      the name has components) -> that repetition's raw ER7 text, escape
      sequences *kept*: decoding them would make an escaped ``\\S\\`` look like a
      component separator. Address components to get decoded text.
    """

    __slots__ = ("_codec", "_delims", "_fields", "_index", "_plain", "_segs", "encoding")

    def __init__(
        self,
        segments: list[str],
        encoding: Encoding,
        index: dict[str, list[int]],
        codec: str | None,
    ) -> None:
        self._segs = segments
        self._fields: list[list[str] | None] = [None] * len(segments)
        # Per segment: its fields are split and it holds no repetition, subcomponent or
        # escape character, so a read needs no check but the component separator.
        # Always False for the MSH, whose MSH-1/MSH-2 are not data.
        self._plain = [False] * len(segments)
        self._index = index
        self._codec = codec
        self.encoding = encoding
        self._delims = _delims(encoding)

    # -- structure ---------------------------------------------------------

    def _fields_of(self, i: int) -> list[str]:
        fields = self._fields[i]
        if fields is None:
            fs = self.encoding.field
            fields = self._segs[i].split(fs)
            if i == 0:
                # MSH-1 is the separator itself, so HL7 numbering is off by one
                # against the split; inserting it makes fields[n] == MSH-n.
                fields.insert(1, fs)
            else:
                seg = self._segs[i]
                rs, _, ss, esc = self._delims
                self._plain[i] = rs not in seg and ss not in seg and esc not in seg
            self._fields[i] = fields
        return fields

    def segments(self, name: str | None = None) -> Iterator[Segment]:
        """Segments in order, or only those with segment id ``name``."""
        found = range(len(self._segs)) if name is None else self._index.get(name.upper(), ())
        views = []
        for i in found:
            # Segment(self, i) without the __init__ call (a mapper makes many views).
            view = _new_view(Segment)
            view._msg = self
            view.index = i
            views.append(view)
        return iter(views)

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The ``occurrence``-th (1-based) segment with id ``name``, or None."""
        found = self._index.get(name.upper(), ())
        return Segment(self, found[occurrence - 1]) if 0 < occurrence <= len(found) else None

    @property
    def segment_names(self) -> list[str]:
        return [s[:3] for s in self._segs]

    def __len__(self) -> int:
        return len(self._segs)

    # -- values ------------------------------------------------------------

    @overload
    def get(self, path: str) -> str | None: ...
    @overload
    def get(self, path: str, default: str) -> str: ...
    @overload
    def get(self, path: str, default: str | None) -> str | None: ...

    def get(self, path: str, default: str | None = None) -> str | None:
        """Decoded value at ``path`` (see the class docstring for the rules).

        Path: ``SEG[occurrence]-field[repetition].component.subcomponent``, e.g.
        ``MSH-9.2``, ``PID-3[2].1``, ``OBX[2]-5``, ``PID-5.1.1``. Without
        ``[repetition]`` the first repetition is read, without ``[occurrence]``
        the first segment. ``MSH-1`` is the field separator, ``MSH-2`` the
        encoding characters (never split or unescaped).
        """
        seg, occ, f, r, c, s = _STEPS.get(path) or _steps(path)
        found = self._index.get(seg)  # type: ignore[arg-type]
        if found is None:
            if seg is None:
                raise ValueError(f"path {path!r} names no segment")
            return default
        if occ:
            if occ >= len(found):
                return default
            return _read(self, found[occ], f, r, c, s, default)
        return _read(self, found[0], f, r, c, s, default)

    def get_all(self, path: str) -> list[str]:
        """Every repetition of a field, each read like :meth:`get` would, with
        ``""`` for empty repetitions so positions are kept; ``[]`` when absent."""
        p = parse_path(path)
        if p.segment is None or p.repetition:
            raise ValueError(f"path {path!r} must name a segment and no repetition")
        found = self._index.get(p.segment)
        if found is None or p.occurrence > len(found):
            return []
        i = found[p.occurrence - 1]
        fields = self._fields_of(i)
        if p.field >= len(fields) or not fields[p.field]:
            return []
        rs = self.encoding.repetition
        count = fields[p.field].count(rs) + 1 if rs and not (i == 0 and p.field <= 2) else 1
        out = []
        for r in range(1, count + 1):
            v = self._value(i, p.field, r, p.component, p.subcomponent, "")
            out.append("" if v is None else v)
        return out

    def _value(self, i: int, f: int, r: int, c: int, s: int, default: str | None) -> str | None:
        return _read(self, i, f, r, c, s, default)

    def set(self, path: str, value: str, *, raw: bool = False) -> None:
        """Set the value at ``path``, escaping it unless ``raw``.

        Missing fields, repetitions and components are created empty. The segment
        must exist (KeyError otherwise); MSH-1/MSH-2 cannot be set (ValueError).
        Without a component in the path the whole repetition is replaced.
        """
        p = parse_path(path)
        if p.segment is None:
            raise ValueError(f"path {path!r} names no segment")
        found = self._index.get(p.segment)
        if found is None or p.occurrence > len(found):
            raise KeyError(f"{p.segment}[{p.occurrence}] not in message")
        i = found[p.occurrence - 1]
        if i == 0 and p.field <= 2:
            raise ValueError("MSH-1 and MSH-2 are the delimiters and cannot be set")
        enc = self.encoding
        if not raw:
            value = escape(value, enc)
        fields = list(self._fields_of(i))
        fields.extend([""] * (p.field + 1 - len(fields)))
        reps = _split_to(fields[p.field], enc.repetition, p.repetition or 1)
        r = (p.repetition or 1) - 1
        if p.component:
            comps = _split_to(reps[r], enc.component, p.component)
            if p.subcomponent:
                subs = _split_to(comps[p.component - 1], enc.subcomponent, p.subcomponent)
                subs[p.subcomponent - 1] = value
                value = enc.subcomponent.join(subs)
            comps[p.component - 1] = value
            value = enc.component.join(comps)
        reps[r] = value
        fields[p.field] = enc.repetition.join(reps)
        fs = enc.field
        self._segs[i] = fs.join(fields[:1] + fields[2:]) if i == 0 else fs.join(fields)
        # Split again on the next read, which also decides the fast path anew.
        self._fields[i] = None
        self._plain[i] = False

    # -- header shortcuts ----------------------------------------------------

    @property
    def control_id(self) -> str | None:
        """MSH-10."""
        return self.get("MSH-10")

    @property
    def message_type(self) -> str | None:
        """``"ADT^A01"`` (MSH-9.1 and MSH-9.2, always joined with ``^`` whatever the
        message's component separator, so it can serve as a key); ``"ACK"`` when
        there is no trigger event; None when MSH-9 is empty."""
        code = self.get("MSH-9.1")
        if code is None:
            return None
        trigger = self.get("MSH-9.2")
        return code if trigger is None else f"{code}^{trigger}"

    @property
    def version(self) -> str | None:
        """MSH-12.1, e.g. ``"2.5.1"``."""
        return self.get("MSH-12.1")

    @property
    def processing_id(self) -> str | None:
        """MSH-11.1 (P, T, D)."""
        return self.get("MSH-11.1")

    @property
    def hl7_charset(self) -> str | None:
        """MSH-18 as sent (first repetition), e.g. ``"KS X 1001"``."""
        return self.get("MSH-18.1")

    @property
    def charset(self) -> str:
        """Python codec of the message: the one its bytes were decoded with, or for
        text input the one MSH-18 names (default UTF-8, also for unknown names)."""
        if self._codec is None:
            self._codec = lookup_codec(self.hl7_charset) or DEFAULT_CODEC
        return self._codec

    # -- serialization -------------------------------------------------------

    def to_lists(self) -> list[list[Field]]:
        """The message as plain lists, e.g. for JSON: a list of segments, each a list
        of fields with ``[0]`` the segment id (for MSH, ``[1]`` and ``[2]`` are MSH-1
        and MSH-2 as sent). A field without delimiters is its decoded string (``""``
        when empty); any other field is a list of repetitions, each a list of
        components, each a decoded string or, when it has subcomponents, a list of
        decoded strings. The depth of a list says its level, so nothing is ambiguous."""
        enc = self.encoding
        rs, cs, ss, esc = _delims(enc)
        codec = self.charset
        out: list[list[Field]] = []
        for i in range(len(self._segs)):
            fields = self._fields_of(i)
            seg: list[Field] = []
            for n, v in enumerate(fields):
                if n == 0 or (i == 0 and n <= 2):
                    seg.append(v)
                elif rs not in v and cs not in v and ss not in v:
                    seg.append(unescape(v, enc, codec) if esc in v else v)
                else:
                    reps = split_field(v, enc, codec)
                    seg.append([[c[0] if len(c) == 1 else c for c in r] for r in reps])
            out.append(seg)
        return out

    def to_er7(self) -> str:
        """The message as ER7 text, each segment terminated by ``\\r``."""
        return "\r".join(self._segs) + "\r"

    def to_bytes(self) -> bytes:
        """:meth:`to_er7` encoded in :attr:`charset`."""
        return self.to_er7().encode(self.charset)

    def __str__(self) -> str:
        return self.to_er7()

    def __repr__(self) -> str:
        # Type and segment count only: the control id can identify an encounter.
        return f"<Message {self.message_type} segments={len(self._segs)}>"


def _read(msg: Message, i: int, f: int, r: int, c: int, s: int, default: str | None) -> str | None:
    """The value of field ``f``, repetition ``r``, component ``c``, subcomponent ``s``
    (1-based, 0 = not given) of segment ``i`` (the hot path of every read)."""
    fields = msg._fields[i]
    if fields is None:
        fields = msg._fields_of(i)
    if msg._plain[i]:
        # Fast path: the segment holds no repetition separator, subcomponent separator
        # or escape character (nor is it the MSH), so only components need splitting.
        # Inlined in Segment.get.
        if f >= len(fields):
            return default
        v = fields[f]
        if not v or r > 1:
            return default
        if not c:
            return v
        if s > 1:
            return default
        cs = msg._delims[1]
        j = v.find(cs)
        if j < 0:
            return v if c == 1 else default
        if c == 1:
            return v[:j] or default
        comps = v.split(cs)
        return (comps[c - 1] or default) if c <= len(comps) else default
    if f >= len(fields):
        return default
    v = fields[f]
    if f <= 2 and i == 0:
        # MSH-1/MSH-2 are delimiters, not data: no splitting, no unescaping.
        return default if r > 1 or c > 1 or s > 1 else v
    if not v:
        return default
    # Undeclared delimiters are "\r" here, which never occurs inside a segment.
    rs, cs, ss, esc = msg._delims
    if rs in v:
        if r > 1:
            reps = v.split(rs)
            if r > len(reps):
                return default
            v = reps[r - 1]
        else:
            v = v[: v.index(rs)]
    elif r > 1:
        return default
    if c:
        if cs in v:
            if c > 1:
                comps = v.split(cs)
                if c > len(comps):
                    return default
                v = comps[c - 1]
            else:
                v = v[: v.index(cs)]
        elif c > 1:
            return default
        if ss in v:
            if not s:
                return v
            subs = v.split(ss)
            if s > len(subs):
                return default
            v = subs[s - 1]
        elif s > 1:
            return default
    elif cs in v or ss in v:
        return v
    if not v:
        return default
    if esc in v:
        return unescape(v, msg.encoding, msg.charset)
    return v


def split_field(value: str, enc: Encoding, codec: str | None = None) -> list[list[list[str]]]:
    """A raw field value (not MSH-1 or MSH-2) split into repetitions, each a list of
    components, each a list of subcomponents, every one decoded (escape sequences resolved,
    ``\\X..\\`` with ``codec``); ``[]`` for an empty value. Positions are kept: an empty
    component is ``[""]``. For reading every part of a field at once; :meth:`Message.get`
    reads one part."""
    if not value:
        return []
    rs, cs, ss, esc = _delims(enc)
    if ss not in value and esc not in value:
        return [[[c] for c in rep.split(cs)] for rep in value.split(rs)]
    return [
        [[unescape(s, enc, codec) if esc in s else s for s in c.split(ss)] for c in rep.split(cs)]
        for rep in value.split(rs)
    ]


@lru_cache(maxsize=64)
def _delims(enc: Encoding) -> tuple[str, str, str, str]:
    """(repetition, component, subcomponent, escape) with ``"\\r"`` for an undeclared one:
    segments never contain it, so ``d in v`` needs no emptiness check."""
    rs, cs, ss, esc = enc.repetition, enc.component, enc.subcomponent, enc.escape
    return (rs or "\r", cs or "\r", ss or "\r", esc or "\r")


def _split_to(value: str, sep: str, n: int) -> list[str]:
    parts = value.split(sep) if sep and value else [value]
    if n > len(parts):
        if not sep:
            raise ValueError("the message declares no delimiter for this level")
        parts.extend([""] * (n - len(parts)))
    return parts


def _check_segment_ids(segs: list[str], fs: str, base: int) -> None:
    """Raise :class:`Hl7ParseError` at the first segment whose id is invalid (or not
    followed by the field separator)."""
    for i, s in enumerate(segs):
        if not _valid_segment_id(s[:3]):
            # The id is not echoed: an invalid one is usually the rest of a text
            # field cut by a stray line break, i.e. patient data.
            raise Hl7ParseError("invalid segment id", segment_index=base + i)
    for i, s in enumerate(segs):
        if s[3:4] not in (fs, ""):
            raise Hl7ParseError("invalid segment id", segment_index=base + i)


# Per field separator, segment heads (id + separator, or a bare id) already found valid.
_KNOWN_HEADS: dict[str, set[str]] = {}
# The first ten characters of an MSH -> its delimiters (they decide read_encoding).
_ENCODINGS: dict[str, Encoding] = {}


def _build(segs: list[str], codec: str | None, base: int = 0) -> Message:
    """Check the structure of already-split segments; ``base`` offsets the
    segment indexes reported in errors (position within a batch file)."""
    if not segs:
        raise Hl7ParseError("no segments", segment_index=base)
    first = segs[0]
    if first[:3] != "MSH":
        raise Hl7ParseError("first segment is not MSH", segment_index=base)
    # read_encoding reads at most MSH[:10] (a longer MSH-2 is an error, never cached).
    enc = _ENCODINGS.get(first[:10])
    if enc is None:
        enc = read_encoding(first, segment_index=base)
        if len(_ENCODINGS) < 256:
            _ENCODINGS[first[:10]] = enc
    fs = enc.field
    # Group by head ("OBX|"): one pass, and the checks run on the few distinct heads.
    heads: dict[str, list[int]] = {}
    for i, s in enumerate(segs):
        head = s[:4]
        found = heads.get(head)
        if found is None:
            heads[head] = [i]
        else:
            found.append(i)
    known = _KNOWN_HEADS.get(fs)
    if known is None or not known.issuperset(heads):
        _check_segment_ids(segs, fs, base)
        if known is None:
            known = set()
            if len(_KNOWN_HEADS) < 64:
                _KNOWN_HEADS[fs] = known
        if len(known) < 4096:
            known.update(heads)
    index = {head[:3]: found for head, found in heads.items()}
    if len(index) < len(heads):
        # One id both bare and with fields ("ZZZ" and "ZZZ|..."): merge, in order.
        index = {}
        for head, found in heads.items():
            index.setdefault(head[:3], []).extend(found)
        for found in index.values():
            found.sort()
    if len(index["MSH"]) > 1:
        raise Hl7ParseError(
            "second MSH segment: several messages, use parse_batch",
            segment_index=base + index["MSH"][1],
        )
    return Message(segs, enc, index, codec)


def parse(data: bytes | bytearray | memoryview | str, *, charset: str | None = None) -> Message:
    """Parse one message.

    Bytes are decoded with :func:`decode_bytes` (``charset`` overrides MSH-18);
    for text, ``charset`` only sets :attr:`Message.charset` (used for ``\\X..\\``
    escapes and :meth:`Message.to_bytes`). Raises :class:`Hl7ParseError`.
    """
    if isinstance(data, str):
        text = data
        codec = codec_for(charset) if charset is not None else None
    elif isinstance(data, bytes | bytearray | memoryview):
        text, codec = decode_bytes(bytes(data), charset=charset)
    else:
        raise TypeError(f"parse() takes bytes or str, not {type(data).__name__}")
    return _build(_split_segments(text), codec)
