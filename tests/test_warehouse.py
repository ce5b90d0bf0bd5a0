"""The DuckDB warehouse sink's write path: OMOP-shaped rows, upserts, no identifiers."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from samples import envelope, feed

from hl7bus.connectors.warehouse.duckdb_sink import open_warehouse, write_batch
from hl7bus.schemas import codec
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.steps import deidentify_step, parse_step

KEY = Pseudonymizer(b"0123456789abcdef0123456789abcdef", "k1")


def research_values(count: int) -> list[bytes]:
    policy = Policy.load(None)
    values = []
    for message in feed()[:count]:
        raw = codec.encode("RawMessage", envelope(message))
        for event in parse_step(None, raw, ZoneInfo("Asia/Seoul")):
            [out] = deidentify_step(event.value, policy, KEY, leak_check=True)
            values.append(out.value)
    return values


def test_rows_are_upserted_idempotently(tmp_path: Path) -> None:
    conn = open_warehouse(tmp_path / "w.duckdb")
    values = research_values(40)
    counts = write_batch(conn, values)
    assert counts["measurement"] > 0 and counts["person"] > 0
    person = conn.execute("SELECT count(*) FROM person").fetchone()
    measurement = conn.execute("SELECT count(*) FROM measurement").fetchone()
    # Redelivery of the same batch (a crash before offsets were stored) changes nothing.
    write_batch(conn, values)
    assert conn.execute("SELECT count(*) FROM person").fetchone() == person
    assert conn.execute("SELECT count(*) FROM measurement").fetchone() == measurement
    assert measurement == (counts["measurement"],)


def test_rows_carry_no_source_identifier(tmp_path: Path) -> None:
    conn = open_warehouse(tmp_path / "w.duckdb")
    write_batch(conn, research_values(40))
    dump = repr(conn.execute("SELECT * FROM person").fetchall())
    dump += repr(conn.execute("SELECT * FROM measurement").fetchall())
    for message in feed()[:40]:
        for path in ("PID-3.1", "PID-5.1", "PID-19", "PID-13.1"):
            value = message.get(path)
            assert value and value not in dump


def test_garbage_values_are_skipped_not_fatal(tmp_path: Path) -> None:
    conn = open_warehouse(tmp_path / "w.duckdb")
    counts = write_batch(conn, [b"garbage", *research_values(2)])
    assert sum(counts.values()) > 0
