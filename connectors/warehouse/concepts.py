"""What the warehouse mapping needs of a vocabulary: a source code -> OMOP concept ids.

The mapping (research event -> OMOP rows) asks one question per coded value: which standard
concept, in which domain, and which source concept does this (system, code) stand for. The
vocabulary loaded from an OHDSI Athena download answers it (connectors/warehouse/vocabulary/);
without one every code is unmapped but sex and patient class, which fall back to OMOP's fixed
standard Gender and Visit concepts. An unmapped code gets concept 0, its source value is kept in
the *_source_value column, and it is counted so a terminologist can fix the maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Mapped:
    """One source code's concepts. ``concept_id`` 0 means unmapped (OMOP's "No matching
    concept"); ``domain_id`` is the standard concept's domain (Measurement, Observation,
    Condition, Drug, Procedure, Device, Gender, Visit, Unit, Meas Value, ...), None when
    unmapped, and decides the table a fact lands in."""

    concept_id: int
    source_concept_id: int
    domain_id: str | None


UNMAPPED = Mapped(0, 0, None)


class ConceptLookup(Protocol):
    """Maps (system, code) to concepts. ``system`` is the event's standard system when it has
    one (``standard_system``: LOINC, SNOMED-CT, ICD-10, KCD-8, RxNorm, CVX, ...), else the
    system as sent; ``UCUM`` for units; HL7 tables by their table id (``HL70001`` sex,
    ``HL70004`` patient class). Never raises for an unknown code: it returns UNMAPPED."""

    def map(self, system: str | None, code: str | None) -> Mapped: ...


class NoVocabulary:
    """The lookup of a warehouse with no vocabulary loaded: every code is unmapped."""

    def map(self, system: str | None, code: str | None) -> Mapped:
        return UNMAPPED
