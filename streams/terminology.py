"""Terminology as data: units -> UCUM, value sets, coding systems and per-feed code maps.

Everything here is loaded from CSV files (streams/maps/, shipped as package data, plus the
deployment's own code maps) and looked up by pure functions; nothing is a branch in code
(docs/architecture.md, Layers). Lines starting with '#' are comments.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from hl7bus.schemas.datafile import csv_rows

ANY_FEED = "*"
_T = TypeVar("_T")


def _iso_date(value: object) -> object:
    """An empty cell is no date; a date is ISO 8601 (date.fromisoformat)."""
    if value == "":
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be an ISO date (YYYY-MM-DD)") from None
    return value


ValidFrom = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    Field(description="First day the row applies (ISO date); empty: since always."),
]
ValidTo = Annotated[
    date | None,
    BeforeValidator(_iso_date),
    Field(description="First day the row no longer applies (ISO date); empty: still in force."),
]


class _MapRow(BaseModel):
    """One row of a map file; a dated row must end after it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("valid_to", check_fields=False)
    @classmethod
    def _after_valid_from(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("valid_from")
        if value is not None and start is not None and value <= start:
            raise ValueError("valid_to must be after valid_from")
        return value


class UnitRow(_MapRow):
    """maps/units.csv: a lab unit as sent -> UCUM."""

    source: str = Field(description="The unit as sent (OBX-6).")
    ucum: str = Field(description="The UCUM unit.")
    factor: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="Multiply a value by it to express it in the UCUM unit; 1 for a respelling.",
    )


class SexRow(_MapRow):
    """maps/sex.csv: PID-8 as sent -> HL7 table 0001 and FHIR AdministrativeGender."""

    source: str = Field(description="PID-8 as sent.")
    code: str = Field(description="The HL7 table 0001 code.")
    gender: str = Field(description="The FHIR AdministrativeGender.")


class ValueRow(_MapRow):
    """maps/marital_status.csv, maps/patient_class.csv: a value as sent -> its standard code."""

    source: str = Field(description="The value as sent.")
    code: str = Field(description="The standard code.")


class CodingSystemRow(_MapRow):
    """maps/coding_systems.csv: a coding-system name as sent -> the standard system it is."""

    source: str = Field(description="The system name as sent (CWE.3 / CE.3), any case.")
    standard_system: str = Field(description="The standard system it names.")
    valid_from: ValidFrom = None
    valid_to: ValidTo = None


class CodeMapRow(_MapRow):
    """maps/codes/*.csv and a deployment's code maps: a feed's local code -> a standard code."""

    feed: str = Field(description="The feed name; empty or * for every feed.")
    local_system: str = Field(description="CWE.3 as sent; empty matches any.")
    local_code: str = Field(description="The code as sent (CWE.1).")
    standard_system: str = Field(description="The standard system it maps to.")
    standard_code: str = Field(description="The standard code it maps to.")
    display: str = Field(description="The standard code's display text; may be empty.")
    valid_from: ValidFrom = None
    valid_to: ValidTo = None


_Row = TypeVar("_Row", bound=_MapRow)


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
        """The packaged maps, plus extra code-map CSV files (same columns as codes/*.csv).

        Raises DataFileError naming the file, the row and the column of a bad row."""
        base = resources.files(__package__).joinpath("maps")
        units = {r.source: (r.ucum, r.factor) for r in _rows(UnitRow, base, "units.csv")}
        sex = {r.source: (r.code, r.gender) for r in _rows(SexRow, base, "sex.csv")}
        marital = {r.source: r.code for r in _rows(ValueRow, base, "marital_status.csv")}
        classes = {r.source: r.code for r in _rows(ValueRow, base, "patient_class.csv")}
        systems: dict[str, list[_Dated]] = {}
        for system in _rows(CodingSystemRow, base, "coding_systems.csv"):
            systems.setdefault(system.source.upper(), []).append(
                _Dated(Coding(system.standard_system, ""), system.valid_from, system.valid_to)
            )
        codes: dict[tuple[str, str, str], list[_Dated]] = {}
        packaged = sorted(f.name for f in (base / "codes").iterdir() if f.name.endswith(".csv"))
        rows = [_rows(CodeMapRow, base, f"codes/{name}") for name in packaged]
        rows += [_file_rows(CodeMapRow, path) for path in code_maps]
        for row in itertools.chain.from_iterable(rows):
            key = (row.feed or ANY_FEED, row.local_system.upper(), row.local_code)
            coding = Coding(row.standard_system, row.standard_code, row.display or None)
            codes.setdefault(key, []).append(_Dated(coding, row.valid_from, row.valid_to))
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


def _rows(model: type[_Row], base: Traversable, name: str) -> Iterator[_Row]:
    """The rows of a packaged map file (streams/maps/<name>)."""
    return csv_rows(model, base.joinpath(name), f"terminology map streams/maps/{name}")


def _file_rows(model: type[_Row], path: Path) -> Iterator[_Row]:
    """The rows of a deployment's own map file."""
    return csv_rows(model, path, f"terminology map {path}")
