"""``hl7bus bench e2e``: MLLP -> warehouse rows with every process real, at a ladder of offered
rates.

Everything runs as an operator runs it: a temporary broker, then listener (``hl7bus mllp
serve``), worker (``hl7bus worker``) and warehouse sink (``hl7bus sink warehouse``, DuckDB) as
child processes, started by the demo's :func:`hl7bus.ops.demo_run.start_bus`. The sender is the
project's MLLP client (``send_many`` with ``rate``: evenly spaced sends, as ``hl7bus send
--rate``) in this process, one connection, window 8.

Workload: one ~2 KB ORU^R01 template of bench.mllp (so every message makes the same number of
research records), distinct MSH-10 each. A warm-up step (``WARMUP_MESSAGES``) starts the
worker's and the sink's consumers and measures ``records per message``: the research records the
sink consumes per message sent.

Per rung of the ladder (offered rate x ``seconds``), after the previous rung has drained:

* ``sustained_msgs_per_s``: messages / (first send -> last message's rows visible);
* ``freshness`` p50/p99/max: row visible minus message received. "Received" is the moment the
  sender put the message on the loopback socket (its ACK time minus its ACK latency), at most a
  fraction of a millisecond before the listener read it, so freshness is slightly overstated.
  "Visible" comes from the sink's own metrics, scraped every ``SCRAPE_S``: each scrape gives
  the time of the sink's last committed transaction
  (``hl7bus_warehouse_last_commit_timestamp_seconds``) and the research records consumed so far
  (``hl7bus_warehouse_in_records_total``, counted after that commit). Message *i* (by send
  time) is visible at the first scrape whose count covers ``records_per_message x (i + 1)``
  records of the rung: a cumulative-flow reading, exact when the bus is first-in first-out and
  one batch commits per scrape interval, otherwise an upper bound of up to ``SCRAPE_S`` (and
  records of several partitions may overtake each other: the figure is the flow's delay, not a
  per-record trace). The sink's own ``hl7bus_warehouse_freshness_seconds`` histogram starts at
  the worker's produce, not at the listener, so it is not used for this figure.

The named peer, measured in the same run on the same messages: the listener alone, i.e. the
sender's ACK latency p50/p99 at the same offered rate (the listener ACKs once the broker has the
raw message), and the offered rate itself for the sustained rate. The answer: the highest
offered rate whose p99 freshness stays at most ``TARGET_P99_S``; the ladder stops at the first
rung that misses it or does not drain in ``DRAIN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hl7bus.ops.config import Settings
    from hl7bus.ops.demo_run import Bus
    from hl7bus.ops.processes import Processes

TARGET_P99_S = 2.0
WARMUP_MESSAGES = 50
SCRAPE_S = 0.02
DRAIN_TIMEOUT_S = 120.0
WINDOW = 8
_LAST_COMMIT = "hl7bus_warehouse_last_commit_timestamp_seconds"
_RECORDS_IN = "hl7bus_warehouse_in_records_total"


# -- the pure part (unit-tested) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """One reading of the sink's metrics: last commit time (Unix s), records consumed so far."""

    commit_at: float
    records: float


def parse_metrics(text: str) -> Scrape | None:
    """The last commit time and the records consumed (summed over event types) from a Prometheus
    text page; None before the sink's first commit."""
    commit_at = 0.0
    records = 0.0
    for line in text.splitlines():
        if line.startswith(_LAST_COMMIT + " "):
            commit_at = float(line.split()[-1])
        elif line.startswith(_RECORDS_IN + "{"):
            records += float(line.rsplit(" ", 1)[-1])
    return Scrape(commit_at, records) if commit_at > 0 else None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (as the MLLP client's send summary) of an ascending sequence."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def visible_times(
    scrapes: Sequence[Scrape], base: float, per_message: float, count: int
) -> list[float | None]:
    """When the rows of each of ``count`` messages (in send order) became visible: the commit
    time of the first scrape whose records, less ``base`` (the count before the rung), cover
    that message's records; None for messages not covered by any scrape."""
    out: list[float | None] = []
    ordered = sorted(scrapes, key=lambda s: (s.records, s.commit_at))
    j = 0
    for i in range(count):
        needed = base + per_message * (i + 1)
        while j < len(ordered) and ordered[j].records < needed - 1e-9:
            j += 1
        out.append(ordered[j].commit_at if j < len(ordered) else None)
    return out


def highest_rate(rungs: Sequence[dict[str, Any]], target_s: float = TARGET_P99_S) -> float | None:
    """The highest offered rate of a drained rung whose p99 freshness is at most ``target_s``."""
    ok = [
        rung["offered_msgs_per_s"]
        for rung in rungs
        if rung["drained"]
        and rung["freshness_s"]["p99"] is not None
        and rung["freshness_s"]["p99"] <= target_s
    ]
    return max(ok) if ok else None


def rung_figures(
    offered: float,
    sent_at: Sequence[float],
    visible_at: Sequence[float | None],
    ack_latencies: Sequence[float],
) -> dict[str, Any]:
    """A rung's JSON: sustained rate, freshness percentiles, the peer's ACK latency."""
    pairs = [(s, v) for s, v in zip(sent_at, visible_at, strict=True) if v is not None]
    freshness = sorted(max(0.0, v - s) for s, v in pairs)
    drained = bool(sent_at) and len(pairs) == len(sent_at)
    span = (max(v for _, v in pairs) - min(sent_at)) if pairs else 0.0
    acks = sorted(ack_latencies)
    return {
        "offered_msgs_per_s": offered,
        "messages": len(sent_at),
        "drained": drained,
        "sustained_msgs_per_s": round(len(pairs) / span, 1) if drained and span > 0 else None,
        "freshness_s": {
            "p50": _r(percentile(freshness, 0.50)),
            "p99": _r(percentile(freshness, 0.99)),
            "max": _r(freshness[-1] if freshness else None),
        },
        "peer_listener_ack_latency_s": {
            "p50": _r(percentile(acks, 0.50)),
            "p99": _r(percentile(acks, 0.99)),
        },
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# -- the run -------------------------------------------------------------------------------------


class _Scraper:
    """Reads the sink's /metrics every SCRAPE_S on a thread, keeping every distinct reading.

    It asks for the two families it reads only (`name[]`) over one kept-alive connection: a
    full page 50 times a second cost the sink about as much CPU as writing the records did
    (its event loop rendering every collector, contending with the writer thread for the GIL),
    CPU that the worker and the broker need on the same cores.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._path = f"/metrics?name[]={_LAST_COMMIT}&name[]={_RECORDS_IN}"
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._scrapes: list[Scrape] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="e2e-scraper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last: Scrape | None = None
        while not self._stop.is_set():
            try:
                scrape = parse_metrics(self._get())
            except (OSError, http.client.HTTPException):
                scrape = None  # the sink's HTTP server is not up yet
                self._drop()
            if scrape is not None and scrape != last:
                with self._lock:
                    self._scrapes.append(scrape)
                last = scrape
            self._stop.wait(SCRAPE_S)

    def _get(self) -> str:
        if self._connection is None:
            self._connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
        self._connection.request("GET", self._path)
        response = self._connection.getresponse()
        body = response.read().decode()
        if response.status != 200:
            raise http.client.HTTPException(f"/metrics answered {response.status}")
        return body

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def since(self, records: float) -> list[Scrape]:
        with self._lock:
            return [s for s in self._scrapes if s.records > records]

    def records(self) -> float:
        with self._lock:
            return self._scrapes[-1].records if self._scrapes else 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._drop()


def _send(port: int, messages: list[bytes], rate: float | None) -> tuple[list[float], list[float]]:
    """Send at ``rate``; (send times in Unix s, in message order; ACK latencies). Raises if a
    message is not accepted: a refused message would never reach the warehouse."""
    from hl7bus.connectors.mllp.client import AckResult, send_many

    acked_at: dict[int, float] = {}

    def on_ack(result: AckResult) -> None:
        acked_at[result.index] = time.time()

    results = asyncio.run(
        send_many("127.0.0.1", port, messages, window=WINDOW, rate=rate, on_ack=on_ack)
    )
    refused = [r for r in results if not r.accepted]
    if refused:
        raise RuntimeError(
            f"{len(refused)} of {len(results)} messages not accepted "
            f"(first: code {refused[0].code}, error {refused[0].error})"
        )
    sent_at = [acked_at[r.index] - r.latency_s for r in results]
    return sent_at, [r.latency_s for r in results]


def _wait_records(scraper: _Scraper, procs: Processes, target: float, timeout: float) -> bool:
    """Wait until the sink has consumed ``target`` records (False at the timeout)."""
    deadline = time.monotonic() + timeout
    while scraper.records() < target - 1e-9:
        procs.check()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_drained(settings: Settings, bootstrap: str, procs: Processes) -> None:
    """Wait until the worker and the sink have committed every record (as the demo does)."""
    from hl7bus.schemas import topics
    from hl7bus.streams.worker_config import source_topics

    catalog = topics.TopicCatalog.load(settings.topics)
    names = {tid: catalog.name(tid) for tid in catalog.specs}
    research = [n for tid, n in names.items() if tid.startswith("research.")]
    worker_topics = [names[tid] for tid in source_topics(settings.worker.stages)]
    for what, group, topic_names in (
        ("the worker", settings.worker.app_id, worker_topics),
        ("the sink", settings.warehouse.group_id, research),
    ):
        procs.wait_for(
            f"{what} to commit the warm-up",
            functools.partial(_no_lag, settings, bootstrap, group, topic_names),
            DRAIN_TIMEOUT_S,
        )


def _no_lag(settings: Settings, bootstrap: str, group: str, topic_names: list[str]) -> bool:
    from hl7bus.connectors import kafka_clients

    return kafka_clients.group_lag(settings.kafka, bootstrap, group, topic_names) == 0


def _ladder(
    settings: Settings,
    bootstrap: str,
    bus: Bus,
    procs: Processes,
    rates: Sequence[float],
    seconds: float,
) -> tuple[float, list[dict[str, Any]]]:
    from bench.mllp import corpus

    scraper = _Scraper(bus.sink_metrics_port)
    try:
        # Warm-up: consumers joined, first batches written, records per message measured.
        _send(bus.mllp_port, corpus(WARMUP_MESSAGES, "E2EW", variants=1), None)
        _wait_drained(settings, bootstrap, procs)
        procs.wait_for(
            "the sink's metrics to count the warm-up",
            lambda: _settled(scraper),
            DRAIN_TIMEOUT_S,
        )
        per_message = scraper.records() / WARMUP_MESSAGES
        if per_message <= 0 or abs(per_message - round(per_message)) > 1e-9:
            raise RuntimeError(f"warm-up: {per_message} research records per message")
        rungs: list[dict[str, Any]] = []
        for index, rate in enumerate(rates):
            base = scraper.records()
            messages = corpus(max(1, round(rate * seconds)), f"E2E{index}R", variants=1)
            sent_at, acks = _send(bus.mllp_port, messages, rate)
            drained = _wait_records(
                scraper, procs, base + per_message * len(messages), DRAIN_TIMEOUT_S
            )
            visible = visible_times(scraper.since(base), base, per_message, len(messages))
            rung = rung_figures(rate, sent_at, visible, acks)
            rung["drained"] = rung["drained"] and drained
            rungs.append(rung)
            p99 = rung["freshness_s"]["p99"]
            if not rung["drained"] or p99 is None or p99 > TARGET_P99_S:
                break
        return per_message, rungs
    finally:
        scraper.close()


def _settled(scraper: _Scraper) -> bool:
    """The sink's metrics count something and nothing more for a second (the scrape has caught
    up with the committed warm-up)."""
    before = scraper.records()
    if before <= 0:
        return False
    time.sleep(1.0)
    return scraper.records() == before


def run(
    rates: Sequence[float] = (10, 25, 50, 100, 200, 400), seconds: float = 10.0
) -> dict[str, Any]:
    """Start broker and bus, run the ladder, return the JSON-ready result."""
    from bench.mllp import _loadavg
    from hl7bus.ops.config import Settings
    from hl7bus.ops.demo_run import start_bus
    from hl7bus.ops.local_kafka import kafka_version, temporary_broker
    from hl7bus.ops.processes import Processes

    data = Path(tempfile.mkdtemp(prefix="hl7bus-bench-e2e-"))
    (data / "logs").mkdir()
    started = time.perf_counter()
    load_before = _loadavg()
    procs = Processes(data / "logs")
    try:
        with temporary_broker(data / "broker", name="bench-e2e") as broker:
            try:
                settings = Settings()
                bus = start_bus(settings, broker.bootstrap, procs, data, "e2e")
                per_message, rungs = _ladder(settings, broker.bootstrap, bus, procs, rates, seconds)
            finally:
                procs.stop_all()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return {
        "benchmark": "e2e",
        "command": (
            f"hl7bus bench e2e --rates {','.join(f'{r:g}' for r in rates)} --seconds {seconds:g}"
        ),
        "workload": (
            "~2 KB ORU^R01 (one template, distinct MSH-10), one MLLP connection, window "
            f"{WINDOW}, evenly spaced sends; {per_message:g} research records per message"
        ),
        "pipeline": "listener -> hl7.raw -> worker (parse+deid) -> research topics -> sink "
        "-> DuckDB, each a process",
        "freshness": "sink commit (scraped every "
        f"{SCRAPE_S:g} s, cumulative flow) minus the message's send time",
        "peer": "the listener alone: the sender's ACK latency at the same offered rate; "
        "and the offered rate for the sustained rate",
        "target_p99_freshness_s": TARGET_P99_S,
        "rungs": rungs,
        "highest_rate_p99_within_target": highest_rate(rungs),
        "kafka_version": kafka_version(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
