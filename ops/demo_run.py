"""`hl7bus demo`: the whole bus on embedded defaults against the bundled sample feed.

It starts its own broker instance (named "demo", fresh data each run), applies the topic
catalog, runs listener, worker and warehouse sink as separate processes exactly as an operator
would, sends the feed, waits until every record has reached the warehouse, then runs the lake
sink until the MEDS dataset holds them too, prints a report and stops everything, also on
Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
from confluent_kafka import Consumer
from rich.console import Console
from rich.table import Table

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.mllp.sending import read_messages, send_and_report
from hl7bus.connectors.warehouse.vocabulary import load_vocabulary, sample_folder
from hl7bus.ops import local_kafka, topics_apply
from hl7bus.ops.config import Settings
from hl7bus.ops.processes import ProcessError, Processes, free_port, port_open
from hl7bus.schemas import codec, topics
from hl7bus.streams.worker_config import source_topics

DEMO_FEED = "demo"
_WAIT_S = 120.0
# The OMOP tables the sink writes, in the report's order.
OMOP_TABLES = (
    "person",
    "location",
    "death",
    "observation_period",
    "visit_occurrence",
    "visit_detail",
    "condition_occurrence",
    "drug_exposure",
    "procedure_occurrence",
    "measurement",
    "observation",
    "note",
    "specimen",
)
# What the bundled feed (registrations, admissions, updates, lab results) must fill.
_SAMPLE_TABLES = (
    "person",
    "observation_period",
    "visit_occurrence",
    "visit_detail",
    "measurement",
    "specimen",
)


def sample_feed_path() -> Path:
    return Path(str(resources.files("hl7bus.ops").joinpath("demo/sample-feed.hl7")))


def run_demo(settings: Settings, console: Console, feed_file: Path | None = None) -> int:
    out_dir = Path("demo-out").absolute()
    shutil.rmtree(out_dir, ignore_errors=True)
    (out_dir / "logs").mkdir(parents=True)
    broker_cfg = settings.broker.model_copy(
        update={"name": "demo", "port": 0, "data_root": out_dir / "broker"}
    )
    procs = Processes(out_dir / "logs")
    try:
        return _run(settings, console, broker_cfg, procs, out_dir, feed_file)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping everything[/]")
        return 130
    except (ProcessError, local_kafka.LocalKafkaError) as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    finally:
        with console.status("stopping listener, worker, sink and broker..."):
            procs.stop_all()
            local_kafka.down(broker_cfg)


def _run(
    settings: Settings,
    console: Console,
    broker_cfg: local_kafka.LocalKafkaConfig,
    procs: Processes,
    out_dir: Path,
    feed_file: Path | None,
) -> int:
    started = time.monotonic()
    with console.status("resolving the Kafka jars (Maven, first run only) and starting Kafka..."):
        broker = local_kafka.up(broker_cfg)
    bootstrap = broker.bootstrap
    console.print(f"[green]✓[/] Kafka {broker.version} at {bootstrap}")

    bus = start_bus(settings, bootstrap, procs, out_dir, DEMO_FEED)
    console.print(f"[green]✓[/] topics applied: {', '.join(bus.topic_names)}")
    console.print(
        f"[green]✓[/] sample vocabulary loaded into the warehouse ({bus.concepts} concepts)"
    )
    console.print(f"[green]✓[/] listener on 127.0.0.1:{bus.mllp_port}, worker and sink started")
    catalog = topics.TopicCatalog.load(settings.topics)

    messages = read_messages([feed_file or sample_feed_path()])
    summary = send_and_report(console, "127.0.0.1", bus.mllp_port, messages, window=8).summary

    names = {tid: catalog.name(tid) for tid in catalog.specs}
    research = [n for tid, n in names.items() if tid.startswith("research.")]
    worker_topics = [names[tid] for tid in source_topics(settings.worker.stages)]
    with console.status("waiting for the worker and the sink to catch up..."):
        procs.wait_for(
            "the worker to process every record",
            lambda: (
                kafka_clients.group_lag(
                    settings.kafka, bootstrap, settings.worker.app_id, worker_topics
                )
                == 0
            ),
            _WAIT_S,
        )
        procs.wait_for(
            "the sink to write every research record",
            lambda: (
                kafka_clients.group_lag(
                    settings.kafka, bootstrap, settings.warehouse.group_id, research
                )
                == 0
            ),
            _WAIT_S,
        )
    procs.stop("sink")  # releases the DuckDB file for the report and the lake sink
    with console.status("writing the MEDS lake (the lake sink shares the warehouse's key map)..."):
        lake = run_lake(settings, bootstrap, procs, out_dir, research)
    sizes = kafka_clients.topic_sizes(settings.kafka, bootstrap, list(names.values()))
    rows = _table_rows(bus.warehouse)
    pair = _example_pair(settings, bootstrap, names[topics.EVENTS], names["research.patient"])

    report = _report(summary.total, summary.by_code, sizes, rows, bus.warehouse)
    age = f", newest row {lake.newest_age_s:.0f} s old" if lake.newest_age_s is not None else ""
    report.add_row(
        f"MEDS lake: subjects, rows, shards{age}",
        f"{lake.subjects}, {lake.rows}, {lake.shards}" + ("" if lake.valid else " (INVALID)"),
    )
    console.print(report)
    leaks = _print_pair(console, pair)
    filled = all(rows[table] for table in _SAMPLE_TABLES)
    ok = summary.ok and filled and pair is not None and not leaks and lake.valid and lake.rows > 0
    verdict = "[bold green]demo OK[/]" if ok else "[bold red]demo FAILED[/]"
    console.print(f"{verdict} in {time.monotonic() - started:.0f}s; logs and warehouse: {out_dir}")
    return 0 if ok else 1


@dataclass(frozen=True)
class Bus:
    """What `start_bus` started: where to send, where the rows land, where the sink's
    metrics are."""

    mllp_port: int
    warehouse: Path
    sink_metrics_port: int
    topic_names: tuple[str, ...]
    concepts: int


def start_bus(
    settings: Settings, bootstrap: str, procs: Processes, out_dir: Path, feed: str
) -> Bus:
    """Apply the topic catalog, load the sample vocabulary into a DuckDB warehouse under
    `out_dir`, start listener, worker and warehouse sink as processes on free ports, and wait
    until the listener accepts connections (the demo and `hl7bus bench e2e`)."""
    admin = kafka_clients.admin_client(settings.kafka, bootstrap)
    catalog = topics.TopicCatalog.load(settings.topics)
    topics_apply.apply(admin, catalog, settings.topics.replication_factor)

    mllp_port, metrics_port, sink_metrics_port = free_port(), free_port(), free_port()
    warehouse = out_dir / "warehouse.duckdb"
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": bootstrap,
        "HL7BUS_MLLP_PORT": str(mllp_port),
        "HL7BUS_MLLP_FEED": feed,
        "HL7BUS_MLLP_METRICS_PORT": str(metrics_port),
        "HL7BUS_WORKER_DATA_DIR": str(out_dir / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(free_port()),
        "HL7BUS_WAREHOUSE_PATH": str(warehouse),
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(sink_metrics_port),
        # A fresh random key per run, held only by the worker process.
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }
    # The shipped sample vocabulary, so codes map to concepts (`hl7bus warehouse vocab load`).
    loaded = load_vocabulary(sample_folder(), path=warehouse)
    concepts = sum(item.rows for item in loaded if item.table == "concept")
    procs.start("listener", ["mllp", "serve"], env)
    procs.start("worker", ["worker"], env)
    procs.start("sink", ["sink", "warehouse"], env)
    procs.wait_for("the MLLP listener", lambda: port_open(mllp_port), 30)
    return Bus(
        mllp_port=mllp_port,
        warehouse=warehouse,
        sink_metrics_port=sink_metrics_port,
        topic_names=tuple(spec.name for spec in catalog.specs.values()),
        concepts=concepts,
    )


@dataclass(frozen=True)
class LakeReport:
    subjects: int
    rows: int
    shards: int
    newest_age_s: float | None  # now minus the Kafka time of the newest record published
    valid: bool  # `hl7bus lake check` passed


def run_lake(
    settings: Settings, bootstrap: str, procs: Processes, out_dir: Path, research: list[str]
) -> LakeReport:
    """Run `hl7bus sink lake` into `out_dir`/lake until every research record is written and
    compacted, then stop it and check the dataset. It runs after the warehouse sink: a DuckDB
    warehouse (its key map) serves one process at a time (docs/ai-sink.md)."""
    from hl7bus.connectors.lake.check import check_lake

    lake_dir, port = out_dir / "lake", free_port()
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": bootstrap,
        "HL7BUS_WAREHOUSE_PATH": str(out_dir / "warehouse.duckdb"),
        "HL7BUS_LAKE_PATH": str(lake_dir),
        "HL7BUS_LAKE_METRICS_PORT": str(port),
        "HL7BUS_LAKE_COMPACT_INTERVAL_S": "1",
    }
    procs.start("lake", ["sink", "lake"], env)
    procs.wait_for(
        "the lake sink to write every research record",
        lambda: (
            kafka_clients.group_lag(settings.kafka, bootstrap, settings.lake.group_id, research)
            == 0
        ),
        _WAIT_S,
    )
    pending = lake_dir / "_hl7bus" / "pending"
    procs.wait_for("the lake's compaction", lambda: not any(pending.glob("*.parquet")), _WAIT_S)
    newest = _metric(port, "hl7bus_lake_newest_record_timestamp_seconds")
    age = time.time() - newest if newest else None
    procs.stop("lake")
    checked = check_lake(lake_dir)
    return LakeReport(checked.subjects, checked.rows, checked.shards, age, checked.ok)


def _metric(port: int, name: str) -> float | None:
    """One unlabelled metric of a component's /metrics, None when absent."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def _table_rows(path: Path) -> dict[str, int]:
    """Rows per OMOP clinical table (the vocabulary tables are loaded, not written)."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in OMOP_TABLES
        }
    finally:
        conn.close()


def _report(
    sent: int,
    by_code: dict[str, int],
    sizes: dict[str, int | None],
    rows: dict[str, int],
    path: Path,
) -> Table:
    table = Table(title="hl7bus demo report", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("messages sent", str(sent))
    for code, count in by_code.items():
        table.add_row(f"  ACK {code}", str(count))
    for name, size in sizes.items():
        table.add_row(f"records in {name}", str(size))
    for name, count in rows.items():
        table.add_row(f"OMOP rows in {path.name}: {name}", str(count))
    return table


def _example_pair(
    settings: Settings, bootstrap: str, events_topic: str, research_topic: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """One research Patient event and the identified event it was made from (same event id)."""
    research = _read_all(settings, bootstrap, research_topic)
    if not research:
        return None
    wanted = research[0]["event_id"]
    for event in _read_all(settings, bootstrap, events_topic):
        if event.get("event_id") == wanted:
            return event, research[0]
    return None


def _read_all(settings: Settings, bootstrap: str, topic: str) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            **kafka_clients.base_config(settings.kafka, bootstrap),
            "group.id": f"hl7bus-demo-report-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        remaining = len(metadata.topics[topic].partitions)
        consumer.subscribe([topic])
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while remaining and time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None:
                continue
            if record.error():
                remaining -= 1  # partition EOF
                continue
            events.append(codec.decode(record.value() or b"")[1])
        return events
    finally:
        consumer.close()


def _print_pair(console: Console, pair: tuple[dict[str, Any], dict[str, Any]] | None) -> list[str]:
    """Show the pair side by side; return the names of direct identifiers found in the output."""
    if pair is None:
        console.print("[red]no de-identified Patient record to show[/]")
        return ["(missing)"]
    source, research = pair
    phi = codec.schema("Patient").phi_classes()
    table = Table(title="one Patient event: identified (hl7.events) vs de-identified (research)")
    table.add_column("field")
    table.add_column("PHI class")
    table.add_column("identified")
    table.add_column("de-identified")
    for name in source:
        before, after = source[name], research.get(name)
        if before in (None, "", []) and after in (None, "", []):
            continue  # fields this message does not carry
        if name == "message_identifiers":
            # The parse stage's carrier of the message's identifiers for the leak check and
            # text scrubbing: many lines, never on a research topic.
            before = f"({len(str(before).splitlines())} identifier values of the message)"
        table.add_row(name, phi[name], _show(before), _show(after))
    console.print(table)
    research_text = " ".join(str(v) for v in research.values() if v is not None)
    leaks = [
        name
        for name, value in source.items()
        if phi[name] == "direct" and value and str(value) in research_text
    ]
    if leaks:
        console.print(f"[bold red]identifiers found in the de-identified record: {leaks}[/]")
    else:
        console.print("[green]✓[/] no direct identifier of the source is in the research record")
    return leaks


def _show(value: Any) -> str:
    return "" if value is None else str(value)
