"""Hangul names in Latin script: a name the message holds only in Hangul is found in its
romanized forms too (``김민준``: ``Kim Min-jun``, ``MINJUN KIM``, ``Gim, Minjoon``).

Clinicians and registration clerks write Korean names in many spellings: Revised Romanization
(RR, ``Jeong``, ``Hyeon``), McCune-Reischauer-like and customary spellings (``Chung``,
``Hyun``, ``Joon``, ``Hee``), surnames in their own customary forms (``Lee``/``Yi``/``Rhee``,
``Park``/``Pak``, ``Choi``/``Choe``). Rather than listing every spelling as a needle, both sides
are reduced to a **skeleton** that the spellings of one name share (:func:`skeleton`): letters
only, lower case, aspirated and plain consonants merged (k/g, t/d, p/b, ch/j), ``sh`` -> ``s``,
vowel spellings merged (``eo``/``u``/``oo``/``ou`` -> ``u``, ``ee``/``ui`` -> ``i``,
``oi``/``oe``), ``l`` -> ``r``, a silent ``h`` after a vowel dropped (``Oh``, ``Ahn``, ``Suh``),
doubled letters single. The skeleton of a name is that of its RR form
(:func:`revised_romanization`, syllable by syllable, as names are written) or, for surnames, of
each spelling of :data:`SURNAME_SPELLINGS` (where the customary form is not a spelling of the
RR form: ``Lee``, ``Park``, ``Rhee``, ``Roh``).

The search (:func:`romanized_spans`) skeletons (cached) each Latin word that starts with a
capital, and from those that start a name's skeleton the words after it one at a time: it
looks up runs of up to four words joined by at most three separators
(space, hyphen, comma, period, apostrophe): a full name in either order, ``Family, Given``,
given names joined, hyphenated or spaced, any case after a capital first letter (``Kim``,
``KIM``; a name written all in lower case is not looked for). The cost does not grow with the
number of spellings.

Evaluated against the ``hangul-romanize`` package (0.1.0): it gives the RR form of a text only
(no customary spellings, no surname forms, sound changes across syllables that names do not
follow), so the variants would still need this table; the module is ~100 lines and has no
dependency.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "NO_NAMES",
    "SURNAME_SPELLINGS",
    "NameSkeletons",
    "name_skeletons",
    "revised_romanization",
    "romanized_spans",
    "skeleton",
]

_INITIALS = ("g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "", "j", "jj", "ch", "k",
             "t", "p", "h")  # fmt: skip
_MEDIALS = ("a", "ae", "ya", "yae", "eo", "e", "yeo", "ye", "o", "wa", "wae", "oe", "yo", "u",
            "wo", "we", "wi", "yu", "eu", "ui", "i")  # fmt: skip
_FINALS = ("", "k", "k", "k", "n", "n", "n", "t", "l", "k", "m", "l", "l", "l", "p", "l", "m",
           "p", "p", "t", "t", "ng", "t", "t", "k", "t", "p", "t")  # fmt: skip

#: Customary spellings of surnames whose skeleton differs from their RR form's.
SURNAME_SPELLINGS: dict[str, tuple[str, ...]] = {
    "이": ("Lee", "Yi", "Rhee", "I", "Ri"),
    "박": ("Park", "Pak", "Bak"),
    "최": ("Choi", "Choe"),
    "김": ("Kim", "Gim"),
    "정": ("Jung", "Jeong", "Chung"),
    "임": ("Lim", "Im", "Rim"),
    "류": ("Ryu", "Yoo", "Yu", "Rhyu"),
    "유": ("Yoo", "Yu", "Ryu"),
    "노": ("Noh", "Roh", "No"),
    "나": ("Na", "Ra"),
    "라": ("Ra", "La"),
    "여": ("Yeo", "Yuh", "Yoh"),
    "염": ("Yeom", "Yum"),
    "엄": ("Eom", "Um", "Uhm"),
    "우": ("Woo", "U"),
    "위": ("Wi", "Wee"),
    "백": ("Baek", "Paik", "Paek", "Back"),
    "변": ("Byeon", "Byun", "Pyun"),
    "신": ("Shin", "Sin"),
    "심": ("Sim", "Shim"),
    "허": ("Heo", "Huh", "Hur"),
    "곽": ("Gwak", "Kwak"),
    "육": ("Yuk", "Yook"),
    "선우": ("Seonu", "Sunwoo"),
    "남궁": ("Namgung", "Namkung"),
}


def revised_romanization(hangul: str) -> str:
    """RR of Hangul syllables, one syllable at a time (no sound changes across syllables, as
    names are romanized); other characters are dropped."""
    out = []
    for ch in hangul:
        code = ord(ch) - 0xAC00
        if 0 <= code < 11172:
            out.append(_INITIALS[code // 588] + _MEDIALS[code % 588 // 28] + _FINALS[code % 28])
    return "".join(out)


# Order matters: longer spellings first, and vowels before the consonant merges that would hide
# them. Each pair is applied with str.replace over the whole word.
_RULES = (
    ("sh", "s"), ("rh", "r"), ("tch", "j"), ("ch", "j"), ("k", "g"), ("t", "d"), ("p", "b"),
    ("l", "r"), ("eui", "i"), ("ui", "i"), ("ee", "i"), ("eo", "u"), ("oo", "u"), ("ou", "u"),
    ("wu", "u"), ("oi", "oe"),
)  # fmt: skip
_SILENT_H = re.compile("(?<=[aeiou])h(?![aeiou])")
_DOUBLE = re.compile(r"(.)\1+")


@lru_cache(maxsize=65536)
def skeleton(word: str) -> str:
    """The spelling-blind form of a romanized name or word (module docstring)."""
    s = word.lower()
    for a, b in _RULES:
        if a in s:
            s = s.replace(a, b)
    if "h" in s:
        s = _SILENT_H.sub("", s)
    return _DOUBLE.sub(r"\1", s)


def surname_skeletons(family: str) -> frozenset[str]:
    spellings = SURNAME_SPELLINGS.get(family, ())
    return frozenset({skeleton(revised_romanization(family)), *map(skeleton, spellings)})


_CAPITALIZED = re.compile("[A-Z][A-Za-z]*")
# A word (a run of Latin letters) that starts with a capital; the next word of a name: one to
# three separators, then its letters.
_WORD_STARTING = re.compile("[A-Z](?<![A-Za-z].)[A-Za-z]*")
_JOIN_WORD = re.compile(r"[\s\-,.']{1,3}([A-Za-z]+)")
_MAX_WORDS = 4


def name_skeletons(family: str, given: str) -> frozenset[str]:
    """What a Hangul name is searched as: family and given name in both orders, and the given
    name alone when it has two syllables or more and a skeleton of four letters or more (a
    one-syllable given name or a surname alone is too common a word in Latin script)."""
    g = skeleton(revised_romanization(given))
    if not g:
        return frozenset()
    out = set()
    for f in surname_skeletons(family):
        out.add(f + g)
        out.add(g + f)
    if len(given) >= 2 and len(g) >= 4:
        out.add(g)
    return frozenset(out)


@dataclass(frozen=True)
class NameSkeletons:
    """The skeletons of a message's Hangul names, and every prefix of them (a text whose words
    start none is passed over after one set operation)."""

    names: frozenset[str]
    prefixes: frozenset[str]
    longest: int

    @classmethod
    def of(cls, names: frozenset[str]) -> NameSkeletons:
        # From two letters on: one-letter words (K, A, I) are common; the one-letter surname
        # spellings (O for 오, I for 이, U for 우) are kept.
        prefixes = frozenset(n[:k] for n in names for k in range(2, len(n) + 1))
        prefixes |= {n[0] for n in names if n[0] in "oiu"}
        return cls(names, prefixes, max(map(len, names), default=0))

    def __bool__(self) -> bool:
        return bool(self.names)


NO_NAMES = NameSkeletons.of(frozenset())


def romanized_spans(text: str, sk: NameSkeletons) -> list[tuple[int, int]]:
    """Spans of runs of up to four Latin words whose joined skeleton is one of ``sk.names``."""
    prefixes, names = sk.prefixes, sk.names
    # A name starts with a capital (Kim, KIM): the other words are skeletoned only when one of
    # those starts a name.
    if prefixes.isdisjoint(map(skeleton, _CAPITALIZED.findall(text))):
        return []
    spans = []
    # From each word that starts with a capital, the words after it, one at a time (a list of
    # every word of the text and its skeleton cost more than the search).
    for word in _WORD_STARTING.finditer(text):
        acc = skeleton(word.group())
        if acc not in prefixes:
            continue
        start, end = word.span()
        count = 1
        while True:
            if acc in names:
                spans.append((start, end))
            if count >= _MAX_WORDS or len(acc) >= sk.longest:
                break
            after = _JOIN_WORD.match(text, end)
            if after is None:
                break
            acc += skeleton(after.group(1))
            if acc not in prefixes:
                break
            end = after.end()
            count += 1
    return spans
