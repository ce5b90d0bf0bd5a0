"""`topics apply` on the real broker: creates what is missing, idempotent, reports drift."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.ops import topics_apply
from hl7bus.schemas import topics

pytestmark = pytest.mark.kafka


def test_apply_is_idempotent_and_reports_drift(kafka_bootstrap: str, unique_name: str) -> None:
    admin = kafka_clients.admin_client(KafkaConfig(), kafka_bootstrap)
    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=f"{unique_name}."))
    raw = catalog.name(topics.RAW)
    assert raw == f"{unique_name}.hl7.raw"

    # A topic made by hand with the wrong partition count must be reported, not changed.
    admin.create_topics([NewTopic(catalog.name(topics.DLQ), 3, 1)])[
        catalog.name(topics.DLQ)
    ].result(timeout=30)

    dry = topics_apply.plan(admin, catalog)
    assert {p.spec.id: p.action for p in dry}[topics.RAW] == "create"
    assert raw not in admin.list_topics(timeout=10).topics  # a plan creates nothing

    first = topics_apply.apply(admin, catalog, replication_factor=1)
    actions = {p.spec.id: p.action for p in first}
    assert actions[topics.RAW] == "create"
    assert actions[topics.DLQ] == "drift"
    dlq_plan = next(p for p in first if p.spec.id == topics.DLQ)
    assert any("partitions: have 3, catalog says 1" in d for d in dlq_plan.drift)

    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[raw].partitions) == 6
    assert len(metadata.topics[catalog.name(topics.DLQ)].partitions) == 3  # never altered

    second = topics_apply.apply(admin, catalog, replication_factor=1)
    assert {p.spec.id: p.action for p in second} == {
        **{s: "ok" for s in catalog.specs},
        topics.DLQ: "drift",
    }


def test_cli_apply_and_status(
    kafka_bootstrap: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from hl7bus.ops.cli import app

    monkeypatch.setenv("HL7BUS_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("HL7BUS_TOPICS_PREFIX", f"{unique_name}.")
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    # No listener, worker or sink runs here: status says so and exits 1 (tests/test_status.py).
    before = runner.invoke(app, ["status"])
    assert before.exit_code == 1, before.output
    assert "process mllp is down" in before.output
    assert "missing (hl7bus topics apply)" in before.output

    dry = runner.invoke(app, ["topics", "apply", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would create  {unique_name}.hl7.raw" in dry.output

    applied = runner.invoke(app, ["topics", "apply"])
    assert applied.exit_code == 0, applied.output
    assert f"created  {unique_name}.hl7.raw" in applied.output

    after = runner.invoke(app, ["status"])
    assert after.exit_code == 1, after.output
    assert "Kafka" not in after.output.split("problem:", 1)[1]
    assert "missing" not in after.output
    assert f"{unique_name}.hl7.raw" in after.output
    assert "lag of worker" in after.output
