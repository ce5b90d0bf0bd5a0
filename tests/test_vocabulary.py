"""The vocabulary: an Athena download loaded into DuckDB and a real PostgreSQL, source codes mapped
to concepts through it, bad downloads refused with their file and line, unmapped codes counted.

Every engine test runs on both engines with the same expectations; the sample vocabulary is the
one shipped for the demo (connectors/warehouse/vocabulary/sample, written by
tests/vocabsample.py).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import samplefeed
import vocabsample
from postgres_server import fresh_database
from typer.testing import CliRunner

from hl7bus.connectors.warehouse import cdm
from hl7bus.connectors.warehouse.concepts import UNMAPPED, Mapped
from hl7bus.connectors.warehouse.vocabulary import (
    FILES,
    Loaded,
    UnmappedCounter,
    VocabularyError,
    VocabularyLookup,
    load_vocabulary,
    record_unmapped,
    sample_folder,
    top_unmapped,
    unmapped_table_statement,
)
from hl7bus.connectors.warehouse.vocabulary.lookup import icd_parents, table_codes
from hl7bus.ops.cli import app
from hl7bus.streams.terminology import Terminology

SAMPLE = sample_folder()
T2DM, HEADACHE, PNEUMONIA = vocabsample.T2DM, vocabsample.HEADACHE, vocabsample.PNEUMONIA
ICD10_J189, ICD10_R51, KCD7_E119, KCD7_U181 = 2000103003, 2000103004, 2000103005, 2000103006


@dataclass
class Warehouse:
    """One engine's empty database: load a folder into it, connect to it."""

    dialect: cdm.Dialect
    path: Path | None
    url: str | None

    def load(self, folder: Path) -> list[Loaded]:
        return load_vocabulary(folder, path=self.path, url=self.url)

    def connect(self) -> Any:
        if self.url:
            return psycopg.connect(self.url, autocommit=True)
        assert self.path is not None
        return duckdb.connect(str(self.path))

    def count(self, table: str) -> int:
        conn = self.connect()
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    def dump(self, table: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        finally:
            conn.close()


@pytest.fixture(params=["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield Warehouse("duckdb", tmp_path / "warehouse.duckdb", None)
        return
    server_url: str = request.getfixturevalue("postgres_url")
    with fresh_database(server_url, "vocab") as conninfo:
        yield Warehouse("postgresql", None, conninfo)


@pytest.fixture
def lookup(warehouse: Warehouse) -> Iterator[VocabularyLookup]:
    warehouse.load(SAMPLE)
    conn = warehouse.connect()
    try:
        yield VocabularyLookup(conn, warehouse.dialect)
    finally:
        conn.close()


def sample_rows(name: str) -> int:
    return len((SAMPLE / name).read_text("utf-8").splitlines()) - 1


# -- the shipped sample ----------------------------------------------------------------------


def test_generator_reproduces_the_shipped_sample(tmp_path: Path) -> None:
    written = vocabsample.write_sample(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in SAMPLE.iterdir())
    for path in written:
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), path.name


def test_sample_has_every_file_and_local_ids_only_in_the_local_range() -> None:
    assert sorted(FILES.values()) == sorted(p.name for p in SAMPLE.glob("*.csv"))
    for concept in vocabsample.clinical_concepts() + vocabsample.metadata_concepts():
        # Either an id public OHDSI material shows, or OMOP's local range (still 32-bit).
        assert concept.concept_id < 50_000_000 or 2_000_000_000 < concept.concept_id < 2**31


def test_sample_covers_the_sample_feed_and_the_golden_codes() -> None:
    loinc = {c.code for c in vocabsample.LOINC}
    feed = {p.loinc for p in samplefeed.PANELS} | {
        a.loinc for p in samplefeed.PANELS for a in p.analytes
    }
    assert feed <= loinc
    golden = Path(__file__).parent / "golden"
    lines = [line for line in (golden / "codes.csv").read_text("utf-8").splitlines()]
    mapped = csv.DictReader(line for line in lines if not line.startswith("#"))
    assert {r["standard_code"] for r in mapped if r["standard_system"] == "LOINC"} <= loinc
    terminology = Terminology.load()
    units = {a.unit for p in samplefeed.PANELS for a in p.analytes if a.unit} | {
        "mg/dl", "mg/L", "mEq/L", "K/uL", "g/dl", "mmol/L",  # the golden ORU^R01's units
    }  # fmt: skip
    ucum = {c.code for c in vocabsample.UNITS}
    # [pH] has no row in streams/maps/units.csv (the event's units_ucum stays empty); the sample
    # has its UCUM concept all the same.
    assert {found[0] for found in map(terminology.ucum, units) if found} | {"[pH]"} <= ucum


def test_hl7_table_visits_follow_the_patient_class_map() -> None:
    """HL70004 codes map to the OMOP visit of the FHIR class streams/maps gives them."""
    visit_of = {"IMP": "IP", "AMB": "OP", "EMER": "ER"}
    classes = Terminology.load().patient_class
    for code, fhir_class in classes.items():
        row = table_codes().get(("HL70004", code))
        if fhir_class in visit_of:
            assert row is not None and row.concept_code == visit_of[fhir_class], code
            assert table_codes()[("V3-ACTCODE", fhir_class)].concept_code == row.concept_code
        else:
            assert row is None, code


# -- loading ---------------------------------------------------------------------------------


def test_load_counts_every_file(warehouse: Warehouse) -> None:
    seen: list[str] = []
    loaded = load_vocabulary(
        SAMPLE,
        path=warehouse.path,
        url=warehouse.url,
        started=lambda table, path: seen.append(path.name),
    )
    assert seen == [item.path.name for item in loaded]
    assert {item.path.name: item.rows for item in loaded} == {
        name: sample_rows(name) for name in FILES.values()
    }
    for item in loaded:
        assert warehouse.count(item.table) == item.rows


def test_reload_is_idempotent_and_replaces(warehouse: Warehouse, tmp_path: Path) -> None:
    warehouse.load(SAMPLE)
    before = {table: warehouse.dump(table) for table in FILES}
    warehouse.load(SAMPLE)
    assert {table: warehouse.dump(table) for table in FILES} == before

    smaller = tmp_path / "smaller"
    shutil.copytree(SAMPLE, smaller)
    lines = (smaller / "CONCEPT.csv").read_text("utf-8").splitlines(keepends=True)
    kept = [line for line in lines if "\t718-7\t" not in line]
    (smaller / "CONCEPT.csv").write_text("".join(kept), "utf-8")
    warehouse.load(smaller)
    assert warehouse.count("concept") == len(before["concept"]) - 1
    conn = warehouse.connect()
    try:
        assert VocabularyLookup(conn, warehouse.dialect).map("LOINC", "718-7") == UNMAPPED
    finally:
        conn.close()


def _broken(tmp_path: Path, name: str, line: int, edit: Callable[[list[str]], list[str]]) -> Path:
    """A copy of the sample with line `line` (1 = header) of `name` edited field by field."""
    folder = tmp_path / "broken"
    shutil.copytree(SAMPLE, folder)
    lines = (folder / name).read_text("utf-8").split("\n")
    lines[line - 1] = "\t".join(edit(lines[line - 1].split("\t")))
    (folder / name).write_text("\n".join(lines), "utf-8")
    return folder


def _set(index: int, value: str) -> Callable[[list[str]], list[str]]:
    return lambda fields: [*fields[:index], value, *fields[index + 1 :]]


BROKEN = [
    pytest.param(
        "CONCEPT.csv", 5, lambda f: f[:-1], "CONCEPT.csv:5: 9 tab-separated field(s), expected 10",
        id="missing-field",
    ),
    pytest.param(
        "CONCEPT_RELATIONSHIP.csv", 4, lambda f: [*f, "x"],
        "CONCEPT_RELATIONSHIP.csv:4: 7 tab-separated field(s), expected 6", id="extra-field",
    ),
    pytest.param(
        "CONCEPT_RELATIONSHIP.csv", 3, _set(3, "soon"),
        "CONCEPT_RELATIONSHIP.csv:3: column valid_start_date: not a YYYYMMDD date",
        id="not-a-date",
    ),
    pytest.param(
        "CONCEPT.csv", 7, _set(8, "20201301"),
        "CONCEPT.csv:7: column valid_end_date: not a calendar date (YYYYMMDD)", id="no-such-day",
    ),
    pytest.param(
        "CONCEPT_ANCESTOR.csv", 2, _set(2, "one"),
        "CONCEPT_ANCESTOR.csv:2: column min_levels_of_separation: not an integer",
        id="not-an-integer",
    ),
    pytest.param(
        "CONCEPT.csv", 9, _set(1, ""),
        "CONCEPT.csv:9: column concept_name: empty, but the column is required",
        id="empty-required",
    ),
    pytest.param(
        "DOMAIN.csv", 3, _set(0, "Condition"),
        "DOMAIN.csv:3: column domain_id: repeats an earlier line's key", id="duplicate-key",
    ),
    pytest.param(
        "VOCABULARY.csv", 1, _set(1, "name"), "VOCABULARY.csv:1: the header names 5 column(s)",
        id="header",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "line", "edit", "message"), BROKEN)
def test_a_malformed_file_names_its_file_line_and_column(
    warehouse: Warehouse,
    tmp_path: Path,
    name: str,
    line: int,
    edit: Callable[[list[str]], list[str]],
    message: str,
) -> None:
    folder = _broken(tmp_path, name, line, edit)
    with pytest.raises(VocabularyError) as caught:
        warehouse.load(folder)
    assert str(caught.value).startswith(f"{folder}/{message}")


@pytest.mark.postgres
def test_postgresql_refuses_a_value_longer_than_its_column(
    postgres_url: str, tmp_path: Path
) -> None:
    """DuckDB keeps no VARCHAR length; PostgreSQL does, and the error says where."""
    folder = _broken(tmp_path, "CONCEPT.csv", 4, _set(6, "X" * 51))
    with (
        fresh_database(postgres_url, "vocab") as conninfo,
        pytest.raises(VocabularyError) as caught,
    ):
        load_vocabulary(folder, url=conninfo)
    assert str(caught.value) == (
        f"{folder}/CONCEPT.csv:4: column concept_code: 51 characters, longer than varchar(50)"
    )


def test_dates_load_in_athena_and_iso_form(warehouse: Warehouse, tmp_path: Path) -> None:
    folder = _broken(tmp_path, "CONCEPT.csv", 2, _set(7, "1999-12-31"))
    warehouse.load(folder)
    conn = warehouse.connect()
    try:
        dates = conn.execute(
            "SELECT valid_start_date, valid_end_date FROM concept WHERE concept_id = 0"
        ).fetchone()
    finally:
        conn.close()
    assert tuple(dates) == (date(1999, 12, 31), date(2099, 12, 31))


def test_a_missing_file_is_named(warehouse: Warehouse, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(SAMPLE, folder)
    (folder / "CONCEPT_SYNONYM.csv").unlink()
    with pytest.raises(VocabularyError, match=r"partial: missing CONCEPT_SYNONYM\.csv \("):
        warehouse.load(folder)


def test_a_failed_load_keeps_the_previous_vocabulary(warehouse: Warehouse, tmp_path: Path) -> None:
    warehouse.load(SAMPLE)
    # The last file is broken: every table before it was already replaced in the transaction.
    folder = _broken(tmp_path, "CONCEPT_ANCESTOR.csv", 3, _set(0, "x"))
    with pytest.raises(VocabularyError, match=r"CONCEPT_ANCESTOR\.csv:3: column ancestor"):
        warehouse.load(folder)
    for name in FILES.values():
        assert warehouse.count(name.removesuffix(".csv").lower()) == sample_rows(name)


# -- mapping ---------------------------------------------------------------------------------

MAPPINGS = [
    # LOINC, UCUM, SNOMED, RxNorm, CVX: standard codes map to themselves.
    ("LOINC", "2345-7", Mapped(3004501, 3004501, "Measurement")),
    ("LOINC", "6690-2", Mapped(2000101001, 2000101001, "Measurement")),
    ("UCUM", "mg/dL", Mapped(8840, 8840, "Unit")),
    ("UCUM", "10*3/uL", Mapped(2000102002, 2000102002, "Unit")),
    ("UCUM", "MG/DL", UNMAPPED),  # UCUM is case-sensitive
    ("SNOMED-CT", "233604007", Mapped(PNEUMONIA, PNEUMONIA, "Condition")),
    ("RxNorm", "723", Mapped(1713332, 1713332, "Drug")),
    ("CVX", "20", Mapped(40213281, 40213281, "Drug")),
    # ICD-10 and ICD-10-CM: source codes, through 'Maps to'.
    ("ICD-10", "J18.9", Mapped(PNEUMONIA, ICD10_J189, "Condition")),
    ("ICD-10", "j189", Mapped(PNEUMONIA, ICD10_J189, "Condition")),  # sent without the dot
    ("ICD-10", "R51", Mapped(HEADACHE, ICD10_R51, "Condition")),  # not its withdrawn map
    ("ICD-10-CM", "K92.2", Mapped(192671, 35208414, "Condition")),
    # KCD: its own concept first, then ICD-10, then the parents.
    ("KCD-7", "E11.9", Mapped(T2DM, KCD7_E119, "Condition")),
    ("KCD-8", "E119", Mapped(T2DM, KCD7_E119, "Condition")),
    ("KCD-8", "J18.9", Mapped(PNEUMONIA, ICD10_J189, "Condition")),  # no KCD7 concept
    ("KCD-9", "E11.90", Mapped(T2DM, 0, "Condition")),  # a KCD subdivision: parent E11.9
    ("KCD-8", "R51.0", Mapped(HEADACHE, 0, "Condition")),  # parent R51 in ICD-10
    ("KCD-7", "U18.1", Mapped(0, KCD7_U181, None)),  # a source concept that maps to nothing
    ("KCD-7", "Z99.9", UNMAPPED),
    # HL7 tables.
    ("HL70001", "M", Mapped(8507, 8507, "Gender")),
    ("HL70001", "F", Mapped(8532, 8532, "Gender")),
    ("HL70001", "U", UNMAPPED),
    ("HL70004", "I", Mapped(9201, 9201, "Visit")),
    ("HL70004", "O", Mapped(9202, 9202, "Visit")),
    ("HL70004", "E", Mapped(9203, 9203, "Visit")),
    ("HL70004", "P", UNMAPPED),
    ("v3-ActCode", "EMER", Mapped(9203, 9203, "Visit")),
    # Unknown codes and systems, and nothing at all.
    ("LOINC", "0000-0", UNMAPPED),
    ("L", "GLU", UNMAPPED),
    (None, "2345-7", UNMAPPED),
    ("LOINC", None, UNMAPPED),
    ("LOINC", " ", UNMAPPED),
]


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_codes_map_to_concepts(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every case on one loaded database per engine (a load per case would be slow)."""
    if engine == "duckdb":
        target = Warehouse("duckdb", tmp_path / "w.duckdb", None)
        _check_mappings(target)
        return
    with fresh_database(request.getfixturevalue("postgres_url"), "vocab") as conninfo:
        _check_mappings(Warehouse("postgresql", None, conninfo))


def _check_mappings(warehouse: Warehouse) -> None:
    warehouse.load(SAMPLE)
    conn = warehouse.connect()
    try:
        lookup = VocabularyLookup(conn, warehouse.dialect)
        got = [(s, c, lookup.map(s, c)) for s, c, _ in MAPPINGS]
    finally:
        conn.close()
    assert got == MAPPINGS


def test_answers_are_cached(lookup: VocabularyLookup) -> None:
    assert lookup.map("LOINC", "718-7") == Mapped(3000963, 3000963, "Measurement")
    assert lookup.queries == 1  # a standard code: its concept only
    lookup.map("KCD-8", "J18.9")
    after_miss = lookup.queries
    assert after_miss == 4  # concepts, their 'Maps to', the targets
    for _ in range(3):
        lookup.map("LOINC", "718-7")
        lookup.map("KCD-8", "J18.9")
        lookup.map("L", "GLU")
    assert lookup.queries == after_miss  # "L" is no vocabulary: no query at all
    lookup.clear()
    lookup.map("LOINC", "718-7")
    assert lookup.queries == after_miss + 1


def test_rebind_keeps_the_cache(warehouse: Warehouse) -> None:
    warehouse.load(SAMPLE)
    first, second = warehouse.connect(), warehouse.connect()
    try:
        lookup = VocabularyLookup(first, warehouse.dialect)
        assert lookup.map("LOINC", "718-7").concept_id == 3000963
        first.close()  # the connection is gone, as after an outage
        lookup.rebind(second)
        assert lookup.map("LOINC", "718-7").concept_id == 3000963  # from the cache
        assert lookup.map("LOINC", "2345-7").concept_id == 3004501  # through the new one
        assert lookup.queries == 2
    finally:
        second.close()


def test_a_bounded_cache_starts_over_when_full(warehouse: Warehouse) -> None:
    warehouse.load(SAMPLE)
    conn = warehouse.connect()
    try:
        lookup = VocabularyLookup(conn, warehouse.dialect, cache_size=2)
        for code in ("718-7", "2345-7", "2160-0", "718-7"):
            lookup.map("LOINC", code)
        assert lookup.queries == 4  # 718-7 again after the cache was emptied
    finally:
        conn.close()


def test_without_a_vocabulary_only_gender_and_visit_fall_back(warehouse: Warehouse) -> None:
    """A warehouse whose vocabulary tables are empty (nothing loaded yet)."""
    conn = warehouse.connect()
    try:
        for table in cdm.VOCABULARY_TABLES:
            conn.execute(cdm.create_table(table, warehouse.dialect))
        lookup = VocabularyLookup(conn, warehouse.dialect)
        assert lookup.map("HL70001", "F") == Mapped(8532, 0, "Gender")
        assert lookup.map("HL70004", "I") == Mapped(9201, 0, "Visit")
        assert lookup.map("v3-ActCode", "AMB") == Mapped(9202, 0, "Visit")
        assert lookup.map("HL70001", "U") == UNMAPPED
        assert lookup.map("LOINC", "2345-7") == UNMAPPED
    finally:
        conn.close()


def test_lookup_in_a_schema(warehouse: Warehouse, tmp_path: Path) -> None:
    load_vocabulary(SAMPLE, path=warehouse.path, url=warehouse.url, schema="omop")
    conn = warehouse.connect()
    try:
        lookup = VocabularyLookup(conn, warehouse.dialect, schema="omop")
        assert lookup.map("LOINC", "2345-7").concept_id == 3004501
    finally:
        conn.close()


def test_icd_parents() -> None:
    assert icd_parents("E11.90") == ["E11.9", "E11"]
    assert icd_parents("R51") == []


# -- unmapped codes --------------------------------------------------------------------------


def test_unmapped_codes_are_counted_per_feed_and_listed(warehouse: Warehouse) -> None:
    counter = UnmappedCounter()
    none = Mapped(0, 0, None)
    assert counter.counted("seoul", "L", "GLU", none) == none
    for _ in range(3):
        counter.counted("busan", "L", "HBA1C", none)
    counter.counted("seoul", "LOINC", "2345-7", Mapped(3004501, 3004501, "Measurement"))
    counter.counted("seoul", None, "X" * 80, none)
    counter.counted("seoul", "L", None, none)  # no code: nothing to fix
    assert len(counter) == 3
    first = counter.drain()
    assert first == {
        ("busan", "L", "HBA1C"): 3,
        ("seoul", "L", "GLU"): 1,
        ("seoul", "", "X" * 50): 1,
    }
    assert len(counter) == 0

    conn = warehouse.connect()
    try:
        assert top_unmapped(conn, warehouse.dialect) == []  # no table yet: nothing recorded
        conn.execute(unmapped_table_statement())
        record_unmapped(conn, warehouse.dialect, first, datetime(2026, 11, 27, 9, 0))
        record_unmapped(
            conn,
            warehouse.dialect,
            {("seoul", "L", "GLU"): 5, ("seoul", "L", "LDL"): 2},
            datetime(2026, 11, 27, 10, 30),
        )
        listed = [
            (r.feed, r.system, r.code, r.count) for r in top_unmapped(conn, warehouse.dialect)
        ]
        assert listed == [
            ("busan", "L", "HBA1C", 3),
            ("seoul", "L", "GLU", 6),
            ("seoul", "L", "LDL", 2),
            ("seoul", "", "X" * 50, 1),
        ]
        glu = top_unmapped(conn, warehouse.dialect, feed="seoul", limit=1)
        assert [(r.code, r.first_seen, r.last_seen) for r in glu] == [
            ("GLU", datetime(2026, 11, 27, 9, 0), datetime(2026, 11, 27, 10, 30))
        ]
        # An older sighting recorded late does not move last_seen back.
        record_unmapped(conn, warehouse.dialect, {("seoul", "L", "GLU"): 1}, datetime(2026, 1, 1))
        glu = top_unmapped(conn, warehouse.dialect, feed="seoul", limit=1)
        assert (glu[0].count, glu[0].last_seen) == (7, datetime(2026, 11, 27, 10, 30))
    finally:
        conn.close()


def test_many_unmapped_codes_are_recorded_in_one_call(warehouse: Warehouse) -> None:
    """More codes than one statement takes (record_unmapped writes them 1000 to a statement)."""
    counts = {("seoul", "L", f"C{i:04d}"): i + 1 for i in range(2500)}
    conn = warehouse.connect()
    try:
        conn.execute(unmapped_table_statement())
        record_unmapped(conn, warehouse.dialect, counts, datetime(2026, 11, 27, 9, 0))
        record_unmapped(conn, warehouse.dialect, counts, datetime(2026, 11, 27, 9, 5))
        listed = top_unmapped(conn, warehouse.dialect, limit=3000)
    finally:
        conn.close()
    assert {(r.feed, r.system, r.code): r.count for r in listed} == {
        key: 2 * count for key, count in counts.items()
    }


# -- the command line (DuckDB; the same loader runs on PostgreSQL above) ----------------------


def _env(path: Path) -> dict[str, str]:
    return {"HL7BUS_WAREHOUSE_PATH": str(path)}


def test_vocab_load_command(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "warehouse.duckdb"
    result = CliRunner().invoke(app, ["warehouse", "vocab", "load", str(SAMPLE)], env=_env(path))
    assert result.exit_code == 0, result.output
    for name in FILES.values():
        assert f"{name}: {sample_rows(name):,} rows in " in result.output
    total = sum(sample_rows(name) for name in FILES.values())
    assert f"vocabulary loaded: {total:,} rows into DuckDB" in result.output
    again = CliRunner().invoke(app, ["warehouse", "vocab", "load", "--sample"], env=_env(path))
    assert again.exit_code == 0, again.output
    assert Warehouse("duckdb", path, None).count("concept") == sample_rows("CONCEPT.csv")


def test_vocab_load_command_errors(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "warehouse.duckdb"
    folder = _broken(tmp_path, "CONCEPT.csv", 6, _set(0, "six"))
    result = CliRunner().invoke(app, ["warehouse", "vocab", "load", str(folder)], env=_env(path))
    assert result.exit_code == 2
    assert f"{folder}/CONCEPT.csv:6: column concept_id: not an integer" in result.output
    neither = CliRunner().invoke(app, ["warehouse", "vocab", "load"], env=_env(path))
    assert neither.exit_code == 2
    assert "give the folder of an Athena download, or --sample" in neither.output


def test_unmapped_command(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "warehouse.duckdb"
    missing = CliRunner().invoke(app, ["warehouse", "unmapped"], env=_env(path))
    assert missing.exit_code == 1 and "no warehouse at" in missing.output
    conn = duckdb.connect(str(path))
    conn.execute(unmapped_table_statement())
    record_unmapped(
        conn,
        "duckdb",
        {("seoul", "L", "GLU"): 9, ("seoul", "L", "LDL"): 4, ("busan", "99DX", "DM2"): 2},
        datetime(2026, 11, 27, 10, 30),
    )
    conn.close()
    result = CliRunner().invoke(app, ["warehouse", "unmapped", "--limit", "1"], env=_env(path))
    assert result.exit_code == 0, result.output
    assert "GLU" in result.output and "DM2" in result.output and "LDL" not in result.output
    busan = CliRunner().invoke(app, ["warehouse", "unmapped", "--feed", "busan"], env=_env(path))
    assert "DM2" in busan.output and "GLU" not in busan.output
    other = CliRunner().invoke(app, ["warehouse", "unmapped", "--feed", "daegu"], env=_env(path))
    assert "no unmapped codes recorded for feed daegu" in other.output
