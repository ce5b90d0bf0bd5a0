"""The warehouse sink on the real broker: research topics in, OMOP rows out, refused records in
the DLQ with reason headers, offsets committed after the transaction, health endpoints served.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
import warehouse_events as ev
from confluent_kafka import KafkaException
from kafka_helpers import apply_catalog, produce, read_topic
from polling import wait_until

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.sink import WarehouseSink
from hl7bus.ops import health
from hl7bus.ops.processes import free_port
from hl7bus.schemas import topics

pytestmark = pytest.mark.kafka


class Running:
    """A sink running on its own event loop in a thread, as `hl7bus sink warehouse` runs it."""

    def __init__(self, sink: WarehouseSink) -> None:
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
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the sink did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def setup(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> Iterator[tuple[topics.TopicCatalog, Callable[[], Running], WarehouseConfig]]:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    cfg = WarehouseConfig(
        path=tmp_path / "warehouse.duckdb",
        group_id=f"{unique_name}-warehouse",
        metrics_port=free_port(),
        poll_timeout_s=0.2,
    )
    names = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    running: list[Running] = []

    def start() -> Running:
        sink = WarehouseSink(
            cfg,
            kafka_clients.consumer_config(KafkaConfig(), kafka_bootstrap, cfg.group_id),
            kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap),
            names,
            catalog.name(topics.DLQ),
            start_http=health.start_http,
        )
        running.append(Running(sink))
        return running[-1]

    yield catalog, start, cfg
    for item in running:
        if item._thread.is_alive():
            item.stop()


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_sink_writes_dlqs_and_commits_after_the_transaction(
    kafka_bootstrap: str,
    setup: tuple[topics.TopicCatalog, Callable[[], Running], WarehouseConfig],
) -> None:
    catalog, start, cfg = setup
    patients, results = catalog.name("research.patient"), catalog.name("research.observation")
    key = ev.pseudonym("patient-1").encode()
    nameless = ev.patient(patient_key=ev.pseudonym("patient-2"), birth_year=None)
    records = [
        (patients, key, ev.encode(ev.patient())),
        (patients, b"p2", ev.encode(nameless)),
        (results, key, ev.encode(ev.observation())),
        (results, key, ev.encode(ev.observation(result_key=ev.pseudonym("r2")))),
        (results, key, b"not an avro record"),
    ]
    produce(kafka_bootstrap, records)
    running = start()
    research = [patients, results]
    kafka = KafkaConfig()

    def caught_up() -> bool:
        try:
            return kafka_clients.group_lag(kafka, kafka_bootstrap, cfg.group_id, research) == 0
        except KafkaException:  # a coordinator still loading on a fresh broker
            return False

    wait_until(caught_up, "the sink to commit every record", 60)
    assert cfg.metrics_port is not None
    assert get(cfg.metrics_port, "/readyz") == "ready\n"
    assert get(cfg.metrics_port, "/healthz") == "ok\n"
    scrape = get(cfg.metrics_port, "/metrics")
    assert 'hl7bus_warehouse_dlq_total{reason="undecodable"} 1.0' in scrape
    assert 'hl7bus_warehouse_rows_total{op="upsert",table="measurement"}' in scrape
    assert "hl7bus_warehouse_last_commit_timestamp_seconds" in scrape
    running.stop()

    dlq = read_topic(kafka_bootstrap, catalog.name(topics.DLQ), 2)
    reasons = {}
    for record in dlq:
        headers = dict(record.headers() or [])
        assert headers["hl7bus.stage"] == b"sinking"
        assert headers["hl7bus.topic"] in (patients.encode(), results.encode())
        reasons[headers["hl7bus.reason"]] = record.value()
        # Codes and positions only: nothing of the record's content.
        assert set(headers) == {
            "hl7bus.stage",
            "hl7bus.reason",
            "hl7bus.topic",
            "hl7bus.partition",
            "hl7bus.offset",
        }
        assert (headers["hl7bus.partition"] or b"").isdigit()
        assert (headers["hl7bus.offset"] or b"").isdigit()
    assert reasons == {
        b"undecodable": b"not an avro record",
        b"missing:person.year_of_birth": ev.encode(nameless),
    }

    conn = duckdb.connect(str(cfg.path), read_only=True)
    assert conn.execute("SELECT count(*) FROM measurement").fetchone() == (2,)
    assert conn.execute("SELECT count(*) FROM person").fetchone() == (1,)
    conn.close()

    # Redelivery (the same records again) changes nothing; a restarted sink resumes after the
    # committed offsets and writes only what is new.
    produce(kafka_bootstrap, records[:4])
    produce(kafka_bootstrap, [(results, key, ev.encode(ev.observation(result_key="r3")))])
    running = start()
    wait_until(caught_up, "the restarted sink to commit", 60)
    running.stop()
    conn = duckdb.connect(str(cfg.path), read_only=True)
    assert conn.execute("SELECT count(*) FROM measurement").fetchone() == (3,)
    assert conn.execute("SELECT count(*) FROM person").fetchone() == (1,)
    conn.close()
    assert len(read_topic(kafka_bootstrap, catalog.name(topics.DLQ), 3)) == 3
