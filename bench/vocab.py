"""``hl7bus bench vocab``: what a concept lookup costs the sink, per call, and what loading costs.

The sink calls ``VocabularyLookup.map(system, code)`` for every coded value. Input: a synthetic
Athena download written in the real format (``write_synthetic``): ``concepts`` concepts, half of
them standard (SNOMED-like), half source codes (ICD-10-like, E11.9 style) that 'Maps to' a
standard one; every standard concept maps to itself, as in Athena; plus an 'Is a' edge, a
synonym and an ancestor row per concept, so the tables have Athena's proportions.

Figures, per engine (DuckDB always; PostgreSQL with ``--postgres-url``):

* ``load``: the bulk load (load_vocabulary), rows/s;
* ``warm_ns_per_call``: ``map`` on codes it has answered before (the sink's steady state, a
  feed uses a few thousand distinct codes), against the peer, a plain ``dict.get`` of the same
  (system, code) keys: the floor of any in-memory design;
* ``cold_us_per_call``: the first ``map`` of a code: one query (a cache miss);
* ``preload``: the other design, every concept resolved into a dict up front: seconds and MB of
  Python memory per 100,000 concepts (a full Athena download has about 6 million concepts and
  35 million 'Maps to' rows; RxNorm, SNOMED and LOINC alone are about 2.5 million).

Interleaved rounds for the warm figures; the machines are noisy, read the ratio.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from hl7bus.connectors.warehouse.vocabulary import VocabularyLookup, load_vocabulary

START, END = "19700101", "20991231"


def _source_code(i: int) -> str:
    """An ICD-10-like code, unique per i: letter, two digits, dot, subdivision."""
    return f"{chr(65 + i % 26)}{i // 26 % 100:02d}.{i // 2600}"


def write_synthetic(folder: Path, concepts: int) -> dict[str, int]:
    """A synthetic Athena download of `concepts` concepts; rows written per file."""
    folder.mkdir(parents=True, exist_ok=True)
    half = concepts // 2
    counts: dict[str, int] = {}

    def write(name: str, header: str, rows: Any) -> None:
        n = 0
        with (folder / name).open("w", encoding="utf-8", newline="\n") as file:
            file.write(header + "\n")
            for row in rows:
                file.write("\t".join(str(v) for v in row) + "\n")
                n += 1
        counts[name] = n

    def concept_rows() -> Any:
        for i in range(1, half + 1):
            yield (i, f"Standard concept {i}", "Condition", "SNOMED", "Clinical Finding", "S",
                   str(100000 + i), START, END, "")  # fmt: skip
        for i in range(half + 1, concepts + 1):
            yield (i, f"Source code {i}", "Condition", "ICD10", "ICD10 code", "",
                   _source_code(i), START, END, "")  # fmt: skip

    def relationship_rows() -> Any:
        for i in range(1, half + 1):
            yield (i, i, "Maps to", START, END, "")
            yield (i, i, "Mapped from", START, END, "")
            yield (i, i % half + 1, "Is a", START, END, "")
        for i in range(half + 1, concepts + 1):
            target = (i * 7919) % half + 1
            yield (i, target, "Maps to", START, END, "")
            yield (target, i, "Mapped from", START, END, "")

    write("CONCEPT.csv", "concept_id\tconcept_name\tdomain_id\tvocabulary_id\t"
          "concept_class_id\tstandard_concept\tconcept_code\tvalid_start_date\t"
          "valid_end_date\tinvalid_reason", concept_rows())  # fmt: skip
    write("CONCEPT_RELATIONSHIP.csv", "concept_id_1\tconcept_id_2\trelationship_id\t"
          "valid_start_date\tvalid_end_date\tinvalid_reason", relationship_rows())  # fmt: skip
    write("CONCEPT_SYNONYM.csv", "concept_id\tconcept_synonym_name\tlanguage_concept_id",
          ((i, f"Synonym {i}", 4180186) for i in range(1, concepts + 1)))  # fmt: skip
    write("CONCEPT_ANCESTOR.csv", "ancestor_concept_id\tdescendant_concept_id\t"
          "min_levels_of_separation\tmax_levels_of_separation",
          ((i, i, 0, 0) for i in range(1, half + 1)))  # fmt: skip
    write("VOCABULARY.csv", "vocabulary_id\tvocabulary_name\tvocabulary_reference\t"
          "vocabulary_version\tvocabulary_concept_id",
          [("SNOMED", "SNOMED", "", "bench", 44819097),
           ("ICD10", "ICD10", "", "bench", 44819124)])  # fmt: skip
    write(
        "DOMAIN.csv", "domain_id\tdomain_name\tdomain_concept_id", [("Condition", "Condition", 19)]
    )
    write("CONCEPT_CLASS.csv", "concept_class_id\tconcept_class_name\t"
          "concept_class_concept_id",
          [("Clinical Finding", "Clinical Finding", 1),
           ("ICD10 code", "ICD10 code", 2)])  # fmt: skip
    write("RELATIONSHIP.csv", "relationship_id\trelationship_name\tis_hierarchical\t"
          "defines_ancestry\treverse_relationship_id\trelationship_concept_id",
          [("Maps to", "Maps to", 0, 0, "Mapped from", 44818977),
           ("Mapped from", "Mapped from", 0, 0, "Maps to", 44818976),
           ("Is a", "Is a", 1, 0, "Subsumes", 44818821)])  # fmt: skip
    return counts


def _keys(concepts: int, distinct: int) -> list[tuple[str, str]]:
    """`distinct` (system, code) keys spread over the vocabulary, half of each kind."""
    half = concepts // 2
    step = max(1, half // (distinct // 2))
    standard = [("SNOMED-CT", str(100000 + i)) for i in range(1, half + 1, step)]
    source = [("ICD-10", _source_code(i)) for i in range(half + 1, concepts + 1, step)]
    return (standard[: distinct // 2] + source[: distinct // 2])[:distinct]


def _warm(lookup: VocabularyLookup, keys: list[tuple[str, str]], seconds: float) -> float:
    """ns per map() call on keys already answered."""
    calls, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for system, code in keys:
            lookup.map(system, code)
        calls += len(keys)
    return (time.perf_counter() - began) / calls * 1e9


def _dict_peer(
    table: dict[tuple[str, str], Any], keys: list[tuple[str, str]], seconds: float
) -> float:
    calls, began = 0, time.perf_counter()
    get = table.get
    while time.perf_counter() - began < seconds:
        for system, code in keys:
            get((system, code))
        calls += len(keys)
    return (time.perf_counter() - began) / calls * 1e9


def _preload(conn: Any) -> dict[str, float]:
    """Every concept resolved into a dict, the way a preloading lookup would hold them."""
    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    rows = conn.execute(
        """
        SELECT c.vocabulary_id, c.concept_code, c.concept_id, t.concept_id, t.domain_id
        FROM concept c
        LEFT JOIN concept_relationship r
          ON r.concept_id_1 = c.concept_id AND r.relationship_id = 'Maps to'
         AND r.invalid_reason IS NULL
        LEFT JOIN concept t ON t.concept_id = r.concept_id_2 AND t.standard_concept = 'S'
        """
    ).fetchall()
    table = {(v, code): (cid, tid, dom) for v, code, cid, tid, dom in rows}
    seconds = time.perf_counter() - began
    del rows
    gc.collect()
    memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per = 100_000 / max(1, len(table))
    return {
        "concepts": len(table),
        "seconds_per_100k": round(seconds * per, 3),
        "mb_per_100k": round(memory / 1e6 * per, 1),
    }


def _engine(
    name: str, conn: Any, dialect: Any, keys: list[tuple[str, str]], seconds: float, rounds: int
) -> dict[str, Any]:
    lookup = VocabularyLookup(conn, dialect)
    began = time.perf_counter()
    for system, code in keys:
        lookup.map(system, code)
    cold = (time.perf_counter() - began) / len(keys) * 1e6
    mapped = sum(1 for s, c in keys if lookup.map(s, c).concept_id != 0)
    peer_table = {key: lookup.map(*key) for key in keys}
    warm, peer = [], []
    for _ in range(rounds):
        warm.append(_warm(lookup, keys, seconds / rounds))
        peer.append(_dict_peer(peer_table, keys, seconds / rounds))
    ratios = [w / p for w, p in zip(warm, peer, strict=True)]
    return {
        "engine": name,
        "distinct_codes": len(keys),
        "mapped": mapped,
        "cold_us_per_call": round(cold, 1),
        "warm_ns_per_call": round(statistics.median(warm), 1),
        "peer_dict_get_ns_per_call": round(statistics.median(peer), 1),
        "warm_over_peer": round(statistics.median(ratios), 2),
        "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)],
        "preload": _preload(conn),
    }


def run(
    concepts: int, distinct: int, seconds: float, rounds: int, postgres_url: str | None
) -> dict[str, Any]:
    keys = _keys(concepts, distinct)
    results: dict[str, Any] = {
        "benchmark": "vocab",
        "command": (
            f"hl7bus bench vocab --concepts {concepts} --distinct {distinct} "
            f"--seconds {seconds} --rounds {rounds}"
            + (" --postgres-url URL" if postgres_url else "")
        ),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
        },
        "engines": [],
    }
    with tempfile.TemporaryDirectory(prefix="hl7bus-bench-vocab-") as tmp:
        folder = Path(tmp) / "athena"
        began = time.perf_counter()
        rows = write_synthetic(folder, concepts)
        results["input"] = {"rows": rows, "write_seconds": round(time.perf_counter() - began, 1)}
        total = sum(rows.values())

        path = Path(tmp) / "warehouse.duckdb"
        began = time.perf_counter()
        load_vocabulary(folder, path=path)
        load = time.perf_counter() - began
        conn = duckdb.connect(str(path))
        try:
            engine = _engine("duckdb", conn, "duckdb", keys, seconds, rounds)
        finally:
            conn.close()
        engine["load"] = {"seconds": round(load, 1), "rows_per_s": round(total / load)}
        results["engines"].append(engine)

        if postgres_url:
            began = time.perf_counter()
            load_vocabulary(folder, url=postgres_url)
            load = time.perf_counter() - began
            with psycopg.connect(postgres_url, autocommit=True) as pg:
                engine = _engine("postgresql", pg, "postgresql", keys, seconds, rounds)
            engine["load"] = {"seconds": round(load, 1), "rows_per_s": round(total / load)}
            results["engines"].append(engine)
    return results
