"""Source codes -> OMOP concepts, answered from the loaded vocabulary tables (ConceptLookup).

For each (system, code) the sink asks about:

1. systems.csv names the Athena vocabularies the system's codes live in (LOINC -> LOINC,
   SNOMED-CT -> SNOMED, KCD-8 -> KCD8, KCD7, then ICD10, ...), and hl7_tables.csv turns an HL7
   table code into the OMOP concept that stands for it (HL70001 M -> Gender M, HL70004 I ->
   Visit IP);
2. the code's own concept there is the source concept (source_concept_id);
3. the standard concept is the code's concept itself when it is standard ('S', valid), else the
   valid standard concept it 'Maps to' in concept_relationship; its domain_id decides the table;
4. ICD-style systems marked `parents` (KCD) fall back to the code's parents, E11.90 -> E11.9 ->
   E11, when no vocabulary has the code itself; the parent maps the fact, and source_concept_id
   stays 0 unless some vocabulary has the exact code.

Nothing found -> concept 0 (UNMAPPED, or concept 0 with the source concept when the source code
exists but maps to no standard concept). When a code 'Maps to' several standard concepts, the one
with the lowest concept_id is taken: the interface answers with one concept per code.

Each (system, code) is resolved by one to three small queries, then kept in memory: a feed uses
a few thousand distinct codes, and a full Athena download (millions of concepts) is too big to
hold in a Python process. `hl7bus bench vocab` measures a cached answer against a plain dict
lookup, and the cost of a miss (BENCHMARKS.md). The cache lives as long as the lookup: after
loading a new vocabulary, restart the sink (or call clear()).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from hl7bus.connectors.warehouse.cdm import Dialect
from hl7bus.connectors.warehouse.concepts import UNMAPPED, Mapped
from hl7bus.schemas.datafile import csv_rows


def _words(value: object) -> object:
    return value.split() if isinstance(value, str) else value


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


class SystemRule(BaseModel):
    """One row of systems.csv: where a coding system's codes are looked up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1, description="Coding system as events name it.")
    vocabularies: Annotated[
        tuple[str, ...],
        BeforeValidator(_words),
        Field(min_length=1, description="Athena vocabulary_ids, space-separated, tried in order."),
    ]
    form: Literal["exact", "icd"] = Field(
        description="exact: the code as it is; icd: upper case, and E119 also tried as E11.9."
    )
    parents: bool = Field(
        description="yes: an unknown code falls back to its parents (E11.90 -> E11.9 -> E11)."
    )


class TableCode(BaseModel):
    """One row of hl7_tables.csv: an HL7 table code and the OMOP concept standing for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str = Field(min_length=1, description="HL7 table id (HL70001) or code system.")
    code: str = Field(min_length=1, description="The table's code.")
    vocabulary_id: str = Field(min_length=1, description="Athena vocabulary of the concept.")
    concept_code: str = Field(min_length=1, description="concept_code of the concept there.")
    fallback_concept_id: Annotated[
        int | None,
        BeforeValidator(_empty_is_none),
        Field(description="Concept used when the vocabulary lacks it (fixed OMOP ids only)."),
    ] = None
    fallback_domain_id: Annotated[
        str | None,
        BeforeValidator(_empty_is_none),
        Field(description="Domain of the fallback concept."),
    ] = None


@cache
def system_rules() -> dict[str, SystemRule]:
    """systems.csv by system name, plus the upper-cased names (looked up second)."""
    file = resources.files(__package__).joinpath("systems.csv")
    rules = {
        r.system: r
        for r in csv_rows(
            SystemRule, file, "vocabulary systems connectors/warehouse/vocabulary/systems.csv"
        )
    }
    return rules | {name.upper(): rule for name, rule in rules.items() if name.upper() not in rules}


@cache
def table_codes() -> dict[tuple[str, str], TableCode]:
    file = resources.files(__package__).joinpath("hl7_tables.csv")
    source = "HL7 table map connectors/warehouse/vocabulary/hl7_tables.csv"
    return {(r.system.upper(), r.code.upper()): r for r in csv_rows(TableCode, file, source)}


def icd_parents(code: str) -> list[str]:
    """E11.90 -> [E11.9, E11]: cut one character at a time, down to the 3-character category."""
    parents = []
    while len(code) > 3:
        code = code[:-1].removesuffix(".")
        parents.append(code)
    return parents


@dataclass(frozen=True)
class Candidate:
    vocabulary_id: str
    concept_code: str
    exact: bool  # the code itself (not a parent): its concept is the source concept


def candidates(rule: SystemRule, code: str) -> list[Candidate]:
    """Where to look `code` up, best first: the code in each vocabulary, then its parents."""
    forms = [code]
    if rule.form == "icd":
        code = code.upper()
        forms = [code]
        if "." not in code and len(code) > 3:
            forms.append(f"{code[:3]}.{code[3:]}")
    found = [Candidate(v, f, True) for f in forms for v in rule.vocabularies]
    if rule.parents:
        found += [Candidate(v, p, False) for p in icd_parents(forms[-1]) for v in rule.vocabularies]
    return found


@dataclass
class _Concept:
    concept_id: int
    standard: bool
    domain_id: str
    targets: list[tuple[int, str]] = field(default_factory=list)


class VocabularyLookup:
    """ConceptLookup over the vocabulary tables of a warehouse database.

    `conn` is a DuckDB connection (give the sink's `conn.cursor()`: a second connection to the
    same database) or a psycopg 3 connection, best in autocommit mode so the lookup's queries
    open no transaction of their own. `schema` holds the vocabulary tables (None: the default).
    Not thread-safe. Raises the driver's error when the database fails, never for a code.
    """

    def __init__(
        self, conn: Any, dialect: Dialect, schema: str | None = None, cache_size: int = 100_000
    ) -> None:
        self._conn = conn
        self._mark = "?" if dialect == "duckdb" else "%s"
        prefix = f"{schema}." if schema else ""
        self._concept = f"{prefix}concept"
        self._relationship = f"{prefix}concept_relationship"
        self._cache: dict[tuple[str | None, str | None], Mapped] = {}
        self._cache_size = cache_size
        self.queries = 0  # database queries so far (one to three per code not yet cached)

    def map(self, system: str | None, code: str | None) -> Mapped:
        key = (system, code)
        found = self._cache.get(key)  # the sink's steady state: one dict lookup
        if found is None:
            found = self._resolve(system, code)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # rare: a bounded cache without per-call bookkeeping
            self._cache[key] = found
        return found

    def clear(self) -> None:
        """Forget every answer (after a new vocabulary was loaded)."""
        self._cache.clear()

    def rebind(self, conn: Any) -> None:
        """Query through `conn` from now on (the sink reconnected after an outage); the answers
        cached so far stay."""
        self._conn = conn

    def _resolve(self, system: str | None, code: str | None) -> Mapped:
        code = (code or "").strip()
        if not system or not code:
            return UNMAPPED
        table_code = table_codes().get((system.upper(), code.upper()))
        if table_code is not None:
            wanted = [Candidate(table_code.vocabulary_id, table_code.concept_code, True)]
            mapped = self._first_mapped(wanted)
            absent = mapped.concept_id == 0 and mapped.source_concept_id == 0
            if absent and table_code.fallback_concept_id is not None:
                return Mapped(table_code.fallback_concept_id, 0, table_code.fallback_domain_id)
            return mapped
        rule = system_rules().get(system) or system_rules().get(system.upper())
        if rule is None:
            return UNMAPPED
        return self._first_mapped(candidates(rule, code))

    def _first_mapped(self, wanted: Sequence[Candidate]) -> Mapped:
        concepts = self._concepts(wanted)
        source = 0
        for candidate in wanted:
            # Athena keeps (vocabulary_id, concept_code) unique but for rare deprecated twins:
            # a valid standard one first, then one that maps.
            found = concepts.get((candidate.vocabulary_id, candidate.concept_code), [])
            found = sorted(found, key=lambda c: (not c.standard, not c.targets, c.concept_id))
            if not found:
                continue
            concept = found[0]
            if candidate.exact and source == 0:
                source = concept.concept_id
            if concept.standard:
                return Mapped(concept.concept_id, source, concept.domain_id)
            if concept.targets:
                target, domain = min(concept.targets)
                return Mapped(target, source, domain)
        return Mapped(0, source, None) if source else UNMAPPED

    def _concepts(self, wanted: Sequence[Candidate]) -> dict[tuple[str, str], list[_Concept]]:
        """The concepts of the candidates, with their valid 'Maps to' standard targets.

        Three plain queries rather than one join: each filters one indexed column only, which
        DuckDB answers from its ART index (a join, or a second predicate, makes it scan the
        table: milliseconds instead of a fraction of one on a full Athena download), and
        PostgreSQL answers just as fast. The rest is filtered here."""
        codes = sorted({c.concept_code for c in wanted})
        vocabularies = {c.vocabulary_id for c in wanted}
        found: dict[tuple[str, str], list[_Concept]] = {}
        by_id: dict[int, _Concept] = {}
        rows = self._query(
            f"SELECT concept_id, vocabulary_id, concept_code, standard_concept, invalid_reason, "
            f"domain_id FROM {self._concept} WHERE concept_code IN ({self._marks(codes)})",
            codes,
        )
        for concept_id, vocabulary_id, code, standard, invalid, domain in rows:
            if vocabulary_id in vocabularies:
                concept = _Concept(concept_id, standard == "S" and invalid is None, domain)
                by_id[concept_id] = concept
                found.setdefault((vocabulary_id, code), []).append(concept)
        sources = sorted(i for i, c in by_id.items() if not c.standard)
        if not sources:
            return found
        maps_to: list[tuple[int, int]] = [
            (source, target)
            for source, target, relationship, invalid in self._query(
                f"SELECT concept_id_1, concept_id_2, relationship_id, invalid_reason "
                f"FROM {self._relationship} WHERE concept_id_1 IN ({self._marks(sources)})",
                sources,
            )
            if relationship == "Maps to" and invalid is None
        ]
        targets = sorted({target for _, target in maps_to})
        if not targets:
            return found
        domains: dict[int, str] = {
            concept_id: domain
            for concept_id, flag, invalid, domain in self._query(
                f"SELECT concept_id, standard_concept, invalid_reason, domain_id "
                f"FROM {self._concept} WHERE concept_id IN ({self._marks(targets)})",
                targets,
            )
            if flag == "S" and invalid is None
        }
        for source, target in maps_to:
            if target in domains:
                by_id[source].targets.append((target, domains[target]))
        return found

    def _marks(self, values: Sequence[object]) -> str:
        return ", ".join(self._mark for _ in values)

    def _query(self, query: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        self.queries += 1
        rows: list[tuple[Any, ...]] = self._conn.execute(query, list(params)).fetchall()
        return rows
