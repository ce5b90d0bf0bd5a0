"""What `hl7bus status` reports: each process up or down, each feed's board, Kafka's figures.

The processes are found where the config says they serve /metrics; a feed's figures come from
the listener's scrape (the shared vocabulary, docs/operations.md). :func:`evaluate` turns
scrapes into the board without I/O, so its rules (when a feed is silent, when the bus is
unhealthy) are tested on their own.
"""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from hl7bus.ops.config import Settings

_NAK = frozenset(("AE", "AR", "CE", "CR"))


@dataclass(frozen=True)
class Endpoint:
    name: str  # mllp, worker, warehouse, lake, lag
    host: str
    port: int


@dataclass
class ProcessState:
    name: str
    address: str
    up: bool
    error: str | None = None


@dataclass
class FeedState:
    feed: str
    up: bool  # its listener answers
    senders: int
    silent_for_s: float
    silence_threshold_s: float
    silent: bool
    received: int
    acks: int
    naks: int
    nak_ratio: float | None  # since the listener started; None before any ACK
    rate_per_s: float | None = None  # between two refreshes of --watch


@dataclass
class Board:
    processes: list[ProcessState]
    feeds: list[FeedState]
    kafka: dict[str, Any] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        """Why the bus is unhealthy, one line each; empty when it is not."""
        found = [f"process {p.name} is down ({p.address})" for p in self.processes if not p.up]
        if "error" in self.kafka:
            found.append(f"Kafka: {self.kafka['error']}")
        found += [
            f"feed {f.feed} silent for {f.silent_for_s:.0f} s "
            f"(threshold {f.silence_threshold_s:.0f} s)"
            for f in self.feeds
            if f.silent
        ]
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "processes": [asdict(p) for p in self.processes],
            "feeds": [asdict(f) for f in self.feeds],
            "kafka": self.kafka,
        }


def endpoints(settings: Settings) -> list[Endpoint]:
    """Every process whose /metrics the config turns on, at the address it binds."""
    found = [
        ("mllp", settings.mllp.host, settings.mllp.metrics_port),
        ("worker", settings.worker.metrics_host, settings.worker.metrics_port),
        ("warehouse", settings.warehouse.metrics_host, settings.warehouse.metrics_port),
        ("lake", settings.lake.metrics_host, settings.lake.metrics_port),
        ("lag", settings.lag.metrics_host, settings.lag.metrics_port),
    ]
    return [Endpoint(name, _reachable(host), port) for name, host, port in found if port]


def _reachable(host: str) -> str:
    # A process bound to every address is asked on loopback.
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def scrape(endpoint: Endpoint, timeout: float = 5.0) -> str:
    """The process's /metrics (raises OSError when it does not answer)."""
    url = f"http://{endpoint.host}:{endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode("utf-8"))


def evaluate(
    expected: list[Endpoint],
    scrapes: dict[str, str | Exception],
    now: float,
    configured_feeds: dict[str, float] | None = None,
) -> Board:
    """The board from each expected process's scrape (or the error scraping it).
    ``configured_feeds`` (feed -> silence threshold) are shown down when the listener does not
    answer, so a dead listener's feeds stay on the board."""
    processes = []
    for endpoint in expected:
        got = scrapes.get(endpoint.name)
        address = f"{endpoint.host}:{endpoint.port}"
        if isinstance(got, str):
            processes.append(ProcessState(endpoint.name, address, True))
        else:
            error = type(got).__name__ if got is not None else "not asked"
            processes.append(ProcessState(endpoint.name, address, False, error))
    listener = scrapes.get("mllp")
    feeds = _feeds(listener, now) if isinstance(listener, str) else []
    shown = {f.feed for f in feeds}
    for feed, threshold in sorted((configured_feeds or {}).items()):
        if feed not in shown:
            feeds.append(FeedState(feed, False, 0, 0.0, threshold, False, 0, 0, 0, None))
    return Board(processes, feeds)


def _feeds(scrape_text: str, now: float) -> list[FeedState]:
    values: dict[str, dict[str, float]] = {}
    acks: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(scrape_text):
        for sample in family.samples:
            feed = sample.labels.get("feed")
            if feed is None:
                continue
            if sample.name == "hl7bus_mllp_acks_total":
                acks.setdefault(feed, {})[sample.labels["code"]] = sample.value
            elif sample.name in (
                "hl7bus_feed_connected_senders",
                "hl7bus_feed_last_message_timestamp_seconds",
                "hl7bus_feed_silence_threshold_seconds",
                "hl7bus_feed_received_total",
            ):
                values.setdefault(feed, {})[sample.name] = sample.value
    out = []
    for feed, v in sorted(values.items()):
        threshold = v.get("hl7bus_feed_silence_threshold_seconds", 0.0)
        last = v.get("hl7bus_feed_last_message_timestamp_seconds", now)
        silent_for = max(0.0, now - last)
        by_code = acks.get(feed, {})
        total = int(sum(by_code.values()))
        naks = int(sum(n for code, n in by_code.items() if code in _NAK))
        out.append(
            FeedState(
                feed=feed,
                up=True,
                senders=int(v.get("hl7bus_feed_connected_senders", 0)),
                silent_for_s=silent_for,
                silence_threshold_s=threshold,
                silent=threshold > 0 and silent_for > threshold,
                received=int(v.get("hl7bus_feed_received_total", 0)),
                acks=total,
                naks=naks,
                nak_ratio=naks / total if total else None,
            )
        )
    return out


def with_rates(board: Board, before: Board | None, elapsed_s: float) -> Board:
    """Each feed's messages per second since the previous board of a --watch."""
    if before is None or elapsed_s <= 0:
        return board
    previous = {f.feed: f.received for f in before.feeds}
    for feed in board.feeds:
        if feed.feed in previous:
            feed.rate_per_s = max(0, feed.received - previous[feed.feed]) / elapsed_s
    return board
