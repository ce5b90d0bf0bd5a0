"""`hl7bus lag-exporter`: consumer-group lag for Prometheus, from a process of its own.

A worker's lag is most needed when the worker is dead, so it is measured outside every
consumer (connectors/kafka_lag.py) and exported under the names ops teams know from
kafka_exporter and Burrow-style tools (docs/operations.md, Metrics):

- ``kafka_consumergroup_lag{consumergroup, topic, partition}``: records not committed;
- ``kafka_consumergroup_lag_sum{consumergroup, topic}``: the same over partitions;
- ``kafka_consumergroup_lag_seconds{consumergroup, topic, partition}``: age of the oldest
  record not committed (0 when caught up);
- ``kafka_consumergroup_current_offset`` and ``kafka_topic_partition_current_offset``;
- ``kafka_consumergroup_members{consumergroup}``;
- ``hl7bus_lag_exporter_up`` (1 while the last measurement succeeded) and
  ``hl7bus_lag_exporter_last_success_timestamp_seconds``.

Measuring runs on a timer, not per scrape: a slow broker never makes a scrape time out, and
a scrape between two measurements sees the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors.kafka_lag import LagProbe, Snapshot
from hl7bus.ops import health

log = logging.getLogger(__name__)


class LagExporterConfig(BaseModel):
    """The `lag` section: which groups, how often, where /metrics is served."""

    model_config = ConfigDict(extra="forbid")

    metrics_host: str = Field("127.0.0.1", description="Address of /metrics, /healthz, /readyz.")
    metrics_port: int = Field(
        9467, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz."
    )
    interval_s: float = Field(
        10.0, gt=0, description="Seconds between two measurements of every group's lag."
    )
    timeout_s: float = Field(
        10.0, gt=0, description="How long one admin request may take before the round fails."
    )
    groups: str = Field(
        ".*",
        description=(
            "Regular expression a consumer group id must match in full to be measured "
            "(default: every group on the cluster, the bus's own and others)."
        ),
    )


class LagCollector:
    """Yields the last snapshot's figures at scrape time."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.ok = False
        self.last_success = 0.0

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "hl7bus_lag_exporter_up", "1 while the last lag measurement succeeded."
        )
        up.add_metric([], 1.0 if self.ok else 0.0)
        yield up
        last = GaugeMetricFamily(
            "hl7bus_lag_exporter_last_success_timestamp_seconds",
            "Unix time of the last successful lag measurement.",
        )
        last.add_metric([], self.last_success)
        yield last
        snapshot = self.snapshot
        if snapshot is None:
            return
        part = ["consumergroup", "topic", "partition"]
        lag = GaugeMetricFamily("kafka_consumergroup_lag", "Records not committed.", labels=part)
        seconds = GaugeMetricFamily(
            "kafka_consumergroup_lag_seconds",
            "Age of the oldest record not committed (0 when caught up).",
            labels=part,
        )
        current = GaugeMetricFamily(
            "kafka_consumergroup_current_offset", "Committed offset.", labels=part
        )
        total = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Records not committed, over the topic's partitions.",
            labels=["consumergroup", "topic"],
        )
        members = GaugeMetricFamily(
            "kafka_consumergroup_members", "Members of the group.", labels=["consumergroup"]
        )
        end = GaugeMetricFamily(
            "kafka_topic_partition_current_offset",
            "End offset (next offset to be written).",
            labels=["topic", "partition"],
        )
        ends: dict[tuple[str, str], int] = {}
        for group in snapshot.groups:
            members.add_metric([group.group], group.members)
            sums: dict[str, int] = {}
            for p in group.partitions:
                labels = [group.group, p.topic, str(p.partition)]
                lag.add_metric(labels, p.lag)
                seconds.add_metric(labels, p.lag_seconds)
                if p.committed is not None:
                    current.add_metric(labels, p.committed)
                sums[p.topic] = sums.get(p.topic, 0) + p.lag
                ends[p.topic, str(p.partition)] = p.end
            for topic, n in sorted(sums.items()):
                total.add_metric([group.group, topic], n)
        for (topic, partition), offset in sorted(ends.items()):
            end.add_metric([topic, partition], offset)
        yield from (lag, total, seconds, current, members, end)


class LagExporter:
    """Measures on a timer and serves the collector (registered by the caller)."""

    def __init__(self, cfg: LagExporterConfig, probe: LagProbe) -> None:
        self.cfg = cfg
        self.probe = probe
        self.collector = LagCollector()

    async def ready(self) -> bool:
        return self.collector.ok

    def measure_once(self) -> None:
        try:
            snapshot = self.probe.measure()
        except Exception as exc:  # the broker is away: keep serving, say so in _up
            if self.collector.ok:
                log.warning("lag exporter: measuring failed (%s)", type(exc).__name__)
            self.collector.ok = False
            return
        if not self.collector.ok:
            log.info("lag exporter: measuring %d consumer groups", len(snapshot.groups))
        self.collector.snapshot = snapshot
        self.collector.ok = True
        self.collector.last_success = time.time()

    async def run(self, stop: asyncio.Event) -> None:
        runner = await health.start_http(self.cfg.metrics_host, self.cfg.metrics_port, self.ready)
        try:
            while not stop.is_set():
                await asyncio.to_thread(self.measure_once)
                with contextlib.suppress(TimeoutError):  # the interval is up: measure again
                    await asyncio.wait_for(stop.wait(), self.cfg.interval_s)
        finally:
            await runner.cleanup()
