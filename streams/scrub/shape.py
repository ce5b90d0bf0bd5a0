"""Korean names with no cue at all (``송수빈에게 설명함``, ``황정희와 면담함``): found by their
shape, a surname (:data:`.cues.SURNAMES`), one or two given-name syllables and a particle.

Rule (:func:`shape_spans`): a token that starts after a non-Hangul character, made of a surname
(one syllable, or a compound one such as 남궁) and one or two syllables of the data file's
given-name list, directly followed by a particle (:data:`PARTICLES`) and then by a non-Hangul
character or the end of the text; the token is not one of the data file's clinical words of the
same shape (``이상이``, ``조영제를``, ``신장이``) nor a common word or role word of
:mod:`.words` and :mod:`.cues`. A token of two syllables (a surname and a one-syllable given
name) is taken only before the particles that mark a person (에게, 께, 한테, 하고: ``김석에게``):
before 이, 가, 을, 를 and the others too many two-syllable words fit (``안정을``, ``오한이``).

The syllables and the clinical words are a data file, ``name_shape.yaml`` (its source is noted
there), read once at import. What this rule misses: names of rarer syllables, names before
other endings (``김민준으로부터``), two-syllable names before 이, 가, 와 and the rest.
"""

from __future__ import annotations

import re
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from hl7bus.schemas import datafile

from .cues import ROLE_WORDS, SURNAMES
from .words import COMMON_WORDS

__all__ = ["PARTICLES", "NameShapeFile", "shape_spans"]


class NameShapeFile(BaseModel):
    """``name_shape.yaml``: what a Korean name with no cue looks like."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where the syllable list comes from, and its limits.")
    given_syllables: str = Field(
        description="Hangul syllables of given names, separated by spaces."
    )
    not_names: str = Field(
        description="Clinical and common words of name shape that are not names, separated by "
        "spaces."
    )


def _load() -> NameShapeFile:
    file = resources.files("hl7bus.streams").joinpath("scrub/name_shape.yaml")
    shape = datafile.load_yaml(NameShapeFile, file, "name_shape.yaml")
    for key in ("given_syllables", "not_names"):
        bad = [w for w in getattr(shape, key).split() if not _HANGUL_WORD.fullmatch(w)]
        if bad:
            raise datafile.DataFileError(f"name_shape.yaml: {key}: not Hangul: {bad[:5]}")
    return shape


_HANGUL = "\uac00-\ud7a3"
_HANGUL_WORD = re.compile(f"[{_HANGUL}]+")
_SHAPE = _load()
GIVEN_SYLLABLES: frozenset[str] = frozenset(_SHAPE.given_syllables.split())
#: Words of name shape that are not names.
NOT_NAMES: frozenset[str] = frozenset(_SHAPE.not_names.split()) | COMMON_WORDS | ROLE_WORDS
#: Particles after a name with no cue, the longest first where one starts another.
PARTICLES: tuple[str, ...] = (
    "에게서", "에게", "께서", "께", "한테", "하고", "이랑", "랑", "이", "가", "은", "는", "을",
    "를", "의", "와", "과",
)  # fmt: skip
# After them a two-syllable token is a name too (they mark a person).
_PERSON_PARTICLES = frozenset({"에게서", "에게", "께서", "께", "한테", "하고"})

_single = "".join(sorted(s for s in SURNAMES if len(s) == 1))
_compounds = sorted(s for s in SURNAMES if len(s) == 2)
_firsts = "".join(sorted({*_single, *(c[0] for c in _compounds)}))
_given = "".join(sorted(GIVEN_SYLLABLES))
# The surname's first syllable as one character class, so that re skips in C to the
# characters that may start a name (an alternation of a class and the compound surnames gave
# re no first character to skip to: it tried a match at every position of every text); "not
# inside a word" as a lookbehind after it; then a one-syllable surname, or the second syllable
# of a compound one (the first checked by a lookbehind); the particle and what follows it as a
# lookahead (checked again in Python for the two-syllable case).
_NAME = re.compile(
    f"[{_firsts}](?<![{_HANGUL}].)"
    f"(?:(?<=[{_single}])|{'|'.join(f'{c[1]}(?<={c})' for c in _compounds)})"
    f"[{_given}]{{1,2}}"
    f"(?=(?P<particle>{'|'.join(PARTICLES)})(?![{_HANGUL}]))"
)


def shape_spans(text: str) -> list[tuple[int, int]]:
    """Spans of Korean names found by their shape (module docstring)."""
    spans = []
    for m in _NAME.finditer(text):
        name = m.group()
        if name in NOT_NAMES:
            continue
        if len(name) == 2 and m.group("particle") not in _PERSON_PARTICLES:
            continue
        spans.append(m.span())
    return spans
