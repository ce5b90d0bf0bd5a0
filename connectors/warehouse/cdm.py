"""The OMOP CDM v5.4 tables as data, and their CREATE TABLE statements for DuckDB or PostgreSQL.

One definition serves both engines: each table is its columns in the order v5.4 gives them,
each column with its logical type, whether it is required (NOT NULL) and whether it is the
primary key. The names, order, NOT NULL and primary keys are v5.4's (its field-level
specification, OMOP_CDMv5.4_Field_Level.csv of OHDSI/CommonDataModel); tests compare the
created schema with a column list taken from that file (tests/test_warehouse_cdm.py).

Where we depart from OHDSI's own DDL, and why:
- Surrogate ids (person_id, visit_occurrence_id, every integer ``*_id`` that is not a concept
  id) are BIGINT, which v5.4 allows: they come from our key map and must not run out.
  Concept ids stay INTEGER, as the vocabulary hands them out.
- ``float`` is DOUBLE on both engines. OHDSI renders it NUMERIC, which in DuckDB means
  DECIMAL(18,3) and would round values to three decimals; DOUBLE also reads back as the same
  Python type from both engines.
- ``varchar(MAX)`` is TEXT. DuckDB keeps no VARCHAR length; PostgreSQL keeps and enforces it.
- Foreign keys are not declared (OHDSI ships them as a separate, optional step); the data
  quality check resolves them instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Dialect = Literal["duckdb", "postgresql"]

# Logical types, as v5.4 names them (BIGINT is our widening of integer ids, TEXT is varchar(MAX)).
INTEGER = "integer"
BIGINT = "bigint"
FLOAT = "float"
DATE = "date"
DATETIME = "datetime"
TEXT = "text"


def varchar(length: int) -> str:
    return f"varchar({length})"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    pk: bool = False


def pk(name: str, type_: str) -> Column:
    """The table's primary key (required too)."""
    return Column(name, type_, required=True, pk=True)


def req(name: str, type_: str) -> Column:
    return Column(name, type_, required=True)


def opt(name: str, type_: str) -> Column:
    return Column(name, type_, required=False)


TABLES: dict[str, tuple[Column, ...]] = {
    "person": (
        pk("person_id", BIGINT),
        req("gender_concept_id", INTEGER),
        req("year_of_birth", INTEGER),
        opt("month_of_birth", INTEGER),
        opt("day_of_birth", INTEGER),
        opt("birth_datetime", DATETIME),
        req("race_concept_id", INTEGER),
        req("ethnicity_concept_id", INTEGER),
        opt("location_id", BIGINT),
        opt("provider_id", BIGINT),
        opt("care_site_id", BIGINT),
        opt("person_source_value", varchar(50)),
        opt("gender_source_value", varchar(50)),
        opt("gender_source_concept_id", INTEGER),
        opt("race_source_value", varchar(50)),
        opt("race_source_concept_id", INTEGER),
        opt("ethnicity_source_value", varchar(50)),
        opt("ethnicity_source_concept_id", INTEGER),
    ),
    "observation_period": (
        pk("observation_period_id", BIGINT),
        req("person_id", BIGINT),
        req("observation_period_start_date", DATE),
        req("observation_period_end_date", DATE),
        req("period_type_concept_id", INTEGER),
    ),
    "visit_occurrence": (
        pk("visit_occurrence_id", BIGINT),
        req("person_id", BIGINT),
        req("visit_concept_id", INTEGER),
        req("visit_start_date", DATE),
        opt("visit_start_datetime", DATETIME),
        req("visit_end_date", DATE),
        opt("visit_end_datetime", DATETIME),
        req("visit_type_concept_id", INTEGER),
        opt("provider_id", BIGINT),
        opt("care_site_id", BIGINT),
        opt("visit_source_value", varchar(50)),
        opt("visit_source_concept_id", INTEGER),
        opt("admitted_from_concept_id", INTEGER),
        opt("admitted_from_source_value", varchar(50)),
        opt("discharged_to_concept_id", INTEGER),
        opt("discharged_to_source_value", varchar(50)),
        opt("preceding_visit_occurrence_id", BIGINT),
    ),
    "visit_detail": (
        pk("visit_detail_id", BIGINT),
        req("person_id", BIGINT),
        req("visit_detail_concept_id", INTEGER),
        req("visit_detail_start_date", DATE),
        opt("visit_detail_start_datetime", DATETIME),
        req("visit_detail_end_date", DATE),
        opt("visit_detail_end_datetime", DATETIME),
        req("visit_detail_type_concept_id", INTEGER),
        opt("provider_id", BIGINT),
        opt("care_site_id", BIGINT),
        opt("visit_detail_source_value", varchar(50)),
        opt("visit_detail_source_concept_id", INTEGER),
        opt("admitted_from_concept_id", INTEGER),
        opt("admitted_from_source_value", varchar(50)),
        opt("discharged_to_source_value", varchar(50)),
        opt("discharged_to_concept_id", INTEGER),
        opt("preceding_visit_detail_id", BIGINT),
        opt("parent_visit_detail_id", BIGINT),
        req("visit_occurrence_id", BIGINT),
    ),
    "condition_occurrence": (
        pk("condition_occurrence_id", BIGINT),
        req("person_id", BIGINT),
        req("condition_concept_id", INTEGER),
        req("condition_start_date", DATE),
        opt("condition_start_datetime", DATETIME),
        opt("condition_end_date", DATE),
        opt("condition_end_datetime", DATETIME),
        req("condition_type_concept_id", INTEGER),
        opt("condition_status_concept_id", INTEGER),
        opt("stop_reason", varchar(20)),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("condition_source_value", varchar(50)),
        opt("condition_source_concept_id", INTEGER),
        opt("condition_status_source_value", varchar(50)),
    ),
    "drug_exposure": (
        pk("drug_exposure_id", BIGINT),
        req("person_id", BIGINT),
        req("drug_concept_id", INTEGER),
        req("drug_exposure_start_date", DATE),
        opt("drug_exposure_start_datetime", DATETIME),
        req("drug_exposure_end_date", DATE),
        opt("drug_exposure_end_datetime", DATETIME),
        opt("verbatim_end_date", DATE),
        req("drug_type_concept_id", INTEGER),
        opt("stop_reason", varchar(20)),
        opt("refills", INTEGER),
        opt("quantity", FLOAT),
        opt("days_supply", INTEGER),
        opt("sig", TEXT),
        opt("route_concept_id", INTEGER),
        opt("lot_number", varchar(50)),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("drug_source_value", varchar(50)),
        opt("drug_source_concept_id", INTEGER),
        opt("route_source_value", varchar(50)),
        opt("dose_unit_source_value", varchar(50)),
    ),
    "procedure_occurrence": (
        pk("procedure_occurrence_id", BIGINT),
        req("person_id", BIGINT),
        req("procedure_concept_id", INTEGER),
        req("procedure_date", DATE),
        opt("procedure_datetime", DATETIME),
        opt("procedure_end_date", DATE),
        opt("procedure_end_datetime", DATETIME),
        req("procedure_type_concept_id", INTEGER),
        opt("modifier_concept_id", INTEGER),
        opt("quantity", INTEGER),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("procedure_source_value", varchar(50)),
        opt("procedure_source_concept_id", INTEGER),
        opt("modifier_source_value", varchar(50)),
    ),
    "measurement": (
        pk("measurement_id", BIGINT),
        req("person_id", BIGINT),
        req("measurement_concept_id", INTEGER),
        req("measurement_date", DATE),
        opt("measurement_datetime", DATETIME),
        opt("measurement_time", varchar(10)),
        req("measurement_type_concept_id", INTEGER),
        opt("operator_concept_id", INTEGER),
        opt("value_as_number", FLOAT),
        opt("value_as_concept_id", INTEGER),
        opt("unit_concept_id", INTEGER),
        opt("range_low", FLOAT),
        opt("range_high", FLOAT),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("measurement_source_value", varchar(50)),
        opt("measurement_source_concept_id", INTEGER),
        opt("unit_source_value", varchar(50)),
        opt("unit_source_concept_id", INTEGER),
        opt("value_source_value", varchar(50)),
        opt("measurement_event_id", BIGINT),
        opt("meas_event_field_concept_id", INTEGER),
    ),
    "observation": (
        pk("observation_id", BIGINT),
        req("person_id", BIGINT),
        req("observation_concept_id", INTEGER),
        req("observation_date", DATE),
        opt("observation_datetime", DATETIME),
        req("observation_type_concept_id", INTEGER),
        opt("value_as_number", FLOAT),
        opt("value_as_string", varchar(60)),
        opt("value_as_concept_id", INTEGER),
        opt("qualifier_concept_id", INTEGER),
        opt("unit_concept_id", INTEGER),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("observation_source_value", varchar(50)),
        opt("observation_source_concept_id", INTEGER),
        opt("unit_source_value", varchar(50)),
        opt("qualifier_source_value", varchar(50)),
        opt("value_source_value", varchar(50)),
        opt("observation_event_id", BIGINT),
        opt("obs_event_field_concept_id", INTEGER),
    ),
    "death": (
        req("person_id", BIGINT),
        req("death_date", DATE),
        opt("death_datetime", DATETIME),
        opt("death_type_concept_id", INTEGER),
        opt("cause_concept_id", INTEGER),
        opt("cause_source_value", varchar(50)),
        opt("cause_source_concept_id", INTEGER),
    ),
    "note": (
        pk("note_id", BIGINT),
        req("person_id", BIGINT),
        req("note_date", DATE),
        opt("note_datetime", DATETIME),
        req("note_type_concept_id", INTEGER),
        req("note_class_concept_id", INTEGER),
        opt("note_title", varchar(250)),
        req("note_text", TEXT),
        req("encoding_concept_id", INTEGER),
        req("language_concept_id", INTEGER),
        opt("provider_id", BIGINT),
        opt("visit_occurrence_id", BIGINT),
        opt("visit_detail_id", BIGINT),
        opt("note_source_value", varchar(50)),
        opt("note_event_id", BIGINT),
        opt("note_event_field_concept_id", INTEGER),
    ),
    "specimen": (
        pk("specimen_id", BIGINT),
        req("person_id", BIGINT),
        req("specimen_concept_id", INTEGER),
        req("specimen_type_concept_id", INTEGER),
        req("specimen_date", DATE),
        opt("specimen_datetime", DATETIME),
        opt("quantity", FLOAT),
        opt("unit_concept_id", INTEGER),
        opt("anatomic_site_concept_id", INTEGER),
        opt("disease_status_concept_id", INTEGER),
        opt("specimen_source_id", varchar(50)),
        opt("specimen_source_value", varchar(50)),
        opt("unit_source_value", varchar(50)),
        opt("anatomic_site_source_value", varchar(50)),
        opt("disease_status_source_value", varchar(50)),
    ),
    "location": (
        pk("location_id", BIGINT),
        opt("address_1", varchar(50)),
        opt("address_2", varchar(50)),
        opt("city", varchar(50)),
        opt("state", varchar(2)),
        opt("zip", varchar(9)),
        opt("county", varchar(20)),
        opt("location_source_value", varchar(50)),
        opt("country_concept_id", INTEGER),
        opt("country_source_value", varchar(80)),
        opt("latitude", FLOAT),
        opt("longitude", FLOAT),
    ),
    "care_site": (
        pk("care_site_id", BIGINT),
        opt("care_site_name", varchar(255)),
        opt("place_of_service_concept_id", INTEGER),
        opt("location_id", BIGINT),
        opt("care_site_source_value", varchar(50)),
        opt("place_of_service_source_value", varchar(50)),
    ),
    "provider": (
        pk("provider_id", BIGINT),
        opt("provider_name", varchar(255)),
        opt("npi", varchar(20)),
        opt("dea", varchar(20)),
        opt("specialty_concept_id", INTEGER),
        opt("care_site_id", BIGINT),
        opt("year_of_birth", INTEGER),
        opt("gender_concept_id", INTEGER),
        opt("provider_source_value", varchar(50)),
        opt("specialty_source_value", varchar(50)),
        opt("specialty_source_concept_id", INTEGER),
        opt("gender_source_value", varchar(50)),
        opt("gender_source_concept_id", INTEGER),
    ),
    "cdm_source": (
        req("cdm_source_name", varchar(255)),
        req("cdm_source_abbreviation", varchar(25)),
        req("cdm_holder", varchar(255)),
        opt("source_description", TEXT),
        opt("source_documentation_reference", varchar(255)),
        opt("cdm_etl_reference", varchar(255)),
        req("source_release_date", DATE),
        req("cdm_release_date", DATE),
        opt("cdm_version", varchar(10)),
        req("cdm_version_concept_id", INTEGER),
        req("vocabulary_version", varchar(20)),
    ),
    "concept": (
        pk("concept_id", INTEGER),
        req("concept_name", varchar(255)),
        req("domain_id", varchar(20)),
        req("vocabulary_id", varchar(20)),
        req("concept_class_id", varchar(20)),
        opt("standard_concept", varchar(1)),
        req("concept_code", varchar(50)),
        req("valid_start_date", DATE),
        req("valid_end_date", DATE),
        opt("invalid_reason", varchar(1)),
    ),
    "vocabulary": (
        pk("vocabulary_id", varchar(20)),
        req("vocabulary_name", varchar(255)),
        opt("vocabulary_reference", varchar(255)),
        opt("vocabulary_version", varchar(255)),
        req("vocabulary_concept_id", INTEGER),
    ),
    "domain": (
        pk("domain_id", varchar(20)),
        req("domain_name", varchar(255)),
        req("domain_concept_id", INTEGER),
    ),
    "concept_class": (
        pk("concept_class_id", varchar(20)),
        req("concept_class_name", varchar(255)),
        req("concept_class_concept_id", INTEGER),
    ),
    "concept_relationship": (
        req("concept_id_1", INTEGER),
        req("concept_id_2", INTEGER),
        req("relationship_id", varchar(20)),
        req("valid_start_date", DATE),
        req("valid_end_date", DATE),
        opt("invalid_reason", varchar(1)),
    ),
    "relationship": (
        pk("relationship_id", varchar(20)),
        req("relationship_name", varchar(255)),
        req("is_hierarchical", varchar(1)),
        req("defines_ancestry", varchar(1)),
        req("reverse_relationship_id", varchar(20)),
        req("relationship_concept_id", INTEGER),
    ),
    "concept_synonym": (
        req("concept_id", INTEGER),
        req("concept_synonym_name", varchar(1000)),
        req("language_concept_id", INTEGER),
    ),
    "concept_ancestor": (
        req("ancestor_concept_id", INTEGER),
        req("descendant_concept_id", INTEGER),
        req("min_levels_of_separation", INTEGER),
        req("max_levels_of_separation", INTEGER),
    ),
}

# The standardized vocabulary tables: loaded from an Athena download, not written by the sink.
VOCABULARY_TABLES = (
    "concept",
    "vocabulary",
    "domain",
    "concept_class",
    "concept_relationship",
    "relationship",
    "concept_synonym",
    "concept_ancestor",
)

_ENGINE_TYPES: dict[Dialect, dict[str, str]] = {
    "duckdb": {
        INTEGER: "INTEGER",
        BIGINT: "BIGINT",
        FLOAT: "DOUBLE",
        DATE: "DATE",
        DATETIME: "TIMESTAMP",
        TEXT: "TEXT",
    },
    "postgresql": {
        INTEGER: "INTEGER",
        BIGINT: "BIGINT",
        FLOAT: "DOUBLE PRECISION",
        DATE: "DATE",
        DATETIME: "TIMESTAMP",
        TEXT: "TEXT",
    },
}

_VARCHAR = re.compile(r"varchar\((\d+)\)")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def engine_type(type_: str, dialect: Dialect) -> str:
    """The column type `dialect` declares for one of the logical types above."""
    length = _VARCHAR.fullmatch(type_)
    if length:
        return f"VARCHAR({length.group(1)})"
    return _ENGINE_TYPES[dialect][type_]


def create_table(table: str, dialect: Dialect, schema: str | None = None) -> str:
    """CREATE TABLE IF NOT EXISTS for one table, optionally inside `schema`.

    In DuckDB a schema must not be named like the database file's stem (``cdm`` in
    ``cdm.duckdb``): the catalog takes that name, and ``cdm.person`` becomes ambiguous.
    """
    columns = TABLES[table]
    if schema is not None and not _IDENTIFIER.fullmatch(schema):
        raise ValueError(f"not a plain SQL identifier: {schema!r}")
    name = f"{schema}.{table}" if schema else table
    lines = [
        f"    {c.name} {engine_type(c.type, dialect)}{' NOT NULL' if c.required else ''}"
        for c in columns
    ]
    keys = [c.name for c in columns if c.pk]
    if keys:
        lines.append(f"    CONSTRAINT xpk_{table} PRIMARY KEY ({', '.join(keys)})")
    body = ",\n".join(lines)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n{body}\n)"


def create_statements(dialect: Dialect, schema: str | None = None) -> list[str]:
    """CREATE TABLE IF NOT EXISTS for every table, in definition order."""
    return [create_table(table, dialect, schema) for table in TABLES]
