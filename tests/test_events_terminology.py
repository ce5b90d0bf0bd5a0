"""The normalization data files (streams/maps/*.csv) and their loader, golden-tested.

Value sets: every target of the shipped maps is a member of its standard value set, and the
common source spellings map as listed here. Units: UCUM spellings, exact factors only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hl7bus.schemas.datafile import DataFileError, csv_rows
from hl7bus.streams.normalize import ReferenceRange, read_dtm, reference_range
from hl7bus.streams.terminology import Terminology, UnitRow, default_terminology

SEOUL = ZoneInfo("Asia/Seoul")
TABLE_0001 = {"F", "M", "O", "U", "A", "N"}
FHIR_GENDER = {"male", "female", "other", "unknown"}
V3_MARITAL = {"A", "D", "I", "L", "M", "C", "P", "T", "U", "S", "W", "UNK"}
V3_ENCOUNTER = {"IMP", "AMB", "EMER", "PRENC", "ACUTE", "NONAC", "SS", "VR", "HH", "FLD", "OBSENC"}


def test_value_set_targets_are_standard() -> None:
    terms = default_terminology()
    for code, gender in terms.sex.values():
        assert code in TABLE_0001 and gender in FHIR_GENDER
    assert set(terms.marital_status.values()) <= V3_MARITAL
    assert set(terms.patient_class.values()) <= V3_ENCOUNTER


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("M", ("M", "male")),
        ("f", ("F", "female")),
        ("남", ("M", "male")),
        ("여자", ("F", "female")),
        ("U", ("U", "unknown")),
        ("Z", ("Z", None)),  # unknown spellings stay as sent, without a gender
        (None, (None, None)),
    ],
)
def test_sex(source: str | None, expected: tuple[str | None, str | None]) -> None:
    assert default_terminology().administrative_sex(source) == expected


def test_marital_status_and_patient_class() -> None:
    terms = default_terminology()
    assert [terms.marital(v) for v in ("M", "S", "D", "W", "A", "기혼", "Q", None)] == [
        "M", "S", "D", "W", "L", "M", None, None,
    ]  # fmt: skip
    assert [terms.encounter_class(v) for v in ("I", "O", "E", "P", "N", "x")] == [
        "IMP", "AMB", "EMER", "PRENC", None, None,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("mg/dL", ("mg/dL", 1.0)),
        ("mg/dl", ("mg/dL", 1.0)),
        ("MG/DL", ("mg/dL", 1.0)),
        ("K/uL", ("10*3/uL", 1.0)),
        ("10^3/uL", ("10*3/uL", 1.0)),
        ("mEq/L", ("meq/L", 1.0)),
        ("mmHg", ("mm[Hg]", 1.0)),
        ("furlongs", None),
        (None, None),
    ],
)
def test_units_to_ucum(unit: str | None, expected: tuple[str, float] | None) -> None:
    assert default_terminology().ucum(unit) == expected


def test_no_inexact_conversion_is_shipped() -> None:
    # mg/dL <-> mmol/L needs a molar mass: the map must never relate a mass to an amount unit.
    for source, (ucum, _) in default_terminology().units.items():
        assert not (("g/" in source) and ("mol" in ucum)), source
        assert not (("mol" in source) and ("g/" in ucum)), source


def test_coding_systems_and_kcd_by_date() -> None:
    terms = default_terminology()
    on = [datetime(2020, 6, 1, tzinfo=UTC), datetime(2023, 6, 1, tzinfo=UTC)]
    on.append(datetime(2026, 6, 1, tzinfo=UTC))
    assert [terms.standard("f", "KCD", "E11.9", d).system for d in on] == [  # type: ignore[union-attr]
        "KCD-7", "KCD-8", "KCD-9",
    ]  # fmt: skip
    assert terms.standard("f", "LN", "718-7", None) == terms.standard("g", "LOINC", "718-7", None)
    assert terms.standard("f", "L", "GLU", None) is None  # local codes need the feed's map


def test_per_feed_code_maps(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text(
        "feed,local_system,local_code,standard_system,standard_code,display,valid_from,valid_to\n"
        "site,L,GLU,LOINC,2345-7,Glucose,,\n"
        "*,L,NA,LOINC,2951-2,Sodium,,\n",
        encoding="utf-8",
    )
    terms = Terminology.load([path])
    assert terms.standard("site", "L", "GLU", None).code == "2345-7"  # type: ignore[union-attr]
    assert terms.standard("other", "L", "GLU", None) is None
    assert terms.standard("other", "L", "NA", None).code == "2951-2"  # type: ignore[union-attr]


def test_bad_map_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "feed,local_system,local_code,standard_system,standard_code,display,valid_from,valid_to\n"
        "site,L,GLU,LOINC,2345-7,Glucose,2026-13-01,\n",
        encoding="utf-8",
    )
    with pytest.raises(DataFileError, match=r"bad\.csv:2: 1 problem\(s\)\n  valid_from = "):
        Terminology.load([path])


CODE_MAP_HEADER = (
    "feed,local_system,local_code,standard_system,standard_code,display,valid_from,valid_to"
)
CODE_MAP_COLUMNS = (
    "feed, local_system, local_code, standard_system, standard_code, display, valid_from, valid_to"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (  # an unknown column
            CODE_MAP_HEADER + ",note\nsite,L,GLU,LOINC,2345-7,Glucose,,,fasting\n",
            f"note: unknown key; allowed here: {CODE_MAP_COLUMNS}",
        ),
        (  # a required column missing
            "feed,local_system,local_code,standard_system,standard_code\nsite,L,GLU,LOINC,2345-7\n",
            "display = (missing): Field required",
        ),
        (  # a value of the wrong type
            CODE_MAP_HEADER + "\nsite,L,GLU,LOINC,2345-7,Glucose,,31.12.2026\n",
            "valid_to = '31.12.2026': Value error, must be an ISO date (YYYY-MM-DD)",
        ),
        (
            CODE_MAP_HEADER + "\nsite,L,GLU,LOINC,2345-7,Glucose,2026-01-01,2025-01-01\n",
            "valid_to = '2025-01-01': Value error, valid_to must be after valid_from",
        ),
    ],
)
def test_code_map_errors_name_the_file_row_and_column(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "site.csv"
    path.write_text("# a comment line\n" + text, encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        Terminology.load([path])
    assert str(caught.value) == f"terminology map {path}:2: 1 problem(s)\n  {problem}"


def test_wrong_number_of_cells_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.csv"
    path.write_text(CODE_MAP_HEADER + "\nsite,L,GLU\n", encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        Terminology.load([path])
    assert str(caught.value) == (
        f"terminology map {path}:2: 1 problem(s)\n  wrong number of columns"
    )


@pytest.mark.parametrize(
    ("factor", "problem"),
    [
        (
            "abc",
            "factor = 'abc': Input should be a valid number, unable to parse string as a number",
        ),
        ("0", "factor = '0': Input should be greater than 0"),
    ],
)
def test_unit_factors_are_positive_numbers(tmp_path: Path, factor: str, problem: str) -> None:
    path = tmp_path / "units.csv"
    path.write_text(f"source,ucum,factor\nmg/dl,mg/dL,1\nK/uL,10*3/uL,{factor}\n", encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        list(csv_rows(UnitRow, path, "units"))
    assert str(caught.value) == f"units:3: 1 problem(s)\n  {problem}"


@pytest.mark.parametrize(
    ("value", "offset", "precision"),
    [
        ("2026", None, "YYYY"),
        ("202611", None, "YYYYMM"),
        ("20261127", None, "YYYYMMDD"),
        ("202611270830", None, "YYYYMMDDHHMM"),
        ("20261127083000+0900", "+0900", "YYYYMMDDHHMMSS"),
        ("20261127083000.1234-0500", "-0500", "YYYYMMDDHHMMSS.SSSS"),
    ],
)
def test_timestamps_keep_offset_and_precision(
    value: str, offset: str | None, precision: str
) -> None:
    instant = read_dtm(value, SEOUL)
    assert instant is not None
    assert (instant.offset, instant.precision) == (offset, precision)
    assert instant.utc.tzinfo == UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10-20", ReferenceRange(10, 20)),
        ("0.70 - 1.30", ReferenceRange(0.7, 1.3)),
        ("-2-2", ReferenceRange(-2, 2)),
        ("<200", ReferenceRange(high=200, high_comparator="<")),
        (">=40", ReferenceRange(low=40, low_comparator=">=")),
        ("negative", ReferenceRange()),
        (None, ReferenceRange()),
    ],
)
def test_reference_ranges_split(text: str | None, expected: ReferenceRange) -> None:
    assert reference_range(text) == expected
