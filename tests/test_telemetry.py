"""The shared metric vocabulary (hl7bus.schemas.telemetry) and the lag exporter's collector,
linted by promtool the way a scrape is."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_tools import check_metrics

from hl7bus.connectors.kafka_lag import GroupLag, PartitionLag, Snapshot
from hl7bus.ops.lag_exporter import LagCollector
from hl7bus.schemas import telemetry


def test_stage_metrics_refuse_names_outside_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="component 'sinker' is not one of mllp"):
        telemetry.StageMetrics("sinker", "sinking")
    with pytest.raises(ValueError, match="stage 'sink' is not one of receiving"):
        telemetry.StageMetrics("lake", "sink")


def test_a_dlq_record_counts_as_an_error_of_the_same_code() -> None:
    stage = telemetry.StageMetrics("lake", "sinking")
    before_dlq = telemetry.DLQ.labels("lake", "sinking", "test_reason")._value.get()
    before_err = telemetry.ERRORS.labels("lake", "sinking", "test_reason")._value.get()
    stage.dlq("test_reason", 3)
    assert telemetry.DLQ.labels("lake", "sinking", "test_reason")._value.get() == before_dlq + 3
    assert telemetry.ERRORS.labels("lake", "sinking", "test_reason")._value.get() == before_err + 3


def _scrape(collector: LagCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_lag_collector_exports_the_kafka_exporter_names() -> None:
    collector = LagCollector()
    assert "hl7bus_lag_exporter_up 0.0" in _scrape(collector)  # nothing measured yet
    collector.ok = True
    collector.snapshot = Snapshot(
        1000.0,
        [
            GroupLag(
                "hl7bus-worker",
                0,
                "empty",
                [
                    PartitionLag("hl7.raw", 0, 10, 15, 5, 42.0),
                    PartitionLag("hl7.raw", 1, None, 3, 3, 7.0),
                ],
            )
        ],
    )
    scrape = _scrape(collector)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scrape)
        for s in family.samples
    }
    group = ("consumergroup", "hl7bus-worker")
    p0 = (group, ("partition", "0"), ("topic", "hl7.raw"))
    assert samples["kafka_consumergroup_lag", p0] == 5
    assert samples["kafka_consumergroup_lag_seconds", p0] == 42
    assert samples["kafka_consumergroup_current_offset", p0] == 10
    assert samples["kafka_consumergroup_lag_sum", (group, ("topic", "hl7.raw"))] == 8
    assert samples["kafka_consumergroup_members", (group,)] == 0
    # The partition without a commit has lag but no committed offset.
    p1 = (group, ("partition", "1"), ("topic", "hl7.raw"))
    assert ("kafka_consumergroup_current_offset", p1) not in samples
    assert check_metrics(scrape) == []
