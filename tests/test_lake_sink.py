"""The lake sink on the real broker, beside the warehouse sink on a real PostgreSQL: the golden
messages' research records in, a MEDS dataset out that DuckDB and pyarrow.dataset read and
`hl7bus lake check` passes; subject ids are the warehouse's person ids; records that cannot
become rows in the DLQ with their reason; offsets committed; health endpoints served."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import duckdb
import psycopg
import pyarrow.dataset as ds
import pytest
import warehouse_events as ev
from confluent_kafka import KafkaException, Producer
from kafka_helpers import apply_catalog, read_topic
from polling import wait_until
from postgres_server import fresh_database, url_of
from typer.testing import CliRunner

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.lake.config import LakeConfig
from hl7bus.connectors.lake.keys import WarehouseKeys
from hl7bus.connectors.lake.sink import LakeSink
from hl7bus.connectors.lake.store import LakeStore
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.sink import WarehouseSink
from hl7bus.ops import health
from hl7bus.ops.cli import app
from hl7bus.ops.processes import free_port
from hl7bus.schemas import codec, topics

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class _Sink(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


class Running:
    """A sink running on its own event loop in a thread, as `hl7bus sink ...` runs it."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self.sink.run(self._stop))
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the sink did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def warehouse_url(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, "lake") as conninfo:
        yield url_of(conninfo)


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_lake_sink_end_to_end_beside_the_warehouse(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, warehouse_url: str
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    kafka = KafkaConfig()
    values = ev.research_values(ev.golden_messages())
    # Two records that cannot become MEDS rows, on research.generic, which this test's warehouse
    # sink does not read: the warehouse's metrics are the process's, and its own tests count
    # its DLQ records exactly. (Generic events make no OMOP or MEDS rows: nothing is missed.)
    bad = [b"not an avro record", ev.encode(ev.diagnosis(code=None, standard_code=None))]
    producer = Producer(kafka_clients.producer_config(kafka, kafka_bootstrap))
    for value in values:
        producer.produce(catalog.name(f"research.{codec.decode(value)[0].lower()}"), value=value)
    for value in bad:
        producer.produce(catalog.name("research.generic"), value=value)
    assert producer.flush(30) == 0
    generic = catalog.name("research.generic")

    warehouse_cfg = WarehouseConfig(
        url=warehouse_url, group_id=f"{unique_name}-wh", metrics_port=None, poll_timeout_s=0.2
    )
    lake_cfg = LakeConfig(
        path=tmp_path / "lake",
        group_id=f"{unique_name}-lake",
        metrics_port=free_port(),
        poll_timeout_s=0.2,
        compact_interval_s=0.5,
        batch_size=40,  # several append files and passes
    )

    def consumer(group: str) -> dict[str, Any]:
        return kafka_clients.consumer_config(kafka, kafka_bootstrap, group)

    producer_config = kafka_clients.producer_config(kafka, kafka_bootstrap)
    dlq = catalog.name(topics.DLQ)
    warehouse = Running(
        WarehouseSink(
            warehouse_cfg,
            consumer(warehouse_cfg.group_id),
            producer_config,
            [name for name in research if name != generic],  # read_by_warehouse
            dlq,
        )
    )
    lake_sink = LakeSink(
        lake_cfg,
        WarehouseKeys(warehouse_cfg),
        consumer(lake_cfg.group_id),
        producer_config,
        research,
        dlq,
        start_http=health.start_http,
    )
    lake = Running(lake_sink)
    try:

        def caught_up(group: str, names: list[str]) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    return kafka_clients.group_lag(kafka, kafka_bootstrap, group, names) == 0
                except KafkaException:  # a coordinator still loading on a fresh broker
                    return False

            return check

        read_by_warehouse = [name for name in research if name != generic]
        wait_until(
            caught_up(lake_cfg.group_id, research), "the lake sink to commit every record", 90
        )
        wait_until(
            caught_up(warehouse_cfg.group_id, read_by_warehouse), "the warehouse to catch up", 90
        )
        port = lake_cfg.metrics_port
        assert port is not None
        wait_until(lambda: not lake_sink.store.pending_files(), "a compaction pass", 30)
        assert get(port, "/readyz") == "ready\n"
        assert get(port, "/healthz") == "ok\n"
        scrape = get(port, "/metrics")
        assert 'hl7bus_lake_dlq_total{reason="no_code"} 1.0' in scrape
        assert 'hl7bus_lake_dlq_total{reason="undecodable"} 1.0' in scrape
        assert "hl7bus_lake_last_publish_timestamp_seconds" in scrape
    finally:
        lake.stop()
        warehouse.stop()

    root = Path(lake_cfg.path)
    # Read back with DuckDB and with pyarrow.dataset: the same rows.
    con = duckdb.connect()
    glob = str(root / "data" / "*" / "*.parquet")
    total, subjects, births = con.sql(
        f"SELECT count(*), count(DISTINCT subject_id), count(*) FILTER (code = 'MEDS_BIRTH') "
        f"FROM read_parquet('{glob}')"
    ).fetchall()[0]
    table = ds.dataset(root / "data", format="parquet").to_table()
    assert table.num_rows == total > 0 and subjects > 1 and births > 0
    assert table.schema.field("numeric_value").type == "float"
    assert {"LOINC", "MEDS_BIRTH", "VISIT"} <= {
        code.split("/")[0] for code in table["code"].to_pylist()
    }
    lake_births = dict(
        con.sql(
            f"SELECT subject_id, year(time) FROM read_parquet('{glob}') WHERE code = 'MEDS_BIRTH'"
        ).fetchall()
    )
    # One identity: each subject's birth year is its OMOP person's year of birth.
    with psycopg.connect(warehouse_url) as conn:
        rows = conn.execute("SELECT person_id, year_of_birth FROM person").fetchall()
        persons: dict[int, int] = dict(rows)
        person_keys = conn.execute(
            "SELECT id FROM hl7bus_keys.key_map WHERE kind = 'person'"
        ).fetchall()
    assert lake_births and all(persons[subject] == year for subject, year in lake_births.items())
    # Subjects without a Patient event have no person row yet, but their key map id.
    assert set(table["subject_id"].to_pylist()) <= {id_ for (id_,) in person_keys}

    # The records that cannot become rows are in the DLQ with their reason.
    reasons = set()
    for record in read_topic(kafka_bootstrap, dlq, 3):
        headers = dict(record.headers() or [])
        if headers.get("hl7bus.stage") == b"sinking" and record.value() != bad[0]:
            reasons.add(headers["hl7bus.reason"])
    assert b"no_code" in reasons

    checked = CliRunner().invoke(app, ["lake", "check", str(root)])
    assert checked.exit_code == 0, checked.output
    assert f"{subjects} subjects, {total} rows" in " ".join(checked.output.split())


@pytest.mark.slow
def test_lake_sink_killed_with_sigkill_and_restarted_loses_and_doubles_nothing(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """`hl7bus sink lake` as a process, killed with SIGKILL once its first shard is out, then
    started again: the lake ends with the same rows as a lake written once from each record."""
    from hl7bus.connectors.lake.compaction import compact
    from hl7bus.connectors.lake.writer import LakeWriter
    from hl7bus.connectors.warehouse.writer import Incoming
    from hl7bus.ops.cli.bench import bench_module
    from hl7bus.ops.processes import Processes

    catalog = apply_catalog(kafka_bootstrap, unique_name)
    research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    kafka = KafkaConfig()
    values = bench_module("warehouse").stream(1, 60, seed=3)  # 60 stays, every research type
    producer = Producer(kafka_clients.producer_config(kafka, kafka_bootstrap))
    for value in values:
        # Keyed by patient, as the worker writes them: a fact's versions stay in order.
        event_type, event = codec.decode(value)
        topic = catalog.name(f"research.{event_type.lower()}")
        producer.produce(topic, key=event["patient_key"].encode(), value=value)
    assert producer.flush(30) == 0

    root, group = tmp_path / "lake", f"{unique_name}-lake"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HL7BUS_")},
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "HL7BUS_LAKE_PATH": str(root),
        "HL7BUS_LAKE_GROUP_ID": group,
        "HL7BUS_LAKE_METRICS_PORT": str(free_port()),
        "HL7BUS_LAKE_BATCH_SIZE": "100",
        "HL7BUS_LAKE_COMPACT_INTERVAL_S": "0.2",
        "HL7BUS_LAKE_POLL_TIMEOUT_S": "0.2",
    }
    (tmp_path / "logs").mkdir()
    procs = Processes(tmp_path / "logs")
    try:
        procs.start("lake", ["sink", "lake"], env)
        procs.wait_for("the first shard", lambda: any(root.glob("data/*/*.parquet")), 90)
        os.kill(procs.running["lake"].pid, signal.SIGKILL)
        procs.running.pop("lake").wait(30)
        procs.start("lake", ["sink", "lake"], env)

        def done() -> bool:
            try:
                lag = kafka_clients.group_lag(kafka, kafka_bootstrap, group, research)
            except KafkaException:
                return False
            return lag == 0 and not any(root.glob("_hl7bus/pending/*.parquet"))

        procs.wait_for("the restarted sink to write and compact everything", done, 120)
    finally:
        procs.stop_all()

    # The same records written once each, in one go, into a lake of its own.
    once = tmp_path / "once"
    keys = WarehouseKeys(WarehouseConfig(path=tmp_path / "once.duckdb"))
    store = LakeStore(once, LakeConfig().layout())
    store.open()
    keys.open()
    try:
        LakeWriter(store, keys).write([Incoming(value) for value in values])
    finally:
        keys.close()
    compact(store)

    def content(folder: Path) -> list[tuple[Any, ...]]:
        # Subject ids depend on the order the key map first saw each patient: compared by
        # everything else.
        table = ds.dataset(folder / "data", format="parquet").to_table()
        columns = ["time", "code", "numeric_value", "text_value", "unit", "event_id", "fact_id"]
        return sorted(
            (tuple(row[c] for c in columns) for row in table.to_pylist()),
            key=repr,
        )

    assert content(root) == content(once)
    checked = CliRunner().invoke(app, ["lake", "check", str(root)])
    assert checked.exit_code == 0, checked.output
