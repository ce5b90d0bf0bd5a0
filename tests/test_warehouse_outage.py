"""The warehouse sink through a database outage, on the real broker: `hl7bus sink warehouse`
pauses (nothing committed), says why on /readyz and in its metrics, retries, and once the
database is back writes every fact once (compared with a warehouse written from each record
once, as tests/test_worker_scale_out.py does). And which database errors are outages: real
refusals of a real server and a real locked file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
import warehouse_events as ev
from confluent_kafka import KafkaException
from kafka_helpers import apply_catalog, produce
from postgres_server import Server, fresh_database, stoppable_server, url_of
from psycopg.conninfo import conninfo_to_dict
from samples import feed
from warehouse_rows import TABLES, omop_rows
from worker_helpers import KAFKA, committed_offsets, http_get

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.warehouse import check
from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine, outage_detail, outage_reason
from hl7bus.connectors.warehouse.vocabulary import VocabularyLookup
from hl7bus.connectors.warehouse.writer import BatchWriter, Incoming
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import codec, topics

OUTAGE_S = 30  # how long the database stays down (issue 12, point 7)


class Research:
    """Research records of named feeds (the sample feed as each), in topic order."""

    def __init__(self, catalog: topics.TopicCatalog) -> None:
        self.catalog = catalog
        self.values: list[bytes] = []

    def feeds(self, *names: str) -> list[tuple[str, bytes, bytes]]:
        records = []
        for name in names:
            for value in ev.research_values(feed(), feed=name):
                event_type, event = codec.decode(value, None)
                topic = self.catalog.name(topics.research(event_type))
                records.append((topic, str(event["patient_key"]).encode(), value))
                self.values.append(value)
        return records


class Sink:
    """`hl7bus sink warehouse` as a process, and what a test asks of it."""

    def __init__(
        self, procs: Processes, bootstrap: str, unique_name: str, warehouse: dict[str, str]
    ) -> None:
        self.procs, self.bootstrap = procs, bootstrap
        self.group = f"{unique_name}-warehouse"
        self.port = free_port()
        self.catalog = apply_catalog(bootstrap, unique_name)
        self.partitions = {
            s.name: s.partitions
            for s in self.catalog.specs.values()
            if s.id.startswith("research.")
        }
        self.research = list(self.partitions)
        self.env = {
            **os.environ,
            "HL7BUS_KAFKA_BOOTSTRAP": bootstrap,
            "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
            "HL7BUS_WAREHOUSE_GROUP_ID": self.group,
            "HL7BUS_WAREHOUSE_METRICS_PORT": str(self.port),
            # Small batches: the stream is many transactions, so the outage lands inside it.
            "HL7BUS_WAREHOUSE_BATCH_SIZE": "100",
            "HL7BUS_WAREHOUSE_RETRY_MAX_S": "2",
            **warehouse,
        }

    def start(self) -> None:
        self.procs.start("sink", ["sink", "warehouse"], self.env)

    def lag(self) -> int:
        try:
            return kafka_clients.group_lag(KAFKA, self.bootstrap, self.group, self.research)
        except KafkaException:  # a coordinator still loading on a fresh broker
            return -1

    def committed(self) -> dict[tuple[str, int], int]:
        found = {}
        for topic in self.research:
            for partition, offset in committed_offsets(
                self.bootstrap, self.group, topic, self.partitions[topic]
            ).items():
                found[(topic, partition)] = offset
        return found

    def ready(self) -> tuple[int, str]:
        return http_get(self.port, "/readyz")

    def metric(self, line: str) -> bool:
        """Whether the scrape has `line` (name, labels and value)."""
        return line in http_get(self.port, "/metrics")[1].splitlines()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    running = Processes(logs)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_stopped_mid_stream_every_fact_once(
    kafka_bootstrap: str, unique_name: str, procs: Processes
) -> None:
    with stoppable_server() as server:
        try:
            _postgres_outage(server, kafka_bootstrap, unique_name, procs)
        finally:
            if not server.running:  # a failure mid-outage: up again to drop the databases
                server.start()


def _postgres_outage(
    server: Server, kafka_bootstrap: str, unique_name: str, procs: Processes
) -> None:
    with fresh_database(server.url, "outage") as db, fresh_database(server.url, "ref") as ref_db:
        url, ref = url_of(db), url_of(ref_db)
        sink = Sink(procs, kafka_bootstrap, unique_name, {"HL7BUS_WAREHOUSE_URL": url})
        research = Research(sink.catalog)
        sink.start()
        procs.wait_for("the sink to be ready", lambda: sink.ready()[0] == 200, 60)

        # One feed written and committed, then five more; the server stops as soon as the
        # sink has committed part of them.
        produce(kafka_bootstrap, research.feeds("a"))
        first = len(research.values)
        procs.wait_for("the first feed committed", lambda: sink.lag() == 0, 120)
        produce(kafka_bootstrap, research.feeds("b", "c", "d", "e", "f"))
        procs.wait_for(
            "the sink to start on the rest",
            lambda: sum(sink.committed().values()) > first,
            120,
            interval=0.05,
        )
        server.stop()
        stopped = time.monotonic()
        assert sink.lag() > 0, "the sink finished before the stop; the test needs more records"

        procs.wait_for(
            "the sink to report the outage",
            lambda: sink.ready()[0] == 503 and sink.metric("hl7bus_warehouse_database_up 0.0"),
            60,
        )
        body = sink.ready()[1]
        assert body.startswith("not ready: warehouse database unreachable for "), body
        assert sink.metric('hl7bus_warehouse_outages_total{reason="unreachable"} 1.0')
        # Halfway through (the last batch written before the stop is committed by then, within
        # the consumer's 1 s auto-commit interval), then at the end: nothing committed between.
        time.sleep(max(0.0, OUTAGE_S / 2 - (time.monotonic() - stopped)))
        at_outage = sink.committed()
        lag_at_outage = sink.lag()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert procs.running["sink"].poll() is None, "the sink exited during the outage"
        assert sink.committed() == at_outage, "offsets committed while the database was down"
        assert sink.lag() == lag_at_outage > 0
        assert sink.ready()[0] == 503
        seconds = [
            float(line.split()[-1])
            for line in http_get(sink.port, "/metrics")[1].splitlines()
            if line.startswith("hl7bus_warehouse_outage_seconds ")
        ]
        assert seconds and seconds[0] > 0

        server.start()
        procs.wait_for("the sink to catch up after the outage", lambda: sink.lag() == 0, 120)
        procs.wait_for("the sink to be ready again", lambda: sink.ready()[0] == 200, 30)
        assert sink.metric("hl7bus_warehouse_database_up 1.0")
        assert sink.metric("hl7bus_warehouse_outage_seconds 0.0")
        assert sink.metric('hl7bus_warehouse_outages_total{reason="unreachable"} 1.0')
        procs.stop("sink")

        _compare(WarehouseConfig(url=url), WarehouseConfig(url=ref), research.values)


@pytest.mark.kafka
def test_duckdb_file_locked_at_start_waits_then_writes(
    kafka_bootstrap: str, unique_name: str, procs: Processes, tmp_path: Path
) -> None:
    path = tmp_path / "warehouse.duckdb"
    sink = Sink(procs, kafka_bootstrap, unique_name, {"HL7BUS_WAREHOUSE_PATH": str(path)})
    research = Research(sink.catalog)
    produce(kafka_bootstrap, research.feeds("a"))

    # Another process holds the file (DuckDB allows one writer process).
    holder = _hold(path)
    try:
        sink.start()
        procs.wait_for(
            "the sink to report the locked file",
            lambda: sink.metric('hl7bus_warehouse_outages_total{reason="locked"} 1.0'),
            60,
        )
        status, body = sink.ready()
        assert status == 503, body
        assert body.startswith("not ready: warehouse database locked for "), body
        assert sink.metric("hl7bus_warehouse_database_up 0.0")
        # Not even subscribed: nothing consumed, nothing committed.
        procs.wait_for("the group's lag", lambda: sink.lag() >= 0, 30)
        assert sink.lag() == len(research.values)
    finally:
        holder.communicate("", timeout=30)  # released: the holder closes the file and exits
    procs.wait_for("the sink to write everything", lambda: sink.lag() == 0, 120)
    procs.wait_for("the sink to be ready", lambda: sink.ready()[0] == 200, 30)
    assert sink.metric("hl7bus_warehouse_database_up 1.0")
    procs.stop("sink")

    _compare(
        WarehouseConfig(path=path), WarehouseConfig(path=tmp_path / "ref.duckdb"), research.values
    )


# Holds a DuckDB file open (its writer lock) until stdin closes.
_HOLD = (
    "import sys, duckdb\n"
    "conn = duckdb.connect(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
    "conn.close()\n"
)


def _compare(
    actual_cfg: WarehouseConfig, reference_cfg: WarehouseConfig, values: list[bytes]
) -> None:
    """The warehouse the sink wrote holds the facts of the reference, written here from each
    record once (in one go, with the sink's own writer and vocabulary lookup), each once."""
    reference = open_engine(reference_cfg)
    try:
        lookup = reference.lookup_connection()
        concepts = VocabularyLookup(lookup, reference.dialect, reference.cdm_schema)
        BatchWriter(reference, concepts).write([Incoming(v) for v in values])
        lookup.close()
        wanted = omop_rows(reference)
    finally:
        reference.close()
    engine = open_engine(actual_cfg)
    try:
        actual = omop_rows(engine)
        quality = check.run(engine)
    finally:
        engine.close()
    assert quality.passed, [f for f in quality.findings if not f.passed]
    for table in TABLES:
        doubled = [row for row, n in actual[table].items() if n > 1]
        assert not doubled, f"{table}: {len(doubled)} rows written twice"
        assert actual[table] == wanted[table], table
    assert sum(actual["person"].values()) > 0 and sum(actual["measurement"].values()) > 0


def _hold(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_duckdb_file_another_process_holds_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    holder = _hold(path)
    try:
        with pytest.raises(duckdb.IOException) as caught:
            open_engine(WarehouseConfig(path=path))
    finally:
        holder.communicate("", timeout=30)
    assert outage_reason(caught.value) == "locked"
    assert outage_detail(caught.value).startswith("IOException: ")
    open_engine(WarehouseConfig(path=path)).close()  # released: it opens


def test_a_duckdb_commit_the_disk_could_not_take_is_a_disk_full_outage() -> None:
    """DuckDB fails a COMMIT whose write-ahead log hits a full disk with a TransactionException
    (its text as DuckDB 1.x words it; tests/test_chaos.py fills a real tmpfs): an outage, so the
    sink waits for space instead of stopping. Other transaction errors stay errors."""
    full = duckdb.TransactionException(
        'TransactionContext Error: Failed to commit: Could not write file "/w/x.duckdb.wal": '
        "No space left on device"
    )
    assert outage_reason(full) == "disk_full"
    assert outage_reason(duckdb.TransactionException("Conflict on tuple deletion!")) is None


@pytest.mark.postgres
def test_postgres_refusals_are_outages_with_their_reason(postgres_url: str) -> None:
    port = conninfo_to_dict(postgres_url)["port"]
    reasons = {}
    for name, url in {
        "no server": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "no database": f"postgresql://postgres@127.0.0.1:{port}/no_such_database",
        "no role": f"postgresql://no_such_role@127.0.0.1:{port}/postgres",
    }.items():
        with pytest.raises(psycopg.OperationalError) as caught:
            open_engine(WarehouseConfig(url=url))
        reasons[name] = outage_reason(caught.value)
        if name == "no database":
            assert "no_such_database" in outage_detail(caught.value)
    assert reasons == {"no server": "unreachable", "no database": "refused", "no role": "refused"}

    # On an open connection: a lock not granted in time, a server shutting the session down.
    with fresh_database(postgres_url, "reasons") as conninfo:
        holder = psycopg.connect(conninfo)
        holder.execute("CREATE TABLE t (x int)")
        holder.commit()
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        with psycopg.connect(conninfo) as waiter:
            waiter.execute("SET lock_timeout = '100ms'")
            with pytest.raises(psycopg.OperationalError) as caught:
                waiter.execute("SELECT * FROM t")
            assert outage_reason(caught.value) == "locked"
            assert outage_detail(caught.value) == "LockNotAvailable"  # its message names a table
            waiter.rollback()
            pid = waiter.info.backend_pid
            holder.rollback()
            holder.execute("SELECT pg_terminate_backend(%s)", [pid])
            with pytest.raises(psycopg.OperationalError) as caught:
                waiter.execute("SELECT 1")
            assert outage_reason(caught.value) == "unreachable"
        holder.close()

    # Not outages: what the data or a bug causes.
    assert outage_reason(psycopg.errors.UniqueViolation()) is None
    assert outage_reason(duckdb.ConstraintException("x")) is None
    assert outage_reason(ValueError("x")) is None


@pytest.mark.postgres
def test_a_table_another_session_locks_is_a_locked_outage(postgres_url: str) -> None:
    """warehouse.lock_timeout_s: a batch that waits too long for a lock fails as an outage
    (the sink pauses and retries) instead of blocking the sink while /readyz says ready."""
    with fresh_database(postgres_url, "locked") as conninfo:
        cfg = WarehouseConfig(url=url_of(conninfo), lock_timeout_s=0.2)
        engine = open_engine(cfg)
        writer = BatchWriter(engine, NoVocabulary())
        records = [Incoming(ev.encode(ev.patient())), Incoming(ev.encode(ev.observation()))]
        try:
            with psycopg.connect(conninfo) as holder:
                holder.execute(f"LOCK TABLE {engine.table('measurement')} IN ACCESS EXCLUSIVE MODE")
                with pytest.raises(psycopg.OperationalError) as caught:
                    writer.write(records)
                assert outage_reason(caught.value) == "locked"
            # The lock released (the holder's transaction ended): the same batch is written.
            assert set(writer.write(records).results) == {"written"}
            assert engine.query(f"SELECT count(*) FROM {engine.table('measurement')}") == [(1,)]
        finally:
            engine.close()
