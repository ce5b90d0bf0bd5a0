"""Scale out on the real broker: two `hl7bus worker` processes in one consumer group, one of
them killed (SIGKILL) mid-stream, the survivor takes its partitions over, and the warehouse
(`hl7bus sink warehouse`, OMOP on DuckDB) holds every fact exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import apply_catalog, read_topic
from warehouse_rows import TABLES, omop_rows
from worker_helpers import KAFKA, SEOUL, Produced, Supervised, http_status, kill_mid_stream
from worker_helpers import worker_env as base_worker_env

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.warehouse import map_clinical
from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.duckdb_engine import DuckDBEngine
from hl7bus.connectors.warehouse.writer import BatchWriter, Incoming
from hl7bus.ops.processes import free_port
from hl7bus.schemas import codec, topics
from hl7bus.streams import deid
from hl7bus.streams.deid.config import DeidConfig
from hl7bus.streams.steps import deidentify_step, parse_step

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _research(produced: Iterable[Produced], deid_key: str) -> list[tuple[str, bytes]]:
    """(research topic id, value) of every research record the worker must make of the raw
    records: its own parse and de-identify steps, with its key and default policy."""
    settings = DeidConfig(key=deid_key)
    policy, key = deid.Policy.load(settings.policy), deid.load_key(settings)
    research = []
    for record in produced:
        for event in parse_step(record.key, record.value, SEOUL):
            if event.topic_id != topics.EVENTS:
                continue
            for out in deidentify_step(event.value, policy, key, settings.leak_check):
                if out.topic_id.startswith("research."):
                    research.append((out.topic_id, out.value))
    return research


def _rows(path: Path) -> dict[str, Counter[tuple[Any, ...]]]:
    engine = DuckDBEngine(path, None, WarehouseConfig().keys_schema)
    try:
        return omop_rows(engine)
    finally:
        engine.close()


def _loaded_result_keys(research: Iterable[tuple[str, bytes]]) -> set[str]:
    """Result keys whose last status loads a row (docs/omop-mapping.md, Streaming semantics)."""
    last: dict[str, str | None] = {}
    for topic_id, value in research:
        if topic_id == topics.research("Observation"):
            record = codec.decode(value, None)[1]
            last[record["result_key"]] = record.get("result_status")
    loaded = set(map_clinical.DEFAULT_STATUSES.load)
    return {key for key, status in last.items() if status is None or status in loaded}


def test_two_workers_one_killed_the_warehouse_holds_every_fact_once(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic, events_topic = catalog.name(topics.RAW), catalog.name(topics.EVENTS)
    research_topics = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    partitions = catalog.specs[topics.RAW].partitions
    group, sink_group = f"{unique_name}-worker", f"{unique_name}-warehouse"
    warehouse = tmp_path / "warehouse.duckdb"

    ports = {"a": free_port(), "b": free_port()}
    env = {
        name: {
            **base_worker_env(kafka_bootstrap, unique_name, tmp_path / f"worker-{name}", port),
            # Commits well before the end, so the kill lands between two of them.
            "HL7BUS_WORKER_COMMIT_INTERVAL_S": "0.5",
            # A partition that stops fetching shows on /readyz after 15 s, not a minute...
            "HL7BUS_WORKER_STALL_TIMEOUT_S": "15",
            # ... and a worker stuck for 30 s (not 5 minutes) exits for a restart.
            "HL7BUS_WORKER_WATCHDOG_S": "30",
        }
        for name, port in ports.items()
    }
    env["b"]["HL7BUS_DEID_KEY"] = deid_key = env["a"]["HL7BUS_DEID_KEY"]  # one key, one group
    sink_env = {
        **env["a"],
        "HL7BUS_WAREHOUSE_PATH": str(warehouse),
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(free_port()),
        "HL7BUS_WAREHOUSE_GROUP_ID": sink_group,
    }

    logs = tmp_path / "logs"
    logs.mkdir()
    # faust can leave a worker hung after a rebalance, in table recovery or with partitions
    # that stop fetching (faust-streaming #74, #629): its watchdog then exits (EXIT_STUCK),
    # and the test restarts it as a deployment's supervisor does (docs/operations.md,
    # HL7BusPartitionStuck), before or after the kill; the restarts must still leave every
    # fact once. Any other exit fails the test.
    procs = Supervised(logs)
    try:
        procs.start("worker-a", ["worker", "--loglevel", "info"], env["a"])
        procs.start("worker-b", ["worker", "--loglevel", "info"], env["b"])
        procs.start("sink", ["sink", "warehouse"], sink_env)
        # Ready means source partitions assigned: both share hl7.raw before any record comes.
        procs.wait_for(
            "both workers to hold partitions",
            lambda: all(http_status(port, "/readyz") == 200 for port in ports.values()),
            60,
        )

        # The sample feed (registrations, admissions, updates, lab results with preliminary,
        # final and corrected results) as six feeds, worker-a killed mid-stream.
        kill = kill_mid_stream(
            procs, "worker-a", kafka_bootstrap, raw_topic, events_topic, group, partitions
        )
        produced, raw_committed = kill.produced, kill.raw_committed
        expected_events = sum(len(p.event_ids) for p in produced)

        def lag(group_id: str, names: list[str]) -> int:
            return kafka_clients.group_lag(KAFKA, kafka_bootstrap, group_id, names)

        # worker-b takes worker-a's partitions after the session timeout (6 s) and redoes what
        # worker-a had not committed; then the sink writes what is left.
        procs.wait_for("worker-b to take over", lambda: lag(group, [raw_topic]) == 0, 300)
        procs.wait_for("the sink to catch up", lambda: lag(sink_group, research_topics) == 0, 120)
        procs.stop("sink")  # a clean stop closes the DuckDB file for the reads below
    finally:
        procs.stop_all()

    research = _research(produced, deid_key)
    expected_ids = Counter(codec.decode(v, None)[1]["event_id"] for _, v in research)
    assert set(expected_ids.values()) == {1}

    # Every research record reached its topic; the survivor re-emitted part of the dead
    # worker's uncommitted tail (counted for the report, absorbed by the warehouse).
    sizes = kafka_clients.topic_sizes(KAFKA, kafka_bootstrap, research_topics)
    on_topics = Counter(
        codec.decode(r.value() or b"", None)[1]["event_id"]
        for topic in research_topics
        if sizes[topic]
        for r in read_topic(kafka_bootstrap, topic, sizes[topic] or 0)
    )
    assert set(on_topics) == set(expected_ids)

    # The reference: the same research records written once each, in order, by the sink's own
    # writer into a fresh warehouse.
    reference = tmp_path / "reference.duckdb"
    engine = open_engine(WarehouseConfig(path=reference))
    try:
        BatchWriter(engine, NoVocabulary()).write([Incoming(v) for _, v in research])
    finally:
        engine.close()

    actual, wanted = _rows(warehouse), _rows(reference)
    for table in TABLES:
        doubled = [row for row, n in actual[table].items() if n > 1]
        assert not doubled, f"{table}: {len(doubled)} rows written twice"
        assert actual[table] == wanted[table], table

    # The same, from the events themselves rather than a second warehouse.
    events = [(t, codec.decode(v, None)[1]) for t, v in research]
    patients = {e["patient_key"] for t, e in events if t == topics.research("Patient")}
    visits = {
        e["encounter_key"]
        for t, e in events
        if t == topics.research("Encounter") and e.get("encounter_key")
    }
    results = _loaded_result_keys(research)
    counts = {table: sum(rows.values()) for table, rows in actual.items()}
    assert counts["person"] == len(patients) > 0
    assert counts["visit_occurrence"] == len(visits) > 0
    assert counts["measurement"] + counts["observation"] == len(results) > 0

    redone = sum(n - 1 for n in on_topics.values())
    tail = sum(len(p.event_ids) for p in produced if p.offset >= raw_committed.get(p.partition, 0))
    print(
        f"{len(produced)} messages, {expected_events} events, {len(research)} research records; "
        f"killed worker-a after {kill.events_at_kill} events; watchdog restarts: "
        f"{procs.restarts or 'none'}; {redone} research "
        f"records emitted twice (uncommitted tail of the group at the kill: {tail} events); "
        f"warehouse: {counts['person']} persons, {counts['visit_occurrence']} visits, "
        f"{counts['measurement'] + counts['observation']} results, each once"
    )
