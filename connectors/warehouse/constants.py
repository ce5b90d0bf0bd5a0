"""OMOP concept ids the mapping sets without asking the vocabulary.

Type concepts and value operators are fixed ETL choices, the same with or without an Athena
vocabulary. Gender and visit concepts are answered by the vocabulary (HL7 tables 0001, 0004)
when it knows them; these few standard ids are the fallback, so a warehouse without a loaded
vocabulary still tells men from women and inpatients from outpatients.
"""

from __future__ import annotations

# Type Concept vocabulary: where a record came from.
EHR = 32817  # "EHR": every record the bus writes comes from a hospital system
EHR_ADMINISTRATION = 32818  # "EHR administration record": RXA administrations, immunizations

# Meas Value Operator (SNOMED): the comparator of a result such as "<0.5".
OPERATORS = {
    "<": 4171756,
    "<=": 4171754,
    "=": 4172703,
    ">=": 4171755,
    ">": 4172704,
}

# Fallbacks for HL7 table 0001 (administrative sex) and 0004 (patient class).
GENDER = {"M": 8507, "F": 8532}
VISIT = {"I": 9201, "O": 9202, "E": 9203}

# Condition status by DG1-15 priority: 1 is the primary diagnosis, any other the secondary.
PRIMARY_DIAGNOSIS = 32902
SECONDARY_DIAGNOSIS = 32908

UTF8 = 32678  # note.encoding_concept_id: the bus decodes every message to Unicode
CDM_V54 = 756265  # cdm_source.cdm_version_concept_id
