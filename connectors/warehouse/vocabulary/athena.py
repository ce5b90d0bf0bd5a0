"""The OHDSI Athena vocabulary download: its files, their columns, and where a bad file is bad.

An Athena download (athena.ohdsi.org, "Download") is a folder of tab-separated files, one per
vocabulary table, each with a header line naming the table's columns in v5.4 order: CONCEPT.csv,
VOCABULARY.csv, DOMAIN.csv, CONCEPT_CLASS.csv, CONCEPT_RELATIONSHIP.csv, RELATIONSHIP.csv,
CONCEPT_SYNONYM.csv, CONCEPT_ANCESTOR.csv. Fields are never quoted (a concept name may hold a
double quote or a backslash as plain text), an empty field is NULL, dates are YYYYMMDD (the
loaders also take YYYY-MM-DD, the form of OHDSI's other CSV exports).

The engines read the files in bulk (load.py). When an engine refuses a file, ``find_problem``
reads it again, line by line, to say which line and column is wrong: the engines' own messages
differ between them and quote the offending line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from hl7bus.connectors.warehouse import cdm
from hl7bus.schemas.datafile import DataFileError

#: Table -> the file of an Athena download that fills it.
FILES: dict[str, str] = {table: f"{table.upper()}.csv" for table in cdm.VOCABULARY_TABLES}

_INT32 = (-(2**31), 2**31 - 1)
_INTEGER = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})")
_VARCHAR = re.compile(r"varchar\((\d+)\)")


class VocabularyError(DataFileError):
    """A vocabulary folder that cannot be loaded; the message names the file, and the line and
    column when one is at fault."""


@dataclass(frozen=True)
class Problem:
    """Where a file is wrong: its line (1 is the header), the column when one is at fault."""

    line: int
    column: str | None
    problem: str

    def message(self, file: Path) -> str:
        column = f" column {self.column}:" if self.column else ""
        return f"{file}:{self.line}:{column} {self.problem}"


def columns(table: str) -> tuple[cdm.Column, ...]:
    return cdm.TABLES[table]


def check_folder(folder: Path) -> dict[str, Path]:
    """Every file of the download, by table, each with the header its table needs."""
    if not folder.is_dir():
        raise VocabularyError(f"{folder}: not a folder (expected an unpacked Athena download)")
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise VocabularyError(
            f"{folder}: missing {', '.join(missing)} (an Athena download has "
            f"{', '.join(FILES.values())})"
        )
    paths = {table: folder / name for table, name in FILES.items()}
    for table, path in paths.items():
        problem = check_header(path, table)
        if problem is not None:
            raise VocabularyError(problem.message(path))
    return paths


def check_header(path: Path, table: str) -> Problem | None:
    """The header line must name the table's columns, in order (any letter case)."""
    expected = [c.name for c in columns(table)]
    with path.open("rb") as file:
        first = file.readline()
    try:
        header = first.decode("utf-8-sig").rstrip("\r\n").split("\t")
    except UnicodeDecodeError:
        return Problem(1, None, "not UTF-8 text")
    if [name.strip().lower() for name in header] != expected:
        return Problem(
            1,
            None,
            f"the header names {len(header)} column(s) {_shown(header)}; expected the "
            f"{len(expected)} tab-separated columns {', '.join(expected)}",
        )
    return None


def find_problem(path: Path, table: str) -> Problem | None:
    """The first line of `path` that a loader must refuse, or None when every line is good.

    Checks what the engines check: the number of fields, integers (32-bit), YYYYMMDD dates,
    required fields not empty, varchar lengths (PostgreSQL enforces them), primary keys unique.
    """
    problem = check_header(path, table)
    if problem is not None:
        return problem
    cols = columns(table)
    key_at = [i for i, c in enumerate(cols) if c.pk]
    keys: set[tuple[str, ...]] = set()
    with path.open("rb") as file:
        file.readline()
        for number, raw in enumerate(file, 2):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Problem(number, None, "not UTF-8 text")
            fields = line.rstrip("\n").removesuffix("\r").split("\t")
            if len(fields) != len(cols):
                return Problem(
                    number, None, f"{len(fields)} tab-separated field(s), expected {len(cols)}"
                )
            for column, value in zip(cols, fields, strict=True):
                problem_text = _bad_value(column, value)
                if problem_text is not None:
                    return Problem(number, column.name, problem_text)
            if key_at:
                key = tuple(fields[i] for i in key_at)
                if key in keys:
                    return Problem(number, cols[key_at[0]].name, "repeats an earlier line's key")
                keys.add(key)
    return None


def _bad_value(column: cdm.Column, value: str) -> str | None:
    if value == "":
        return "empty, but the column is required" if column.required else None
    if column.type in (cdm.INTEGER, cdm.BIGINT):
        if not _INTEGER.fullmatch(value):
            return "not an integer"
        if column.type == cdm.INTEGER and not _INT32[0] <= int(value) <= _INT32[1]:
            return "does not fit a 32-bit integer"
    elif column.type == cdm.DATE:
        parts = _DATE.fullmatch(value)
        if not parts or len(value) not in (8, 10) or (len(value) == 10) != ("-" in value):
            return "not a YYYYMMDD date"
        try:
            date(*(int(part) for part in parts.groups()))
        except ValueError:
            return "not a calendar date (YYYYMMDD)"
    else:
        length = _VARCHAR.fullmatch(column.type)
        if length and len(value) > int(length.group(1)):
            return f"{len(value)} characters, longer than {column.type}"
    return None


def _shown(names: list[str]) -> str:
    """Header names for a message, each cut short. Field values are never shown: vocabulary
    files hold no patient data, but a wrong file handed to the loader might."""
    return ", ".join(repr(n if len(n) <= 40 else n[:37] + "...") for n in names)
