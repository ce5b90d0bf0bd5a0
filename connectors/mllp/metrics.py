"""The MLLP listener's Prometheus metrics: one set per process, labelled by feed.

Its own ``hl7bus_mllp_*`` families, and the shared vocabulary (schemas/telemetry.py) as
component ``mllp``, stage ``receiving``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from hl7bus.schemas import telemetry

MESSAGES = Counter("hl7bus_mllp_messages_total", "Frames received.", ["feed"])
BYTES = Counter("hl7bus_mllp_received_bytes_total", "Payload bytes received.", ["feed"])
ACKS = Counter("hl7bus_mllp_acks_total", "ACKs sent, by MSA-1 code.", ["feed", "code"])
FRAMING_ERRORS = Counter("hl7bus_mllp_framing_errors_total", "Framing errors.", ["feed", "reason"])
DLQ = Counter("hl7bus_mllp_dlq_total", "Records written to the DLQ.", ["feed", "reason"])
DLQ_FAILURES = Counter(
    "hl7bus_mllp_dlq_failures_total",
    "DLQ writes that Kafka did not confirm (the sender got AR/CR, or no ACK was owed).",
    ["feed", "reason"],
)
CLOSED = Counter(
    "hl7bus_mllp_closed_connections_total",
    "Connections that ended, by reason: idle (closed by the listener after idle_timeout_s), "
    "frame_timeout (a frame not finished within frame_timeout_s), peer (the sender closed), "
    "error (reset or other socket error), shutdown (the listener stopped reading it).",
    ["feed", "reason"],
)
REFUSED = Counter(
    "hl7bus_mllp_refused_connections_total",
    "Connections closed before any message, by reason: network (client network not allowed), "
    "tls (handshake failed), max_connections (the feed's limit), max_connections_total (the "
    "process's limit).",
    ["feed", "reason"],
)
CHARSET_MISMATCH = Counter(
    "hl7bus_mllp_charset_mismatch_total",
    "Messages MSH-18's charset (and fallback_charset) could not decode, read as UTF-8.",
    ["feed"],
)
ACK_LATENCY = Histogram(
    "hl7bus_mllp_ack_latency_seconds",
    "From the last byte of a message to its ACK being written.",
    ["feed"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
CONNECTIONS = Gauge("hl7bus_mllp_connections", "Open connections.", ["feed"])
IN_FLIGHT = Gauge("hl7bus_mllp_in_flight", "Messages awaiting Kafka.", ["feed"])


#: The process's share of the vocabulary: every feed's listener counts into it.
STAGE = telemetry.StageMetrics("mllp", "receiving")
# Messages awaiting Kafka per feed, summed at scrape time into hl7bus_in_flight.
_in_flight: dict[str, Callable[[], int]] = {}
STAGE.in_flight.set_function(lambda: sum(count() for count in list(_in_flight.values())))

_DELIVERED = frozenset(("AA", "CA"))
_REJECTED = frozenset(("AR", "CR"))


class FeedMetrics:
    """The label children of one feed, looked up once instead of per message."""

    def __init__(self, feed: str) -> None:
        self.feed = feed
        self.messages = MESSAGES.labels(feed)
        self.received = telemetry.FEED_RECEIVED.labels("mllp", feed)
        self.bytes = BYTES.labels(feed)
        self.latency = ACK_LATENCY.labels(feed)
        self.stage_latency = STAGE.latency
        self._acks: dict[str, Any] = {}

    def watch(
        self,
        connections: Callable[[], int],
        in_flight: Callable[[], int],
        last_message: Callable[[], float],
        silence_threshold_s: float,
    ) -> None:
        """The gauges read the listener's counts at scrape time, not per message."""
        CONNECTIONS.labels(self.feed).set_function(connections)
        IN_FLIGHT.labels(self.feed).set_function(in_flight)
        telemetry.FEED_SENDERS.labels(self.feed).set_function(connections)
        telemetry.FEED_LAST_MESSAGE.labels(self.feed).set_function(last_message)
        telemetry.FEED_SILENCE_THRESHOLD.labels(self.feed).set(silence_threshold_s)
        _in_flight[self.feed] = in_flight

    def received_messages(self, count: int, size: int) -> None:
        self.messages.inc(count)
        self.received.inc(count)
        STAGE.received.inc(count)
        self.bytes.inc(size)

    def ack(self, code: str) -> None:
        child = self._acks.get(code)
        if child is None:
            child = self._acks[code] = ACKS.labels(self.feed, code)
        child.inc()
        if code in _DELIVERED:
            STAGE.sent.inc()
        elif code in _REJECTED:
            STAGE.error("rejected")
