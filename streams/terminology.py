"""Terminology as data: units -> UCUM, value sets, coding systems and per-feed code maps.

Everything here is loaded from CSV files (streams/maps/, shipped as package data, plus the
deployment's own code maps) and looked up by pure functions; nothing is a branch in code
(DESIGN §3). Lines starting with '#' are comments.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TypeVar

ANY_FEED = "*"
_T = TypeVar("_T")


class TerminologyError(ValueError):
    """A map file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class _Dated:
    coding: Coding
    valid_from: date | None
    valid_to: date | None

    def valid_on(self, day: date | None) -> bool:
        if day is None:
            return self.valid_to is None  # no event date: the mapping in force today
        if self.valid_from is not None and day < self.valid_from:
            return False
        return self.valid_to is None or day < self.valid_to


@dataclass(frozen=True)
class Terminology:
    units: dict[str, tuple[str, float]] = field(default_factory=dict)
    sex: dict[str, tuple[str, str]] = field(default_factory=dict)
    marital_status: dict[str, str] = field(default_factory=dict)
    patient_class: dict[str, str] = field(default_factory=dict)
    systems: dict[str, list[_Dated]] = field(default_factory=dict)
    codes: dict[tuple[str, str, str], list[_Dated]] = field(default_factory=dict)

    @classmethod
    def load(cls, code_maps: Iterable[Path] = ()) -> Terminology:
        """The packaged maps, plus extra code-map CSV files (same columns as codes/*.csv)."""
        base = resources.files(__package__).joinpath("maps")
        units = {
            row["source"]: (row["ucum"], _factor(row["factor"], where))
            for where, row in _rows(base.joinpath("units.csv"))
        }
        sex = {row["source"]: (row["code"], row["gender"]) for _, row in _rows(base / "sex.csv")}
        marital = {r["source"]: r["code"] for _, r in _rows(base / "marital_status.csv")}
        classes = {r["source"]: r["code"] for _, r in _rows(base / "patient_class.csv")}
        systems: dict[str, list[_Dated]] = {}
        for where, row in _rows(base / "coding_systems.csv"):
            systems.setdefault(row["source"].upper(), []).append(
                _Dated(Coding(row["standard_system"], ""), *_period(row, where))
            )
        codes: dict[tuple[str, str, str], list[_Dated]] = {}
        files: list[Traversable | Path] = sorted(
            (f for f in (base / "codes").iterdir() if f.name.endswith(".csv")),
            key=lambda f: f.name,
        )
        for source in [*files, *code_maps]:
            for where, row in _rows(source):
                key = (row["feed"] or ANY_FEED, row["local_system"].upper(), row["local_code"])
                coding = Coding(
                    row["standard_system"], row["standard_code"], row["display"] or None
                )
                codes.setdefault(key, []).append(_Dated(coding, *_period(row, where)))
        return cls(units, sex, marital, classes, systems, codes)

    # -- lookups --------------------------------------------------------------------------

    def ucum(self, unit: str | None) -> tuple[str, float] | None:
        """(UCUM unit, exact factor) for a unit as sent; None when it is not in the map."""
        if not unit:
            return None
        found = self.units.get(unit.strip())
        if found is None:
            found = _casefold_lookup(self.units, unit.strip())
        return found

    def administrative_sex(self, value: str | None) -> tuple[str | None, str | None]:
        """PID-8 -> (table 0001 code, FHIR gender); an unknown value stays as sent, no gender."""
        if not value:
            return None, None
        found = self.sex.get(value.strip()) or _casefold_lookup(self.sex, value.strip())
        return found if found else (value, None)

    def marital(self, value: str | None) -> str | None:
        if not value:
            return None
        return self.marital_status.get(value.strip()) or _casefold_lookup(
            self.marital_status, value.strip()
        )

    def encounter_class(self, value: str | None) -> str | None:
        if not value:
            return None
        return self.patient_class.get(value.strip().upper())

    def standard(
        self, feed: str, system: str | None, code: str | None, when: datetime | None
    ) -> Coding | None:
        """The standard coding of a code as sent: itself when its system is standard, else the
        feed's code map entry in force on the event date (feed-specific before '*')."""
        if not code:
            return None
        day = when.date() if when is not None else None
        sys_key = (system or "").strip().upper()
        for entry in self.systems.get(sys_key, ()):
            if entry.valid_on(day):
                return Coding(entry.coding.system, code)
        for key in ((feed, sys_key, code), (ANY_FEED, sys_key, code), (feed, "", code)):
            for entry in self.codes.get(key, ()):
                if entry.valid_on(day):
                    return entry.coding
        return None


@cache
def default_terminology() -> Terminology:
    return Terminology.load()


def _casefold_lookup(table: dict[str, _T], key: str) -> _T | None:
    folded = key.casefold()
    for source, value in table.items():
        if source.casefold() == folded:
            return value
    return None


def _rows(source: Traversable | Path) -> Iterator[tuple[str, dict[str, str]]]:
    text = source.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(lines)
    for number, row in enumerate(reader, 2):
        where = f"{source.name}:{number}"
        if None in row or any(v is None for v in row.values()):
            raise TerminologyError(f"{where}: wrong number of columns")
        yield where, {k: (v or "").strip() for k, v in row.items()}


def _factor(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TerminologyError(f"{where}: factor {text!r} is not a number") from None
    if value <= 0:
        raise TerminologyError(f"{where}: factor must be positive")
    return value


def _period(row: dict[str, str], where: str) -> tuple[date | None, date | None]:
    try:
        start = date.fromisoformat(row["valid_from"]) if row.get("valid_from") else None
        end = date.fromisoformat(row["valid_to"]) if row.get("valid_to") else None
    except ValueError:
        raise TerminologyError(f"{where}: valid_from/valid_to must be ISO dates") from None
    if start and end and end <= start:
        raise TerminologyError(f"{where}: valid_to must be after valid_from")
    return start, end
