"""From values to needles: a name in its orders and parts, a phone in its forms, an id as its
letters and digits (only needles that :func:`.needles.spec` can search are kept)."""

from __future__ import annotations

import re

from hl7bus.hl7v2 import HL7_NULL

from .kinds import Kind
from .needles import NON_ALNUM, spec
from .words import KOREAN_COMPOUND_SURNAMES, NAME_SEPARATORS, SYLLABLES, is_latin, is_syllabic

__all__ = ["Collector"]

_NON_DIGIT = re.compile("[^0-9]+")
_POSTAL = re.compile(r"[0-9\-]+")
_ROAD = re.compile(rf"([{SYLLABLES}]+(?:로|길|가|동|리))\s*[0-9][0-9\-]*(?:\s.*)?")
_KR_PHONE = re.compile(r"(01[016789]|02|0[3-6][1-5]|070|050\d|080)(\d{7,8})")
_RRN_SHAPE = re.compile(r"\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{7}")


def _clean(value: str | None) -> str:
    if not value or value == HL7_NULL:
        return ""
    if "  " in value or value[0].isspace() or value[-1].isspace() or "\t" in value:
        return " ".join(value.split())
    return value


class Collector:
    """Turns field values into needles; applies the expansions (name orders, phone forms)."""

    def __init__(self) -> None:
        self.needles: set[tuple[Kind, str]] = set()

    def _add(self, kind: Kind, literal: str) -> None:
        if literal and spec(kind, literal) is not None:
            self.needles.add((kind, literal))

    def person(self, family: str, given: str, middle: str) -> None:
        family, given, middle = _clean(family), _clean(given), _clean(middle)
        if family and not given and not middle:
            family, given = _split_full_name(family)
        parts = [p for p in (family, given, middle) if p]
        if not parts:
            return
        syllabic = [p for p in parts if is_syllabic(p)]
        latin = [p.upper() for p in parts if is_latin(p)]
        if syllabic:
            joined = [p.replace(" ", "") for p in syllabic]
            # Surname, then given names, with a space that the pattern makes optional.
            self._add(Kind.NAME, " ".join(joined))
            if len(joined) > 2:
                self._add(Kind.NAME, " ".join(joined[1:]))
            for p in joined:
                self._add(Kind.NAME, p)
        if latin:
            tokens = [NAME_SEPARATORS.sub("", p) for p in latin]
            if len(tokens) > 1:
                self._add(Kind.NAME, " ".join(tokens))
                self._add(Kind.NAME, " ".join([*tokens[1:], tokens[0]]))
                if len(tokens) > 2:
                    self._add(Kind.NAME, f"{tokens[0]} {tokens[1]}")
                    self._add(Kind.NAME, f"{tokens[1]} {tokens[0]}")
            for t in tokens:
                self._add(Kind.NAME, t)
        for p in parts:
            if not is_syllabic(p) and not is_latin(p):
                self._add(Kind.NAME, p.upper())  # mixed script: matched as text

    def organization(self, name: str) -> None:
        name = _clean(name)
        if name:
            self._add(Kind.NAME, name.upper())

    def ident(self, value: str | None, kind: Kind = Kind.ID) -> None:
        v = _clean(value)
        if v:
            self._add(kind, NON_ALNUM.sub("", v).upper())

    def national(self, value: str | None) -> None:
        digits = NON_ALNUM.sub("", _clean(value)).upper()
        kind = Kind.RRN if _RRN_SHAPE.fullmatch(digits) else Kind.ID
        self._add(kind, digits)

    def phone(self, value: str | None) -> None:
        v = _clean(value)
        digits = _NON_DIGIT.sub("", v)
        if len(digits) < 7:
            return
        if v.startswith("+82"):
            digits = "0" + digits[2:]
        elif digits.startswith("0082"):
            digits = "0" + digits[4:]
        self._add(Kind.PHONE, digits)
        m = _KR_PHONE.fullmatch(digits)
        if m:
            self._add(Kind.PHONE, m[2])  # without the area code
            self._add(Kind.PHONE, "+82" + digits[1:])
        elif digits.startswith("0") and len(digits) >= 9:
            self._add(Kind.PHONE, "+82" + digits[1:])

    def email(self, value: str | None) -> None:
        v = _clean(value)
        if "@" in v:
            self._add(Kind.EMAIL, v.lower())

    def place(self, value: str | None) -> None:
        v = _clean(value)
        if not v:
            return
        if _POSTAL.fullmatch(v):
            self._add(Kind.ADDRESS, v.replace("-", ""))
            return
        self._add(Kind.ADDRESS, v.upper())
        # The road name alone ("월드컵로" of "월드컵로 381"), which names a small area too.
        road = _ROAD.fullmatch(v)
        if road:
            self._add(Kind.ADDRESS, road[1])


def _split_full_name(name: str) -> tuple[str, str]:
    """Family and given name of a name sent in one component."""
    if is_syllabic(name):
        if " " in name:
            family, _, given = name.partition(" ")
            return family, given.replace(" ", "")
        if len(name) >= 3 and name[:2] in KOREAN_COMPOUND_SURNAMES:
            return name[:2], name[2:]
        return (name[:1], name[1:]) if len(name) >= 2 else (name, "")
    if "," in name:
        family, _, given = name.partition(",")
        return family.strip(), given.strip()
    if " " in name:
        family, _, given = name.partition(" ")
        return family, given
    return name, ""
