"""`hl7bus bench warehouse`: rows/s the warehouse sink writes vs a bare bulk load of the same rows.

Workload: a mixed research stream, as the worker writes it to research.* (encoded Avro
records), per simulated stay: registration and update (Patient), admission, transfer and
discharge (Encounter), two diagnoses, an allergy, three lab orders (Order) with eight results
each (Observation; one in twenty corrected later), two drug administrations, a procedure and a
discharge summary (Document): 45 records, about 40 OMOP rows.

Contenders, each on its own fresh database of the same engine:

- `sink`: `BatchWriter.write` as the sink runs it (decode, map, key map, fold, staging +
  merge, observation periods and visit details), in batches of `warehouse.batch_size`;
- `bare`: the rows the sink wrote (recorded at its engine, first version of each row only),
  appended per batch with the engine's own bulk path and nothing else: DuckDB's appender,
  PostgreSQL's COPY. No decode, no mapping, no merge, no derived tables: the floor.

Both are measured at the start (empty tables) and after `fill_rows` rows are in: the `fill`
phase between them is timed as well, in windows, to show whether the rate falls as tables
grow. Time is wall time of the write calls; `db_share` is the part of the sink's time spent in
database calls (the rest is decoding and mapping in Python).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.parse import loadavg, machine

TARGET_RATIO = 0.5
RECORDS_PER_STAY = 45


def _pseudonym(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()[:32]


LABS = [
    (
        "24323-8",
        "CH",
        [
            ("2160-0", 1.0, "mg/dL"),
            ("2951-2", 140.0, "mmol/L"),
            ("2823-3", 4.2, "mmol/L"),
            ("2345-7", 98.0, "mg/dL"),
            ("1742-6", 25.0, "U/L"),
            ("1920-8", 28.0, "U/L"),
            ("3094-0", 14.0, "mg/dL"),
            ("17861-6", 9.4, "mg/dL"),
        ],
    ),
    (
        "58410-2",
        "HM",
        [
            ("6690-2", 6.3, "10*3/uL"),
            ("789-8", 4.6, "10*6/uL"),
            ("718-7", 13.5, "g/dL"),
            ("4544-3", 41.0, "%"),
            ("787-2", 90.0, "fL"),
            ("785-6", 30.0, "pg"),
            ("786-4", 33.0, "g/dL"),
            ("777-3", 250.0, "10*3/uL"),
        ],
    ),
    (
        "24331-1",
        "CH",
        [
            ("2093-3", 190.0, "mg/dL"),
            ("2571-8", 150.0, "mg/dL"),
            ("2085-9", 50.0, "mg/dL"),
            ("13457-7", 110.0, "mg/dL"),
            ("1988-5", 0.5, "mg/L"),
            ("4548-4", 5.6, "%"),
            ("2947-0", 139.0, "mmol/L"),
            ("6298-4", 4.0, "mmol/L"),
        ],
    ),
]


def stay_events(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    """The research events of one simulated stay (patient n), in the order they arrive."""
    patient = _pseudonym(f"patient-{n}")
    visit = _pseudonym(f"visit-{n}")
    start = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=37 * n)
    seq = iter(range(10_000))

    def event(event_type: str, at: datetime, **fields: Any) -> tuple[str, dict[str, Any]]:
        record = {
            "schema_version": 1,
            "event_id": f"{n:08d}-{next(seq):03d}",
            "patient_key": patient,
            "pseudonym_key_id": "k1",
            "feed": "bench",
            "message_type": "ADT^A01",
            "event_time": at,
            "event_time_offset": "+0900",
            "event_time_precision": "YYYYMMDDHHMMSS",
            "received_at": at,
            "deid_policy": "0" * 16,
            **fields,
        }
        return event_type, record

    out = [
        event(
            "Patient",
            start,
            birth_year=1940 + n % 60,
            sex="MF"[n % 2],
            sex_source="MF"[n % 2],
            postal_code=f"{n % 500:03d}",
            country="KOR",
            trigger_event="A04",
        ),
        event(
            "Encounter",
            start,
            encounter_key=visit,
            action="admit",
            patient_class_source="I",
            location_point_of_care="71W",
            admit_time=start,
        ),
        event(
            "Diagnosis",
            start,
            encounter_key=visit,
            code="J18.9",
            code_system="KCD",
            standard_code="J18.9",
            standard_system="KCD-8",
            diagnosis_time=start,
            priority="1",
        ),
        event(
            "Diagnosis",
            start,
            encounter_key=visit,
            code="E11.9",
            code_system="KCD",
            standard_code="E11.9",
            standard_system="KCD-8",
            diagnosis_time=start,
            priority="2",
        ),
        event(
            "Allergy",
            start,
            source_segment="AL1",
            allergen_type="DA",
            allergen_code="70618",
            allergen_code_system="RXNORM",
            allergen_standard_code="70618",
            allergen_standard_system="RxNorm",
            severity="MO",
            onset_time=start,
        ),
    ]
    for o, (panel, section, analytes) in enumerate(LABS):
        drawn = start + timedelta(hours=2 + 8 * o)
        order = _pseudonym(f"order-{n}-{o}")
        out.append(
            event(
                "Order",
                drawn,
                message_type="ORU^R01",
                order_key=order,
                encounter_key=visit,
                order_control="RE",
                code=panel,
                code_system="LN",
                standard_code=panel,
                standard_system="LOINC",
                observation_time=drawn,
                diagnostic_service=section,
                result_status="F",
            )
        )
        for code, mean, unit in analytes:
            value = round(mean * rng.uniform(0.7, 1.3), 2)
            out.append(
                event(
                    "Observation",
                    drawn,
                    message_type="ORU^R01",
                    result_key=_pseudonym(f"{order}|{code}"),
                    order_key=order,
                    encounter_key=visit,
                    value_type="NM",
                    code=code,
                    code_system="LN",
                    standard_code=code,
                    standard_system="LOINC",
                    value_numeric=value,
                    value_text=str(value),
                    units=unit,
                    units_ucum=unit,
                    value_numeric_ucum=value,
                    reference_low=mean * 0.8,
                    reference_high=mean * 1.2,
                    result_status="F",
                )
            )
    out += [
        event(
            "Encounter",
            start + timedelta(days=1),
            encounter_key=visit,
            action="transfer",
            patient_class_source="I",
            location_point_of_care="ICU",
        ),
        event(
            "Medication",
            start + timedelta(hours=3),
            message_type="RAS^O17",
            kind="administration",
            source_segment="RXA",
            encounter_key=visit,
            code="197361",
            code_system="RXNORM",
            standard_code="197361",
            standard_system="RxNorm",
            dose_amount=5.0,
            dose_units="mg",
            route="PO",
            start_time=start + timedelta(hours=3),
            completion_status="CP",
        ),
        event(
            "Medication",
            start + timedelta(hours=15),
            message_type="RAS^O17",
            kind="administration",
            source_segment="RXA",
            encounter_key=visit,
            code="197361",
            code_system="RXNORM",
            standard_code="197361",
            standard_system="RxNorm",
            dose_amount=5.0,
            dose_units="mg",
            route="PO",
            start_time=start + timedelta(hours=15),
            completion_status="CP",
        ),
        event(
            "Procedure",
            start + timedelta(days=1),
            encounter_key=visit,
            code="0JH60DZ",
            code_system="I10P",
            procedure_time=start + timedelta(days=1),
            minutes=45,
        ),
        event(
            "Patient",
            start + timedelta(days=2),
            birth_year=1940 + n % 60,
            sex="MF"[n % 2],
            sex_source="MF"[n % 2],
            postal_code=f"{(n + 1) % 500:03d}",
            country="KOR",
            trigger_event="A08",
        ),
        event(
            "Document",
            start + timedelta(days=3),
            message_type="MDM^T02",
            document_key=_pseudonym(f"doc-{n}"),
            encounter_key=visit,
            document_type="DS",
            activity_time=start + timedelta(days=3),
            availability_status="AV",
            text="Admitted with pneumonia. Treated with antibiotics.\nDischarged home.",
        ),
        event(
            "Encounter",
            start + timedelta(days=3),
            encounter_key=visit,
            action="discharge",
            patient_class_source="I",
            discharge_time=start + timedelta(days=3),
        ),
    ]
    if n % 20 == 0:  # a corrected result
        order = _pseudonym(f"order-{n}-0")
        out.append(
            event(
                "Observation",
                start + timedelta(days=1),
                message_type="ORU^R01",
                result_key=_pseudonym(f"{order}|2160-0"),
                order_key=order,
                encounter_key=visit,
                value_type="NM",
                code="2160-0",
                code_system="LN",
                standard_code="2160-0",
                standard_system="LOINC",
                value_numeric=1.4,
                value_text="1.4",
                units="mg/dL",
                units_ucum="mg/dL",
                value_numeric_ucum=1.4,
                result_status="C",
                is_correction=True,
            )
        )
    return out


def stream(first: int, stays: int, seed: int) -> list[bytes]:
    """Encoded research records of `stays` stays starting at patient `first`."""
    from hl7bus.schemas import codec

    rng = random.Random(seed + first)
    values = []
    for n in range(first, first + stays):
        for event_type, record in stay_events(n, rng):
            fields = codec.schema(event_type).parsed["fields"]
            values.append(
                codec.encode(event_type, {f["name"]: record.get(f["name"]) for f in fields})
            )
    return values


class Recorder:
    """The sink's engine, recording the rows it upserts and timing every database call."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.seconds = 0.0
        self.batch: list[tuple[str, tuple[str, ...], list[Sequence[Any]]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.engine, name)
        if not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed

    def upsert(self, table: str, columns: Sequence[str], key: str, rows: Sequence[Any]) -> None:
        self.batch.append((table, tuple(columns), list(rows)))
        started = time.perf_counter()
        try:
            self.engine.upsert(table, columns, key, rows)
        finally:
            self.seconds += time.perf_counter() - started

    def bulk_insert(self, table: str, columns: Sequence[str], rows: Sequence[Any]) -> None:
        """The writer's path for rows with new ids: recorded like an upsert."""
        self.batch.append((table, tuple(columns), list(rows)))
        started = time.perf_counter()
        try:
            self.engine.bulk_insert(table, columns, rows)
        finally:
            self.seconds += time.perf_counter() - started


class Pair:
    """A sink database and a bare-load database of one engine."""

    def __init__(self, open_engine: Callable[[str], Any], batch_size: int) -> None:
        from hl7bus.connectors.warehouse.concepts import NoVocabulary
        from hl7bus.connectors.warehouse.writer import BatchWriter

        self.sink = Recorder(open_engine("sink"))
        self.bare = open_engine("bare")
        self.writer = BatchWriter(self.sink, NoVocabulary())
        self.batch_size = batch_size
        self.loaded: set[tuple[str, int]] = set()
        self.rows_in = 0

    def run(self, values: list[bytes]) -> dict[str, Any]:
        """Write `values` through the sink, then the same rows with the bare bulk path."""
        from hl7bus.connectors.warehouse.engine import transaction
        from hl7bus.connectors.warehouse.writer import Incoming

        sink_s = bare_s = 0.0
        db_before = self.sink.seconds
        sink_rows = bare_rows = 0
        for start in range(0, len(values), self.batch_size):
            chunk = [Incoming(v) for v in values[start : start + self.batch_size]]
            self.sink.batch = []
            began = time.perf_counter()
            outcome = self.writer.write(chunk)
            sink_s += time.perf_counter() - began
            sink_rows += sum(n for (_, op), n in outcome.rows.items() if op == "upsert")
            assert "dlq" not in outcome.results, "the bench stream must write cleanly"
            fresh = []
            for table, columns, rows in self.sink.batch:
                key = columns.index(_id_column(table))
                new = [r for r in rows if (table, r[key]) not in self.loaded]
                self.loaded.update((table, r[key]) for r in new)
                if new:
                    fresh.append((table, columns, new))
            began = time.perf_counter()
            with transaction(self.bare):
                for table, columns, rows in fresh:
                    self.bare.bulk_insert(table, columns, rows)
            bare_s += time.perf_counter() - began
            bare_rows += sum(len(rows) for _, _, rows in fresh)
        self.rows_in += sink_rows
        sink_rate = sink_rows / sink_s if sink_s else 0.0
        bare_rate = bare_rows / bare_s if bare_s else 0.0
        return {
            "records": len(values),
            "sink_rows": sink_rows,
            "sink_rows_per_s": round(sink_rate),
            "sink_records_per_s": round(len(values) / sink_s) if sink_s else 0,
            "sink_db_share": round((self.sink.seconds - db_before) / sink_s, 2) if sink_s else 0,
            "bare_rows": bare_rows,
            "bare_rows_per_s": round(bare_rate),
            "ratio": round(sink_rate / bare_rate, 3) if bare_rate else None,
        }

    def close(self) -> None:
        self.sink.close()
        self.bare.close()


def _id_column(table: str) -> str:
    from hl7bus.connectors.warehouse.changes import id_column

    return id_column(table)


def _engines(kind: str, folder: Path, postgres_url: str | None) -> Iterator[Callable[[str], Any]]:
    """Yields a factory of fresh databases of engine `kind` (and drops them after)."""
    from hl7bus.connectors.warehouse.config import WarehouseConfig
    from hl7bus.connectors.warehouse.database import open_engine

    if kind == "duckdb":
        yield lambda name: open_engine(WarehouseConfig(path=folder / f"{name}.duckdb"))
        return
    import psycopg

    assert postgres_url is not None
    made: list[str] = []

    def fresh(name: str) -> Any:
        db = f"bench_{name}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {db}".encode())
        made.append(db)
        base = postgres_url.rsplit("/", 1)[0]
        return open_engine(WarehouseConfig(url=f"{base}/{db}", cdm_schema="cdm"))

    try:
        yield fresh
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            for db in made:
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)".encode())


def run_engine(
    kind: str,
    phase_stays: int,
    fill_rows: int,
    windows: int,
    batch_size: int,
    postgres_url: str | None,
    seed: int = 7,
) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hl7bus-bench-wh-") as tmp:
        for factory in _engines(kind, Path(tmp), postgres_url):
            pair = Pair(factory, batch_size)
            try:
                first = pair.run(stream(0, phase_stays, seed))
                next_stay = phase_stays
                fill: list[dict[str, Any]] = []
                rows_per_stay = max(1, first["sink_rows"] // phase_stays)
                window_stays = max(1, (fill_rows - pair.rows_in) // rows_per_stay // windows)
                while pair.rows_in < fill_rows:
                    result = pair.run(stream(next_stay, window_stays, seed))
                    next_stay += window_stays
                    fill.append({"rows_in_after": pair.rows_in, **result})
                after = pair.run(stream(next_stay, phase_stays, seed))
            finally:
                pair.close()
    return {
        "engine": kind,
        "start": first,
        "fill": fill,
        "after": {"rows_in_before": pair.rows_in - after["sink_rows"], **after},
        "rate_after_over_start": round(after["sink_rows_per_s"] / first["sink_rows_per_s"], 3),
        "seconds": round(time.monotonic() - started, 1),
    }


def run(
    engines: Sequence[str],
    phase_stays: int = 500,
    fill_rows: int = 1_000_000,
    windows: int = 5,
    batch_size: int = 5000,
    postgres_url: str | None = None,
) -> dict[str, Any]:
    before = loadavg()
    results = [
        run_engine(kind, phase_stays, fill_rows, windows, batch_size, postgres_url)
        for kind in engines
    ]
    return {
        "benchmark": "warehouse",
        "workload": {
            "records_per_stay": RECORDS_PER_STAY,
            "phase_stays": phase_stays,
            "phase_records": phase_stays * RECORDS_PER_STAY,
            "fill_rows": fill_rows,
            "batch_size": batch_size,
        },
        "engines": results,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "met": {
                r["engine"]: bool(r["after"]["ratio"] and r["after"]["ratio"] >= TARGET_RATIO)
                for r in results
            },
        },
        "machine": machine(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "pid": os.getpid(),
    }
