"""The bus as ops sees it, end to end: listener, file source, worker, warehouse and lake sinks
and lag exporter run as processes on the real broker, a real Prometheus (Debian's binary)
scrapes them with the shipped rules, and messages carrying canary identifiers go through.

Checked: every process's scrape passes `promtool check metrics`; every query of the Grafana
dashboard (ops/grafana/hl7bus.json) returns data through Prometheus's HTTP API; no canary
appears in any log line or metric label; the lag exporter keeps reporting a killed worker's
growing lag.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from postgres_server import fresh_database, url_of
from prometheus_client.parser import text_string_to_metric_families
from prometheus_tools import check_metrics, prometheus_server, query
from samples import feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.mllp.client import send_messages
from hl7bus.ops.processes import Processes, free_port, port_open

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "ops" / "grafana" / "hl7bus.json"
FEED = "obs"
# Canary identifiers: put into the messages' PID, searched for in every log line and label.
CANARY_MRN = "QZCANARY"
CANARY_FAMILY = "Qanarywick"
CANARY_GIVEN = "Zelphine"
CANARIES = (CANARY_MRN, CANARY_FAMILY, CANARY_GIVEN)
MESSAGES = 40
FILES_FEED = "obsfiles"
FILE_MESSAGES = 5


def canary_messages() -> list[bytes]:
    """Sample messages whose patient id and name are canaries (one canary id per patient)."""
    out = []
    for message in feed()[:MESSAGES]:
        segments = message.to_bytes().decode("utf-8").split("\r")
        for i, segment in enumerate(segments):
            if segment.startswith("PID|"):
                fields = segment.split("|")
                while len(fields) < 6:
                    fields.append("")
                patient = fields[3].split("^")
                patient[0] = f"{CANARY_MRN}{zlib.crc32(patient[0].encode()) % 100000:05d}"
                fields[3] = "^".join(patient)
                fields[5] = f"{CANARY_FAMILY}^{CANARY_GIVEN}"
                segments[i] = "|".join(fields)
        out.append("\r".join(segments).encode("utf-8"))
    return out


def undecodable_message() -> bytes:
    """Claims UTF-8 and is not: the listener answers AE and keeps it in hl7.dlq (receiving)."""
    return (
        b"MSH|^~\\&|SND|FAC|RCV|FAC|20260101120000||ADT^A01|OBSBAD1|P|2.5|||||||UNICODE UTF-8\r"
        b"EVN|A01|20260101120000\r"
        b"PID|1||" + CANARY_MRN.encode() + b"BAD^^^H^MR||" + CANARY_FAMILY.encode() + b"\xff\xfe"
    )


@dataclass
class Bus:
    env: dict[str, str]
    procs: Processes
    logs: Path
    ports: dict[str, int]  # scrape job -> metrics port
    mllp_port: int
    worker_group: str
    raw_topic: str
    prometheus: str


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hl7bus.ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def _send(port: int, messages: list[bytes]) -> list[str | None]:
    results = asyncio.run(send_messages("127.0.0.1", port, messages, window=4))
    return [r.code for r in results]


@pytest.fixture(scope="module")
def lake_key_map(postgres_url: str) -> Iterator[str]:
    """The lake sink's warehouse (its key map) on PostgreSQL: the warehouse sink holds its DuckDB
    file, which serves one process at a time. The lake's subject ids are then not the
    warehouse's person ids, which nothing here compares (tests/test_lake_sink.py does)."""
    with fresh_database(postgres_url, "obs_lake") as conninfo:
        yield url_of(conninfo)


@pytest.fixture(scope="module")
def bus(
    kafka_bootstrap: str, lake_key_map: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bus]:
    unique = f"obs-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("observability")
    ports = {
        "hl7bus-mllp": free_port(),
        "hl7bus-worker": free_port(),
        "hl7bus-warehouse": free_port(),
        "hl7bus-lake": free_port(),
        "hl7bus-lag-exporter": free_port(),
        "hl7bus-files": free_port(),
    }
    mllp_port = free_port()
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique}.",
        "HL7BUS_MLLP_PORT": str(mllp_port),
        "HL7BUS_MLLP_FEED": FEED,
        "HL7BUS_MLLP_METRICS_PORT": str(ports["hl7bus-mllp"]),
        "HL7BUS_WORKER_APP_ID": f"{unique}-worker",
        "HL7BUS_WORKER_DATA_DIR": str(tmp / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(ports["hl7bus-worker"]),
        "HL7BUS_WAREHOUSE_PATH": str(tmp / "warehouse.duckdb"),
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(ports["hl7bus-warehouse"]),
        "HL7BUS_WAREHOUSE_GROUP_ID": f"{unique}-warehouse",
        "HL7BUS_LAKE_PATH": str(tmp / "lake"),
        "HL7BUS_LAKE_METRICS_PORT": str(ports["hl7bus-lake"]),
        "HL7BUS_LAKE_GROUP_ID": f"{unique}-lake",
        "HL7BUS_LAKE_COMPACT_INTERVAL_S": "1",
        "HL7BUS_LAKE_POLL_TIMEOUT_S": "0.2",
        "HL7BUS_LAG_METRICS_PORT": str(ports["hl7bus-lag-exporter"]),
        "HL7BUS_LAG_INTERVAL_S": "1",
        "HL7BUS_LAG_GROUPS": f"{re.escape(unique)}-.*",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
        "HL7BUS_LOG_FORMAT": "json",
        "HL7BUS_FILES_FEED": FILES_FEED,
        "HL7BUS_FILES_DROP_DIR": str(tmp / "drop"),
        "HL7BUS_FILES_METRICS_PORT": str(ports["hl7bus-files"]),
    }
    (tmp / "drop").mkdir()
    applied = _cli("topics", "apply", env=env)
    assert applied.returncode == 0, applied.stderr
    logs = tmp / "logs"
    logs.mkdir()
    procs = Processes(logs)
    prometheus_dir = tmp / "prometheus"
    prometheus_dir.mkdir()
    try:
        procs.start("listener", ["mllp", "serve"], env)
        procs.start("worker", ["worker"], env)
        procs.start("sink", ["sink", "warehouse"], env)
        procs.start("lake", ["sink", "lake"], {**env, "HL7BUS_WAREHOUSE_URL": lake_key_map})
        procs.start("lag-exporter", ["lag-exporter"], env)
        procs.start("files", ["ingest", "--watch"], env)
        for job, port in ports.items():
            procs.wait_for(f"{job} /metrics", partial(port_open, port), 60)
        procs.wait_for("the listener", lambda: port_open(mllp_port), 30)
        with prometheus_server(prometheus_dir, ports) as prometheus:
            codes = _send(mllp_port, [*canary_messages(), undecodable_message()])
            assert codes == ["AA"] * MESSAGES + ["AE"], codes
            # The file source's path too: a batch file of canary messages in the drop folder.
            partial_file = tmp / "drop" / "canary.part"
            partial_file.write_bytes(b"\n".join(canary_messages()[:FILE_MESSAGES]) + b"\n")
            partial_file.rename(tmp / "drop" / "canary.hl7")
            procs.wait_for(
                "the file source to store the file",
                lambda: (
                    _sample(
                        _get(ports["hl7bus-files"], "/metrics"),
                        "hl7bus_sent_total",
                        component="files",
                    )
                    == FILE_MESSAGES
                ),
                60,
            )

            catalog_raw = f"{unique}.hl7.raw"

            def caught_up() -> bool:
                metrics = _get(ports["hl7bus-warehouse"], "/metrics")
                lake = _get(ports["hl7bus-lake"], "/metrics")
                worker_lag = kafka_clients.group_lag(
                    KafkaConfig(), kafka_bootstrap, f"{unique}-worker", [catalog_raw]
                )
                return (
                    worker_lag == 0
                    and _sample(metrics, "hl7bus_sent_total", component="warehouse") > 0
                    and _sample(lake, "hl7bus_sent_total", component="lake") > 0
                    # a compaction pass published rows: the dashboard's lake freshness
                    and _sample(lake, "hl7bus_lake_newest_record_timestamp_seconds") > 0
                )

            procs.wait_for("the warehouse and lake sinks write", caught_up, 180)
            yield Bus(
                env,
                procs,
                logs,
                ports,
                mllp_port,
                f"{unique}-worker",
                catalog_raw,
                prometheus,
            )
    finally:
        procs.stop_all()


def _sample(scrape: str, name: str, **labels: str) -> float:
    """The sum of a scrape's samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_every_scrape_passes_promtool(bus: Bus) -> None:
    for job, port in bus.ports.items():
        scrape = _get(port, "/metrics")
        assert "# TYPE" in scrape, job
        assert check_metrics(scrape) == [], job


def test_the_shared_vocabulary_is_in_every_scrape(bus: Bus) -> None:
    listener = _get(bus.ports["hl7bus-mllp"], "/metrics")
    assert _sample(listener, "hl7bus_received_total", component="mllp") == MESSAGES + 1
    assert _sample(listener, "hl7bus_sent_total", component="mllp") == MESSAGES
    assert _sample(listener, "hl7bus_dlq_total", stage="receiving", reason="charset") == 1
    assert _sample(listener, "hl7bus_feed_received_total", feed=FEED) == MESSAGES + 1
    assert _sample(listener, "hl7bus_feed_silence_threshold_seconds", feed=FEED) == 1800
    assert _sample(listener, "hl7bus_feed_last_message_timestamp_seconds", feed=FEED) > 0
    worker = _get(bus.ports["hl7bus-worker"], "/metrics")
    assert _sample(worker, "hl7bus_received_total", stage="parsing") == MESSAGES + FILE_MESSAGES
    assert _sample(worker, "hl7bus_sent_total", stage="deidentifying") > 0
    assert _sample(worker, "hl7bus_stage_latency_seconds_count", component="worker") > 0
    files = _get(bus.ports["hl7bus-files"], "/metrics")
    assert _sample(files, "hl7bus_received_total", component="files") == FILE_MESSAGES
    assert _sample(files, "hl7bus_feed_received_total", feed=FILES_FEED) == FILE_MESSAGES
    sink = _get(bus.ports["hl7bus-warehouse"], "/metrics")
    assert _sample(sink, "hl7bus_sink_up", component="warehouse") == 1
    assert _sample(sink, "hl7bus_sink_last_commit_timestamp_seconds", component="warehouse") > 0
    lake = _get(bus.ports["hl7bus-lake"], "/metrics")
    assert _sample(lake, "hl7bus_sink_up", component="lake") == 1
    assert _sample(lake, "hl7bus_sink_last_commit_timestamp_seconds", component="lake") > 0
    assert _sample(lake, "hl7bus_received_total", component="lake", stage="sinking") > 0
    assert _sample(lake, "hl7bus_stage_latency_seconds_count", component="lake") > 0
    assert _sample(lake, "hl7bus_lake_subjects") > 0


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_returns_data(bus: Bus) -> None:
    # Grafana fills these in; Prometheus has scraped for a minute at most.
    grafana_variables = {"$__rate_interval": "1m", "$__range": "1h"}
    pending = dict(_panel_queries())
    assert len(pending) > 15

    def answered() -> bool:
        for name, expr in list(pending.items()):
            for variable, value in grafana_variables.items():
                expr = expr.replace(variable, value)
            if query(bus.prometheus, expr):
                del pending[name]
        return not pending

    try:
        bus.procs.wait_for("every dashboard query to return data", answered, 120, interval=2)
    except Exception as exc:
        raise AssertionError(f"no data for {sorted(pending)}") from exc


def test_no_canary_in_any_log_line_or_metric_label(bus: Bus) -> None:
    scrapes = {job: _get(port, "/metrics") for job, port in bus.ports.items()}
    for job, scrape in scrapes.items():
        for family in text_string_to_metric_families(scrape):
            for sample in family.samples:
                for value in sample.labels.values():
                    for canary in CANARIES:
                        assert canary not in value, f"{job}: {sample.name} label {value!r}"
    # The series Prometheus stored are searched too (their labels are what ops sees).
    series = query(bus.prometheus, '{__name__=~"hl7bus_.+|kafka_.+"}')
    assert series
    assert not [s for s in series for c in CANARIES if c in json.dumps(s["metric"])]
    lines = 0
    for log in sorted(bus.logs.glob("*.log")):
        for line in log.read_text("utf-8", errors="replace").splitlines():
            lines += 1
            for canary in CANARIES:
                assert canary not in line, f"{log.name}: {line}"
    assert lines > 0


def test_every_log_line_is_json_and_the_things_that_matter_are_logged(bus: Bus) -> None:
    records: dict[str, list[dict[str, Any]]] = {}
    for name in ("listener", "worker", "sink", "lake", "lag-exporter"):
        text = (bus.logs / f"{name}.log").read_text("utf-8")
        records[name] = [json.loads(line) for line in text.splitlines() if line.strip()]
        for record in records[name]:
            assert {"time", "level", "logger", "component", "message"} <= record.keys(), record
    messages = {name: [r["message"] for r in rs] for name, rs in records.items()}
    assert any(m.startswith("listening for MLLP") for m in messages["listener"])
    assert (
        f"mllp feed {FEED}: a message went to the DLQ (stage receiving, reason charset)"
        in (messages["listener"])
    )
    assert any(m.startswith("writing ") for m in messages["sink"])
    assert any(m.startswith("writing ") and "MEDS lake" in m for m in messages["lake"])
    assert {r["component"] for r in records["lake"]} <= {"lake"}
    assert any(m.startswith("measuring consumer-group lag") for m in messages["lag-exporter"])
    assert {r["component"] for r in records["worker"]} <= {"worker"}


def _status(bus: Bus) -> tuple[int, dict[str, Any]]:
    result = _cli("status", "--json", env={**bus.env, "COLUMNS": "200"})
    return result.returncode, json.loads(result.stdout)


def test_status_shows_the_feed_board_and_exits_0(bus: Bus) -> None:
    code, board = _status(bus)
    assert code == 0, board
    assert [p["name"] for p in board["processes"] if p["up"]] == [
        "mllp",
        "worker",
        "warehouse",
        "lake",
        "lag",
    ]
    (feed,) = board["feeds"]
    assert feed["feed"] == FEED and feed["up"] and not feed["silent"]
    assert feed["received"] >= MESSAGES + 1
    assert feed["naks"] >= 1  # the undecodable message's AE
    assert feed["silence_threshold_s"] == 1800
    assert board["kafka"]["topics"][bus.raw_topic] >= MESSAGES
    assert any(group.startswith("lake sink") for group in board["kafka"]["lag"])


def test_lag_exporter_reports_a_dead_workers_growing_lag(bus: Bus) -> None:
    """Last in the module: it kills the worker."""
    bus.procs.running["worker"].kill()
    bus.procs.running.pop("worker").wait()
    more = canary_messages()[:10]
    assert _send(bus.mllp_port, more) == ["AA"] * len(more)
    port = bus.ports["hl7bus-lag-exporter"]

    def reported() -> bool:
        scrape = _get(port, "/metrics")
        lag = _sample(
            scrape,
            "kafka_consumergroup_lag_sum",
            consumergroup=bus.worker_group,
            topic=bus.raw_topic,
        )
        seconds = _sample(scrape, "kafka_consumergroup_lag_seconds", consumergroup=bus.worker_group)
        return lag == len(more) and seconds > 0

    bus.procs.wait_for("the lag exporter to report the dead worker's lag", reported, 60)
    scrape = _get(port, "/metrics")
    assert _sample(scrape, "hl7bus_lag_exporter_up") == 1
    assert check_metrics(scrape) == []
    code, board = _status(bus)
    assert code == 1
    assert board["problems"] == [f"process worker is down (127.0.0.1:{bus.ports['hl7bus-worker']})"]
