"""End to end on the real broker: MLLP in -> listener, worker, sink processes -> warehouse rows.

The components run as the operator runs them (`hl7bus mllp serve`, `hl7bus worker`,
`hl7bus sink warehouse`), configured only through HL7BUS_* variables.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from samples import feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops.processes import Processes, free_port, port_open

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
    mllp_port = free_port()
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
        "HL7BUS_WAREHOUSE_GROUP_ID": f"{unique_name}-warehouse",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }
    applied = _cli("topics", "apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"created  {unique_name}.hl7.raw" in applied.stdout

    messages = feed()[:MESSAGES]
    feed_file = tmp_path / "feed.hl7"
    feed_file.write_bytes(b"".join(m.to_bytes() + b"\n" for m in messages))
    patients = {m.get("PID-3.1") for m in messages if (m.message_type or "").startswith("ADT")}
    observations = sum(
        len(list(m.segments("OBX"))) for m in messages if m.message_type == "ORU^R01"
    )

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
        assert f"ACK AA           │ {MESSAGES}" in sent.stdout

        research = [f"{unique_name}.research.patient", f"{unique_name}.research.observation"]
        kafka = KafkaConfig()

        def caught_up() -> bool:
            sizes = kafka_clients.topic_sizes(kafka, kafka_bootstrap, research)
            lag = kafka_clients.group_lag(
                kafka, kafka_bootstrap, f"{unique_name}-warehouse", research
            )
            return sizes[research[1]] == observations and lag == 0

        procs.wait_for("research events in the warehouse", caught_up, 120)
        procs.stop("sink")
    finally:
        procs.stop_all()

    conn = duckdb.connect(str(warehouse), read_only=True)
    persons = conn.execute("SELECT * FROM person").fetchall()
    measurements = conn.execute("SELECT count(*) FROM measurement").fetchone()
    assert len(persons) == len(patients)
    assert measurements == (observations,)
    dump = repr(persons) + repr(conn.execute("SELECT * FROM measurement").fetchall())
    for message in messages:
        for path in ("PID-3.1", "PID-5.1", "PID-5.2", "PID-13.1", "PID-19"):
            value = message.get(path)
            assert value and value not in dump, f"{path} leaked into the warehouse"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s command: the whole bus on embedded defaults against the sample feed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HL7BUS_")}
    started = time.monotonic()
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
    assert "sample vocabulary loaded into the warehouse (127 concepts)" in output
    assert "no direct identifier of the source is in the research record" in output
    assert (tmp_path / "demo-out" / "warehouse.duckdb").exists()
    assert time.monotonic() - started < 180
