"""Where the sink's freshness histogram starts: at the listener's receipt (the event's
received_at) when the de-identification policy keeps received_at unchanged, else at the research
record's Kafka timestamp, since kr-pseudonym shifts it by days and safe-harbor truncates it to
the year."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import warehouse_events as ev
from kafka_helpers import apply_catalog, produce
from worker_helpers import KAFKA, http_get

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.warehouse.sink import keeps_received_at
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import topics
from hl7bus.streams.deid import Policy
from hl7bus.streams.deid.contract import research_schemas


def test_only_a_policy_that_keeps_received_at_measures_from_it() -> None:
    kept = {name: keeps_received_at(research_schemas(Policy.load(name))) for name in PROFILES}
    assert kept == {"limited": True, "kr-pseudonym": False, "safe-harbor": False}
    assert keeps_received_at({}) is False


PROFILES = ("limited", "kr-pseudonym", "safe-harbor")


@pytest.mark.kafka
@pytest.mark.parametrize("policy", ["limited", "kr-pseudonym"])
def test_the_sink_measures_freshness_from_where_the_policy_allows(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, policy: str
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    group, port = f"{unique_name}-warehouse", free_port()
    # A result the bus received in March 2025 (warehouse_events.T0), produced to Kafka now.
    event = ev.observation()
    produce(
        kafka_bootstrap,
        [(catalog.name(topics.research("Observation")), b"k", ev.encode(event))],
    )
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_DEID_POLICY": policy,
        "HL7BUS_WAREHOUSE_PATH": str(tmp_path / "warehouse.duckdb"),
        "HL7BUS_WAREHOUSE_GROUP_ID": group,
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(port),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        procs.start("sink", ["sink", "warehouse"], env)

        def caught_up() -> bool:
            try:
                return kafka_clients.group_lag(KAFKA, kafka_bootstrap, group, research) == 0
            except Exception:  # a coordinator still loading on a fresh broker
                return False

        procs.wait_for("the sink to commit the record", caught_up, 60)
        scrape = http_get(port, "/metrics")[1].splitlines()
    finally:
        procs.stop_all()
    assert "hl7bus_warehouse_freshness_seconds_count 1.0" in scrape
    within_5_min = 'hl7bus_warehouse_freshness_seconds_bucket{le="300.0"} 1.0' in scrape
    # limited: from the receipt, more than a year ago; kr-pseudonym: from the Kafka timestamp.
    assert within_5_min is (policy == "kr-pseudonym")
