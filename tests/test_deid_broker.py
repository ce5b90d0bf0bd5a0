"""De-identification on the real broker: identified events on hl7.events in, research events
out of a worker running the deidentify stage alone (`hl7bus worker`, run as the operator runs
it), leak counter 0, and the
restricted DLQ for forced errors (stage deidentifying, an error code, the identified record)."""

from __future__ import annotations

import os
import re
import secrets
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import published_contracts
import pytest
from confluent_kafka import Producer
from kafka_helpers import apply_catalog, read_topic
from prometheus_client.parser import text_string_to_metric_families
from samples import envelope, feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import Policy
from hl7bus.streams.steps import parse_step

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SEOUL = ZoneInfo("Asia/Seoul")
MESSAGES = 30


def _header(record: Any, name: str) -> bytes:
    value = dict(record.headers() or []).get(name)
    return value.encode() if isinstance(value, str) else bytes(value or b"")


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_worker_deidentifies_and_fails_closed(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    events_topic = catalog.name(topics.EVENTS)
    policy = Policy.load("kr-pseudonym")

    # Identified events as the parse stage writes them.
    messages = feed()[:MESSAGES]
    identified = [
        out
        for m in messages
        for out in parse_step(None, codec.encode("RawMessage", envelope(m, "broker")), SEOUL)
    ]
    assert all(o.topic_id == topics.EVENTS for o in identified)
    observation = next(o for o in identified if codec.decode(o.value)[0] == "Observation")
    _, broken = codec.decode(observation.value)
    broken = dict(broken, message_identifiers=None, notes="free text, but no identifiers")
    forced = [
        codec.encode("Observation", broken),  # no_identifiers
        b"\xc3\x01not an event",  # undecodable_event
    ]
    producer = Producer(kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap))
    for out in identified:
        headers: list[tuple[str, str | bytes | None]] = list(out.headers)
        producer.produce(events_topic, value=out.value, key=out.key, headers=headers)
    for value in forced:
        producer.produce(events_topic, value=value, key=observation.key)
    assert producer.flush(30) == 0

    metrics_port = free_port()
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_WORKER_APP_ID": f"{unique_name}-worker",
        "HL7BUS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(metrics_port),
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
        "HL7BUS_DEID_POLICY": "kr-pseudonym",
        # The stage on its own, reading hl7.events (a worker running parse too de-identifies
        # inside the parse stage: test_end_to_end and the demo run that one).
        "HL7BUS_WORKER_STAGES": '["deidentify"]',
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    expected = len(identified)
    research_topics = sorted(
        {catalog.name(topics.research(codec.decode(o.value)[0])) for o in identified}
    )
    kafka = KafkaConfig()
    try:
        procs.start("worker", ["worker"], env)

        def done() -> bool:
            sizes = kafka_clients.topic_sizes(kafka, kafka_bootstrap, research_topics)
            dlq = kafka_clients.topic_sizes(kafka, kafka_bootstrap, [catalog.name(topics.DLQ)])
            research_n = sum(n or 0 for n in sizes.values())
            return research_n >= expected and sum(n or 0 for n in dlq.values()) >= len(forced)

        procs.wait_for("research events and DLQ records", done, 120)
        metrics = _metrics(metrics_port)
    finally:
        procs.stop_all()

    research = [r for t in research_topics for r in read_topic(kafka_bootstrap, t, 1, 10)]
    assert len(research) == expected
    identifiers = {
        v
        for m in messages
        for path in ("PID-3.1", "PID-5.1", "PID-5.2", "PID-13.1", "PID-19", "NK1-2.1", "NK1-5.1")
        if (v := m.get(path)) and len(v) > 1
    }
    for record in research:
        assert _header(record, "hl7bus.policy") == policy.digest.encode()
        _, event = codec.decode(record.value() or b"")
        assert event["deid_policy"] == policy.digest
        assert "message_identifiers" not in event  # absent from the research contract
        # A consumer holding only the published contract reads the record off the topic.
        contract, read = published_contracts.decode(record.value() or b"", "kr-pseudonym")
        assert read == event and record.topic() == catalog.name(topics.research(contract.name))
        text = repr(event)
        for identifier in identifiers:
            assert identifier not in text
        # No RRN (our own hex digests, pseudonyms and ids, left out of the search).
        assert not re.search(r"\d{6}-?[1-4]\d{6}", re.sub(r"'[0-9a-f]{16,}'", "", text))

    dlq = read_topic(kafka_bootstrap, catalog.name(topics.DLQ), len(forced), 20)
    reasons = sorted(_header(r, "hl7bus.reason") for r in dlq)
    assert reasons == [b"no_identifiers", b"undecodable_event"]
    assert {_header(r, "hl7bus.stage") for r in dlq} == {b"deidentifying"}
    assert {r.value() for r in dlq} == set(forced)  # the identified record, for a replay

    assert metrics.get(("hl7bus_deid_leaks_total", ()), 0.0) == 0.0
    assert metrics[("hl7bus_deid_errors_total", (("code", "no_identifiers"),))] == 1.0
    assert metrics[("hl7bus_deid_errors_total", (("code", "undecodable_event"),))] == 1.0
    shifted = metrics[("hl7bus_deid_actions_total", (("action", "shift_date"), ("phi", "date")))]
    assert shifted > 0
