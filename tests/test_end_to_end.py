"""End to end on the real broker: MLLP in -> listener, worker, sink processes -> warehouse rows.

The components run as the operator runs them (`hl7bus mllp serve`, `hl7bus worker`,
`hl7bus sink warehouse`), configured only through HL7BUS_* variables.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import duckdb
import pytest
from samples import feed
from warehouse_events import golden_messages

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops.processes import Processes, free_port, port_open
from hl7bus.schemas import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

MESSAGES = 80


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hl7bus.ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mllp_to_warehouse(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> None:
    mllp_port, sink_metrics = free_port(), free_port()
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_MLLP_PORT": str(mllp_port),
        "HL7BUS_MLLP_FEED": "e2e",
        "HL7BUS_MLLP_METRICS_PORT": str(free_port()),
        "HL7BUS_WORKER_APP_ID": f"{unique_name}-worker",
        "HL7BUS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(free_port()),
        "HL7BUS_WAREHOUSE_PATH": str(warehouse),
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(sink_metrics),
        "HL7BUS_WAREHOUSE_GROUP_ID": f"{unique_name}-warehouse",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }
    applied = _cli("topics", "apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"created  {unique_name}.hl7.raw" in applied.stdout

    # The sample feed (registrations, admissions, lab results) and one message of every other
    # kind (orders, diagnoses, allergies, procedures, medications, a document, a merge).
    sample = list(feed()[:MESSAGES])
    messages = [*sample, *golden_messages()]
    feed_file = tmp_path / "feed.hl7"
    feed_file.write_bytes(b"".join(m.to_bytes() + b"\n" for m in messages))
    patients = {m.get("PID-3.1") for m in messages if (m.message_type or "").startswith("ADT")}
    # Loaded results: final or corrected, one row per result (a correction replaces it).
    results = {
        (oru.get("OBR-3.1") or oru.get("OBR-2.1"), obx.get("3.1"), obx.get("4"))
        for oru in sample
        if oru.message_type == "ORU^R01"
        for obx in oru.segments("OBX")
        if obx.get("11") in ("F", "C")
    }

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        procs.start("listener", ["mllp", "serve"], env)
        procs.start("worker", ["worker"], env)
        procs.start("sink", ["sink", "warehouse"], env)
        procs.wait_for("the listener", lambda: port_open(mllp_port), 30)

        sent = _cli("send", "--port", str(mllp_port), "--window", "4", str(feed_file), env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"ACK AA           │ {len(messages)}" in sent.stdout

        catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=f"{unique_name}."))
        research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
        kafka = KafkaConfig()

        def caught_up() -> bool:
            lag = kafka_clients.group_lag(
                kafka, kafka_bootstrap, f"{unique_name}-warehouse", research
            )
            worker_lag = kafka_clients.group_lag(
                kafka, kafka_bootstrap, f"{unique_name}-worker", [f"{unique_name}.hl7.raw"]
            )
            return worker_lag == 0 and lag == 0

        procs.wait_for("research events in the warehouse", caught_up, 120)
        metrics = _get(sink_metrics, "/metrics")
        assert 'hl7bus_warehouse_rows_total{op="upsert",table="measurement"}' in metrics
        assert _get(sink_metrics, "/readyz") == "ready\n"
        procs.stop("sink")
    finally:
        procs.stop_all()

    conn = duckdb.connect(str(warehouse), read_only=True)

    def rows(table: str) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

    assert rows("person") == len(patients)
    # The golden ORU adds 7 measurements and 3 observations (one more is the allergy).
    assert rows("measurement") == len(results) + 7
    assert rows("observation") == 4
    assert (rows("condition_occurrence"), rows("procedure_occurrence")) == (3, 1)
    assert (rows("drug_exposure"), rows("note")) == (2, 1)
    for table in ("visit_occurrence", "visit_detail", "specimen", "location"):
        assert rows(table) > 0, table
    assert rows("observation_period") >= rows("person")
    tables = ("person", "visit_occurrence", "measurement", "observation", "note", "location")
    dump = repr([conn.execute(f"SELECT * FROM {table}").fetchall() for table in tables])
    for message in messages:
        for path in ("PID-3.1", "PID-5.1", "PID-5.2", "PID-13.1", "PID-19"):
            value = message.get(path)
            if value:
                assert value not in dump, f"{path} leaked into the warehouse"
    conn.close()

    # The data-quality check passes on what the run wrote (no vocabulary: concepts skipped).
    checked = _cli("warehouse", "check", "--json", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["passed"] is True
    assert report["rows"]["person"] == len(patients)
    assert report["rules"]["concept"]["skipped"] == "no vocabulary loaded"
    assert report["rules"]["foreign_key"]["checks"] > 0
    assert report["feeds"]["e2e"]["measurement"] == report["rows"]["measurement"]


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s command: the whole bus on embedded defaults against the sample feed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7BUS_")}
    # The timeout only stops a hung demo; how long the demo takes is not asserted (tests assert
    # behaviour; the demo prints its own duration).
    result = subprocess.run(
        [sys.executable, "-m", "hl7bus.ops.cli", "demo"],
        env={**env, "COLUMNS": "120"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "demo OK" in output
    assert "ACK AA" in output and "305" in output
    assert "sample vocabulary loaded into the warehouse (129 concepts)" in output
    assert "no direct identifier of the source is in the research record" in output
    assert (tmp_path / "demo-out" / "warehouse.duckdb").exists()
    # The lake sink ran after the warehouse sink; the demo checked its dataset (docs/ai-sink.md).
    assert "MEDS lake: subjects, rows, shards" in output and "INVALID" not in output
    assert (tmp_path / "demo-out" / "lake" / "metadata" / "dataset.json").exists()
    # The sink mapped the feed's LOINC codes through the vocabulary the demo loaded.
    conn = duckdb.connect(str(tmp_path / "demo-out" / "warehouse.duckdb"), read_only=True)
    try:
        mapped, total = conn.execute(
            "SELECT count(*) FILTER (WHERE measurement_concept_id <> 0), count(*) FROM measurement"
        ).fetchone() or (0, 0)
    finally:
        conn.close()
    assert 0 < mapped <= total
