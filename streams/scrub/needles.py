"""Needle rules: how one of a message's identifiers is searched for in free text, or that it
is too short to search safely; and the search tables of one set of identifiers.

A needle is ``(kind, literal)``. The rules apply to every needle, so
:meth:`.Identifiers.of` obeys them too:

* **Hangul/Hanja names and places**, 3 syllables or more (``김민준``, ``남궁도윤``, ``마포구``):
  matched anywhere, so a following particle or honorific stays (``[NAME]님``). Full names also
  match with one space between surname and given name (``김 민준``).
* **2 syllables** (``김석``, given name ``민준``, compound surname ``남궁``): whole token only: not
  preceded by a letter or digit, and followed by a non-letter, a particle (:data:`PARTICLES`: 은
  는 이 가 을 를 의 에게 에게서 께 께서 한테 와 과 도 만 아 야 이랑 랑 이나) or a title
  (:data:`TITLES`: 님 씨 환자 환아 보호자 교수 선생 간호사 원장 과장 ...; one space before the
  title is allowed). When the two syllables are
  a common Korean word (``이상``, ``정상``, ``이전``, ... :data:`COMMON_WORDS`) only a title
  makes the match (``이상 환자`` is scrubbed, ``이상 소견`` is not).
* **1 syllable** (surnames ``김``, given names ``석``) is never matched alone.
* **Latin names**: whole words, case-insensitive, with up to three separators (space, hyphen,
  apostrophe, comma, period) anywhere between letters (``MINJUN`` matches ``Min-jun`` and
  ``Min Jun``); full names in both orders (``KIM MINJUN``, ``Minjun Kim``, ``Kim, Min-jun``),
  4 letters or more; a single part alone when it has 3 letters or more and is not a common
  English word (:data:`LATIN_COMMON_WORDS`: ``MIN``, ``JUN``, ``SON``, ``YOUNG``, ...).
* **Hangul names in Latin script**: a full name (``family given``) is also searched in its
  romanized spellings, both orders, and its given name alone (:mod:`.romanize`); a Latin name
  followed by an eponym's head word (``Wilson's disease``, ``Allen test``) is left as it is.
* **Numbers and ids** (ids, phones, RRNs, postal codes): 5 characters or more (phones: 7 digits
  or more), case-insensitive, any of space, hyphen, period, comma, parentheses (up to three) between
  characters, not inside a longer number or word and not after a decimal point; phones also
  without their area code and in ``+82`` form.
* **Other text** (streets, apartments, e-mail addresses): 4 characters or more; as written
  (case-insensitive for ASCII) or without its spaces.

The word lists are in :mod:`.words`; the search itself (boundaries, particles, titles) in
:mod:`.search`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from .kinds import Kind
from .romanize import NO_NAMES, NameSkeletons, name_skeletons
from .words import COMMON_WORDS, HANGUL_ONLY, LATIN_COMMON_WORDS, is_latin, is_syllabic

__all__ = [
    "LONG",
    "NON_ALNUM",
    "PRIORITY",
    "SEPARATOR",
    "SHORT",
    "SHORT_COMMON",
    "Tables",
    "ascii_lower",
    "spec",
    "tables",
]

# How a syllabic needle may match: anywhere (3 syllables or more), as a whole token or before a
# particle or title (2 syllables), before a title only (2 syllables that are a common word).
LONG, SHORT, SHORT_COMMON = 0, 1, 2
_MINIMUM_CHARS = {Kind.PHONE: 7, Kind.RRN: 13}  # other numbers and ids: 5
_NUMERIC_KINDS = frozenset({Kind.ID, Kind.RRN, Kind.PHONE})

NON_ALNUM = re.compile("[^0-9A-Za-z]+")
#: One separator the tolerant search drops between two ASCII letters or digits (a regex
#: character class); a needle is stored without them (``squeezed``).
SEPARATOR = "[ \t\u00a0\u3000.,'()\\-]"
_SEPARATORS = re.compile(f"{SEPARATOR}+")
_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(65, 91)})


def ascii_lower(text: str) -> str:
    """Lower-cased with the length kept (``str.lower`` is C-fast but may change the length of a
    few non-ASCII characters, such as U+0130)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else text.translate(_LOWER)


def _squeezed(literal: str) -> str:
    return _SEPARATORS.sub("", literal.lower())


class _Spec(NamedTuple):
    """How one needle is searched: ``alnum`` in the squeezed text, ``syllabic`` and ``plain``
    in the text (``plain`` case-insensitively); ``rule`` for syllabic needles, ``plus`` for
    ``+82`` phone forms."""

    how: str
    variants: tuple[str, ...]
    rule: int = LONG
    plus: bool = False


@lru_cache(maxsize=65536)
def spec(kind: Kind, literal: str) -> _Spec | None:
    """The search of one needle, or None when it is too short to be safe (module docstring)."""
    if kind == Kind.EMAIL:
        return _Spec("plain", (ascii_lower(literal),)) if len(literal) >= 6 else None
    if kind in _NUMERIC_KINDS or literal.isdigit():
        chars = NON_ALNUM.sub("", literal).lower()
        minimum = _MINIMUM_CHARS.get(kind, 5)
        if len(chars) < minimum:
            return None
        return _Spec("alnum", (chars,), plus=kind is Kind.PHONE)
    tokens = literal.split()
    if is_syllabic(literal):
        joined = "".join(tokens)
        if len(joined) < 2:
            return None
        variants = (joined,) if len(tokens) == 1 else (joined, " ".join(tokens))
        if len(joined) >= 3:
            return _Spec("syllabic", variants, LONG)
        return _Spec("syllabic", variants, SHORT_COMMON if joined in COMMON_WORDS else SHORT)
    if kind == Kind.NAME and is_latin(literal):
        squeezed = _squeezed(literal)
        if len(tokens) == 1 and (len(squeezed) < 3 or literal.upper() in LATIN_COMMON_WORDS):
            return None
        if len(squeezed) < 4 and len(tokens) > 1:
            return None
        return _Spec("alnum", (squeezed,))
    if sum(1 for ch in literal if ch.isalnum()) < 4:
        return None
    lowered = ascii_lower(literal)
    variants = (lowered,) if len(tokens) == 1 else (lowered, "".join(lowered.split()))
    return _Spec("plain", variants)


#: Which kind wins when two needles give the same text or the same span.
PRIORITY = {k: i for i, k in enumerate((Kind.RRN, Kind.PHONE, Kind.ID, Kind.EMAIL,
                                        Kind.ADDRESS, Kind.NAME))}  # fmt: skip


@dataclass(frozen=True)
class Tables:
    alnum: tuple[tuple[str, Kind, bool], ...]  # squeezed needle, kind, +82 form
    syllabic: tuple[tuple[str, Kind, int], ...]  # variant, kind, rule
    plain: tuple[tuple[str, Kind], ...]  # ASCII-lower-cased variant, kind
    romanized: NameSkeletons = NO_NAMES  # skeletons of Hangul names (.romanize)


@lru_cache(maxsize=4096)
def tables(needles: frozenset[tuple[Kind, str]]) -> Tables:
    """The search tables of one set of needles (cached: a patient's messages share them)."""
    alnum: dict[str, tuple[Kind, bool]] = {}
    syllabic: dict[str, tuple[Kind, int]] = {}
    plain: dict[str, Kind] = {}
    romanized: set[str] = set()
    for kind, literal in sorted(needles, key=lambda n: (PRIORITY.get(n[0], 9), n[1])):
        if kind is Kind.NAME and " " in literal and HANGUL_ONLY.fullmatch(literal):
            # "family given" (the collector's full-name needle): its romanized forms too.
            family, _, given = literal.partition(" ")
            romanized |= name_skeletons(family, given.replace(" ", ""))
        found = spec(kind, literal)
        if found is None:
            continue
        for v in found.variants:
            if found.how == "alnum":
                alnum.setdefault(v, (kind, found.plus))
            elif found.how == "syllabic":
                syllabic.setdefault(v, (kind, found.rule))
            else:
                plain.setdefault(v, kind)
    # Shortest first, so that a search stops at the first needle longer than the text (the
    # order within a table never changes the result: two needles of one table cannot yield
    # the same span).
    return Tables(
        tuple(sorted(((v, k, p) for v, (k, p) in alnum.items()), key=lambda e: len(e[0]))),
        tuple(sorted(((v, k, r) for v, (k, r) in syllabic.items()), key=lambda e: len(e[0]))),
        tuple(sorted(plain.items(), key=lambda e: len(e[0]))),
        NameSkeletons.of(frozenset(romanized)),
    )
