"""The metric vocabulary every component shares (docs/operations.md, Metrics).

Ops teams bind dashboards and alert rules to these names the way consumers bind to topics, so
they are declared once, here, and every source, stage and sink counts into the same families:

- ``hl7bus_received_total{component, stage}``: records (messages) into a stage;
- ``hl7bus_sent_total{component, stage}``: records the stage delivered (Kafka confirmed them, or
  the sink committed them);
- ``hl7bus_errors_total{component, stage, code}``: records the stage failed on, whatever
  became of them (sent to the DLQ, refused to the sender);
- ``hl7bus_dlq_total{component, stage, reason}``: records the stage wrote to hl7.dlq;
- ``hl7bus_stage_latency_seconds{component, stage}``: a histogram of the stage's time per
  record or batch (the component's HELP text in docs/operations.md says which);
- ``hl7bus_in_flight{component, stage}``: records the stage holds, not yet delivered;
- per feed, for sources: ``hl7bus_feed_received_total{component, feed}``,
  ``hl7bus_feed_connected_senders{feed}``, ``hl7bus_feed_last_message_timestamp_seconds{feed}``
  and ``hl7bus_feed_silence_threshold_seconds{feed}`` (the feed's config);
- per sink: ``hl7bus_sink_up{component}`` and ``hl7bus_sink_last_commit_timestamp_seconds``.

``component`` is the process kind (:data:`COMPONENTS`), ``stage`` the ``hl7bus.stage`` header
value of that stage's DLQ records (:data:`STAGES`). Labels are bounded: feed names come from
config, codes and reasons from fixed vocabularies; never ids or values (docs/architecture.md,
Privacy). A new component (a sink, say) adds its name to COMPONENTS, takes a
:class:`StageMetrics` for its stage, and keeps its own ``hl7bus_<component>_*`` families for
what is its alone.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

#: The process kinds, the ``component`` label.
COMPONENTS = ("mllp", "files", "worker", "warehouse", "lake")
#: The stages, the ``stage`` label (the hl7bus.stage header of their DLQ records).
STAGES = ("receiving", "parsing", "deidentifying", "sinking")

RECEIVED = Counter(
    "hl7bus_received_total", "Records (messages) into a stage.", ["component", "stage"]
)
SENT = Counter(
    "hl7bus_sent_total",
    "Records a stage delivered: confirmed by Kafka, or committed by a sink.",
    ["component", "stage"],
)
ERRORS = Counter(
    "hl7bus_errors_total",
    "Records a stage failed on, by error code, whatever became of them (DLQ, refused).",
    ["component", "stage", "code"],
)
DLQ = Counter(
    "hl7bus_dlq_total",
    "Records a stage wrote to hl7.dlq, by reason code.",
    ["component", "stage", "reason"],
)
LATENCY = Histogram(
    "hl7bus_stage_latency_seconds",
    "A stage's time per record (sources: last byte to ACK) or per batch (worker, sinks: "
    "arrival to delivery or commit).",
    ["component", "stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "hl7bus_in_flight", "Records a stage holds, not yet delivered.", ["component", "stage"]
)
FEED_RECEIVED = Counter(
    "hl7bus_feed_received_total", "Messages a source received, by feed.", ["component", "feed"]
)
FEED_SENDERS = Gauge(
    "hl7bus_feed_connected_senders", "Sender connections open on a feed.", ["feed"]
)
FEED_LAST_MESSAGE = Gauge(
    "hl7bus_feed_last_message_timestamp_seconds",
    "Unix time of a feed's last message (the process start until the first one).",
    ["feed"],
)
FEED_SILENCE_THRESHOLD = Gauge(
    "hl7bus_feed_silence_threshold_seconds",
    "How long a feed may send nothing before it counts as silent (the feed's config).",
    ["feed"],
)
SINK_UP = Gauge(
    "hl7bus_sink_up", "1 while a sink's last write succeeded, 0 after it failed.", ["component"]
)
SINK_LAST_COMMIT = Gauge(
    "hl7bus_sink_last_commit_timestamp_seconds",
    "Unix time of a sink's last committed batch.",
    ["component"],
)


class StageMetrics:
    """One component's stage: the label children looked up once, not per record."""

    def __init__(self, component: str, stage: str) -> None:
        if component not in COMPONENTS:
            raise ValueError(f"component {component!r} is not one of {', '.join(COMPONENTS)}")
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
        self.component = component
        self.stage = stage
        self.received = RECEIVED.labels(component, stage)
        self.sent = SENT.labels(component, stage)
        self.latency = LATENCY.labels(component, stage)
        self.in_flight = IN_FLIGHT.labels(component, stage)
        self._errors: dict[str, Any] = {}
        self._dlq: dict[str, Any] = {}

    def error(self, code: str, n: float = 1) -> None:
        child = self._errors.get(code)
        if child is None:
            child = self._errors[code] = ERRORS.labels(self.component, self.stage, code)
        child.inc(n)

    def dlq(self, reason: str, n: float = 1) -> None:
        """A record written to hl7.dlq; counted as an error of the same code too."""
        child = self._dlq.get(reason)
        if child is None:
            child = self._dlq[reason] = DLQ.labels(self.component, self.stage, reason)
        child.inc(n)
        self.error(reason, n)
