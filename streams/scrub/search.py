"""The literal search: where a message's needles occur in a text, and their replacement.

How (speed): this step compiles nothing per message. CPython's ``re`` compiler is written in
Python: an alternation of one message's ~25 needles took 4-40 ms to compile, 250-2000 times the
cost of parsing the message. Instead the text is lower-cased once, the separators between ASCII
letters and digits are squeezed out by one static regex (positions mapped back by bisection),
and every needle is found with ``str.find`` (C) in that string or in the text itself; only hits
run Python checks (boundaries, particles, titles: :mod:`.needles` has the rules).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

from .kinds import PLACEHOLDERS, Kind
from .needles import LONG, PRIORITY, SEPARATOR, SHORT_COMMON, Tables, ascii_lower
from .romanize import romanized_spans
from .words import PARTICLES, TITLES, eponym_at

__all__ = ["Span", "identifier_spans", "replace_spans"]

# The separators between ASCII letters and digits (dropped): a separator first and the letter
# or digit before it checked by a lookbehind after it, so that re skips in C to the separators.
# Split on them (the group keeps them in the list: pieces kept at even, cuts at odd indexes),
# so that the squeezed text and the lengths that map its positions back come from one scan.
_SQUEEZE_OUT = re.compile(f"({SEPARATOR}(?<=[0-9a-z]{SEPARATOR}){SEPARATOR}{{0,2}}(?=[0-9a-z]))")
_LATIN = re.compile("[A-Za-z]")


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _edges_ok(text: str, start: int, end: int) -> bool:
    """A number or Latin needle must not continue a longer number or word: the character before
    (after) it is not of its first (last) character's class, and a number is not the decimal part
    (or the integer part) of a decimal."""
    first, last = text[start], text[end - 1]
    if start > 0:
        prev = text[start - 1]
        if _is_digit(first):
            if _is_digit(prev) or (prev in ".," and start > 1 and _is_digit(text[start - 2])):
                return False
        elif _is_ascii_alnum(first) and _is_ascii_alnum(prev):
            return False
    if end < len(text):
        nxt = text[end]
        if _is_digit(last):
            if _is_digit(nxt) or (nxt in ".," and end + 1 < len(text) and _is_digit(text[end + 1])):
                return False
        elif _is_ascii_alnum(last) and _is_ascii_alnum(nxt):
            return False
    return True


def _short_ok(text: str, start: int, end: int, rule: int) -> bool:
    """A 2-syllable needle: a whole token, or followed by a particle or a title."""
    if start > 0 and text[start - 1].isalnum():
        return False
    if text.startswith(TITLES, end) or (
        text[end : end + 1].isspace() and text.startswith(TITLES, end + 1)
    ):
        return True
    if rule == SHORT_COMMON:
        return False
    return end == len(text) or not text[end].isalnum() or text.startswith(PARTICLES, end)


Span = tuple[int, int, Kind]


def identifier_spans(text: str, tables: Tables) -> list[Span]:
    """Every occurrence of a needle of ``tables`` in ``text`` (they may overlap)."""
    spans: list[Span] = []
    lowered = ascii_lower(text) if tables.alnum or tables.plain else text
    if tables.alnum:
        # The text without separators inside runs of letters and digits (one C split and join).
        # A position p in it falls in kept piece j (ends[j - 1] <= p < ends[j]) and is
        # p - ends[j - 1] + starts[j] in the text. The lengths are summed only when a needle is
        # found (most texts have none), in C (accumulate over map(len, ...)): an English note
        # has tens of cuts, and a Python loop over them cost more than the search itself.
        pieces = _SQUEEZE_OUT.split(lowered)
        squeezed = "".join(pieces[::2]) if len(pieces) > 1 else lowered
        ends: list[int] = []  # end of each kept piece in the squeezed text
        starts: list[int] = []  # start of each kept piece in the text

        def original(p: int) -> int:
            if len(pieces) == 1:
                return p
            if not ends:
                ends.extend(accumulate(map(len, pieces[::2])))
                starts.append(0)
                starts.extend(list(accumulate(map(len, pieces)))[1::2])
            j = bisect_right(ends, p)
            return p - ends[j - 1] + starts[j] if j else p

        for needle, kind, plus in tables.alnum:
            if len(needle) > len(squeezed):
                break
            i = squeezed.find(needle)
            while i >= 0:
                start, end = original(i), original(i + len(needle) - 1) + 1
                if _edges_ok(text, start, end) and not (
                    kind is Kind.NAME and text[start].isalpha() and eponym_at(text, end)
                ):
                    if start > 0 and (
                        (plus and text[start - 1] == "+")
                        or (text[start - 1] == "(" and ")" in text[start:end])
                    ):
                        start -= 1  # +82 10-..., (02)123-4567
                    spans.append((start, end, kind))
                i = squeezed.find(needle, i + 1)
    if tables.romanized and _LATIN.search(text):
        for start, end in romanized_spans(text, tables.romanized):
            if not eponym_at(text, end):
                spans.append((start, end, Kind.NAME))
    for variant, kind, rule in tables.syllabic:
        if len(variant) > len(text):
            break
        i = text.find(variant)
        while i >= 0:
            end = i + len(variant)
            if rule == LONG or _short_ok(text, i, end, rule):
                spans.append((i, end, kind))
            i = text.find(variant, i + 1)
    for variant, kind in tables.plain:
        if len(variant) > len(lowered):
            break
        i = lowered.find(variant)
        while i >= 0:
            end = i + len(variant)
            if _edges_ok(text, i, end):
                spans.append((i, end, kind))
            i = lowered.find(variant, i + 1)
    return spans


def replace_spans(text: str, spans: list[Span], counts: dict[Kind, int]) -> str:
    """Replace the leftmost-longest non-overlapping spans, adding to ``counts``."""
    spans.sort(key=lambda s: (s[0], -s[1], PRIORITY.get(s[2], 9)))
    out: list[str] = []
    pos = 0
    for start, end, kind in spans:
        if start < pos:
            continue
        out.append(text[pos:start])
        out.append(PLACEHOLDERS[kind])
        counts[kind] = counts.get(kind, 0) + 1
        pos = end
    out.append(text[pos:])
    return "".join(out)
