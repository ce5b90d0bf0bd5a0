"""Research events -> OMOP CDM shaped rows (pure). The tables are a thin subset of OMOP v5.4.

No source identifier reaches these tables: person_source_value is the keyed pseudonym, and
ids are derived from pseudonyms and event ids, never from MRNs.
"""

from __future__ import annotations

import hashlib
from typing import Any

# Gender concepts of OMOP's standard vocabulary; anything else is 0 (unmapped), per OMOP.
_GENDER_CONCEPT = {"M": 8507, "F": 8532}

DDL = (
    """
    CREATE TABLE IF NOT EXISTS person (
        person_id BIGINT PRIMARY KEY,
        person_source_value VARCHAR NOT NULL,
        gender_concept_id INTEGER NOT NULL,
        gender_source_value VARCHAR,
        year_of_birth INTEGER,
        source_event_id VARCHAR NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS measurement (
        measurement_id BIGINT PRIMARY KEY,
        person_id BIGINT NOT NULL,
        measurement_concept_id INTEGER NOT NULL,
        measurement_source_value VARCHAR,
        measurement_datetime TIMESTAMPTZ,
        operator_source_value VARCHAR,
        value_as_number DOUBLE,
        unit_source_value VARCHAR,
        range_source_value VARCHAR,
        abnormal_flag_source_value VARCHAR,
        result_status_source_value VARCHAR,
        source_event_id VARCHAR NOT NULL
    )
    """,
)

PERSON_COLUMNS = (
    "person_id",
    "person_source_value",
    "gender_concept_id",
    "gender_source_value",
    "year_of_birth",
    "source_event_id",
    "updated_at",
)
MEASUREMENT_COLUMNS = (
    "measurement_id",
    "person_id",
    "measurement_concept_id",
    "measurement_source_value",
    "measurement_datetime",
    "operator_source_value",
    "value_as_number",
    "unit_source_value",
    "range_source_value",
    "abnormal_flag_source_value",
    "result_status_source_value",
    "source_event_id",
)


def stable_id(text: str) -> int:
    """A positive 63-bit id from a string, the same in every run and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def person_row(event: dict[str, Any]) -> tuple[Any, ...]:
    pseudonym = event["patient_key"]
    return (
        stable_id(pseudonym),
        pseudonym,
        _GENDER_CONCEPT.get(event.get("sex") or "", 0),
        event.get("sex"),
        event.get("birth_year"),
        event["event_id"],
        event.get("event_time") or event["received_at"],
    )


def measurement_row(event: dict[str, Any]) -> tuple[Any, ...]:
    source_code = event.get("code")
    if source_code and event.get("code_system"):
        source_code = f"{event['code_system']}:{source_code}"
    return (
        stable_id(event["event_id"]),
        stable_id(event["patient_key"]),
        0,  # concept mapping arrives with the code maps of normalization
        source_code,
        event.get("event_time"),
        event.get("comparator"),
        event.get("value_numeric"),
        event.get("units"),
        event.get("reference_range"),
        event.get("abnormal_flags"),
        event.get("result_status"),
        event["event_id"],
    )
