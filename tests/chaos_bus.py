"""The chaos suite's bus and its reconciliation (tests/test_chaos.py, issue 15).

Each scenario runs the real bus as the operator runs it (`hl7bus mllp serve`, `hl7bus worker`,
`hl7bus sink warehouse` as child processes, configured by HL7BUS_* variables), sends through the
MLLP client, breaks something, and then reconciles by control id with :func:`reconcile`: every
message that got AA is in hl7.raw byte for byte, the events its raw record parses to are on
hl7.events and on the research topics (or, refused by de-identification, in hl7.dlq), the
warehouse holds the facts of those research records each once (compared with a warehouse
written here from each record once), and no patient value of the messages is in a log line.
The duplicates the faults caused are counted and printed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from kafka_helpers import apply_catalog, read_topic
from prometheus_client.parser import text_string_to_metric_families
from samples import feed, with_control_id
from warehouse_rows import TABLES, omop_rows
from worker_helpers import KAFKA, Produced, http_get, http_status, worker_env

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.mllp.client import send_many
from hl7bus.connectors.warehouse.concepts import NoVocabulary
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.connectors.warehouse.database import open_engine
from hl7bus.connectors.warehouse.writer import BatchWriter, Incoming
from hl7bus.hl7v2 import parse
from hl7bus.ops.processes import Processes, free_port, port_open
from hl7bus.schemas import codec, topics

FEED = "chaos"
# Fields of the sample feed that identify a patient: none may appear in a log line.
PATIENT_FIELDS = ("PID-3.1", "PID-5.1", "PID-5.2", "PID-13.1", "PID-19")


def messages(copies: int, tag: str) -> list[bytes]:
    """The sample feed `copies` times under fresh control ids (`tag`, copy, position): new
    content to the dedupe table, the same patients (so the warehouse upserts across copies)."""
    sample = feed()
    return [
        with_control_id(m, f"{tag}{k}-{i:04d}").to_bytes()
        for k in range(copies)
        for i, m in enumerate(sample)
    ]


def patient_values(sent: Iterable[bytes]) -> set[str]:
    """The identifying values (PATIENT_FIELDS) of the messages."""
    values = set()
    for raw in sent:
        message = parse(raw)
        for path in PATIENT_FIELDS:
            value = message.get(path)
            if value and len(value) >= 2:
                values.add(value)
    return values


class Bus:
    """One bus under test: its topics (a prefix of its own), the environment of its three
    components, their processes and the ports they answer on."""

    def __init__(
        self,
        bootstrap: str,
        unique_name: str,
        tmp_path: Path,
        warehouse: dict[str, str] | None = None,
        **mllp: str,
    ) -> None:
        self.bootstrap = bootstrap
        self.catalog = apply_catalog(bootstrap, unique_name)
        self.mllp_port, self.listener_metrics = free_port(), free_port()
        self.worker_metrics, self.sink_metrics = free_port(), free_port()
        self.worker_group = f"{unique_name}-worker"
        self.sink_group = f"{unique_name}-warehouse"
        self.warehouse_path = tmp_path / "warehouse.duckdb"
        self.reference_path = tmp_path / "reference.duckdb"
        self.env = {
            **worker_env(bootstrap, unique_name, tmp_path / "worker", self.worker_metrics),
            "HL7BUS_MLLP_PORT": str(self.mllp_port),
            "HL7BUS_MLLP_FEED": FEED,
            "HL7BUS_MLLP_METRICS_PORT": str(self.listener_metrics),
            "HL7BUS_WAREHOUSE_METRICS_PORT": str(self.sink_metrics),
            "HL7BUS_WAREHOUSE_GROUP_ID": self.sink_group,
            "HL7BUS_WAREHOUSE_RETRY_MAX_S": "2",
            **(warehouse or {"HL7BUS_WAREHOUSE_PATH": str(self.warehouse_path)}),
            **{f"HL7BUS_MLLP_{k.upper()}": v for k, v in mllp.items()},
        }
        logs = tmp_path / "logs"
        logs.mkdir()
        self.procs = Processes(logs)

    def topic(self, topic_id: str) -> str:
        return self.catalog.name(topic_id)

    @property
    def research_topics(self) -> list[str]:
        return [s.name for s in self.catalog.specs.values() if s.id.startswith("research.")]

    def start_listener(self) -> None:
        self.procs.start("listener", ["mllp", "serve"], self.env)
        self.procs.wait_for("the listener", lambda: port_open(self.mllp_port), 60)

    def start_worker(self, name: str = "worker") -> None:
        # At info: faust's rebalance and recovery lines and the worker's own say what happened.
        self.procs.start(name, ["worker", "--loglevel", "info"], self.env)

    def start_sink(self) -> None:
        self.procs.start("sink", ["sink", "warehouse"], self.env)

    def start(self) -> None:
        self.start_listener()
        self.start_worker()
        self.start_sink()
        self.procs.wait_for(
            "the worker and the sink to be ready",
            lambda: (
                http_status(self.worker_metrics, "/readyz") == 200
                and http_status(self.sink_metrics, "/readyz") == 200
            ),
            90,
        )

    def size(self, topic_id: str) -> int:
        name = self.topic(topic_id)
        return kafka_clients.topic_sizes(KAFKA, self.bootstrap, [name])[name] or 0

    def lag(self, group: str, names: list[str]) -> int:
        try:
            return kafka_clients.group_lag(KAFKA, self.bootstrap, group, names)
        except KafkaException:  # a coordinator still loading (a restarted broker)
            return -1

    def wait_caught_up(self, timeout: float = 180) -> None:
        """The worker has consumed hl7.raw to its end and the sink the research topics."""
        self.procs.wait_for(
            "the worker and the sink to catch up",
            lambda: (
                self.lag(self.worker_group, [self.topic(topics.RAW)]) == 0
                and self.lag(self.sink_group, self.research_topics) == 0
            ),
            timeout,
        )

    def sink_metric(self, name: str) -> float:
        """The sum of the sink's samples of `name` (0 while it does not answer)."""
        return metric(self.sink_metrics, name)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.procs.logs.glob("*.log")))


def metric(port: int, name: str) -> float:
    """The sum of the samples of `name` on a component's /metrics (0 while it does not
    answer)."""
    status, text = http_get(port, "/metrics")
    if status != 200:
        return 0.0
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


@dataclass
class Sent:
    """What the sender got: the bytes of each control id that got AA, how many sends it took
    (resends of what got AR, AE or no answer), and every answer's code or error kind."""

    accepted: dict[str, bytes] = field(default_factory=dict)
    sends: int = 0
    answers: Counter[str] = field(default_factory=Counter)


def send_until_accepted(
    port: int,
    payloads: Sequence[bytes],
    *,
    window: int = 8,
    rate: float | None = None,
    timeout: float = 240.0,
) -> Sent:
    """Send, then resend what did not get AA (as an interface engine does), until every message
    got AA or `timeout` passed; `rate` (messages per second) spreads the first sends out.
    AR while the broker is down is a correct answer: it says "send again"."""
    sent = Sent()
    remaining = list(payloads)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        results = asyncio.run(
            send_many("127.0.0.1", port, remaining, window=window, rate=rate, ack_timeout=15)
        )
        sent.sends += len(remaining)
        retry = []
        for payload, result in zip(remaining, results, strict=True):
            sent.answers[result.code or (result.error or "?").split(":", 1)[0]] += 1
            if result.accepted and result.control_id is not None:
                sent.accepted[result.control_id] = payload
            else:
                retry.append(payload)
        remaining = retry
        if remaining:
            time.sleep(1.0)
    return sent


@dataclass(frozen=True)
class Reconciled:
    """Counts of one reconciliation, printed by the scenario."""

    accepted: int
    raw_records: int
    raw_resent: int  # records of a control id already on hl7.raw (a resend the dedupe absorbs)
    events: int
    events_twice: int  # event ids emitted more than once on hl7.events (sum of the extra copies)
    research_twice: int  # likewise on the research topics
    refused_by_deid: int
    warehouse_rows: int

    def line(self) -> str:
        return (
            f"{self.accepted} AA'd control ids, all in hl7.raw ({self.raw_records} records, "
            f"{self.raw_resent} resent); {self.events} events, duplicates emitted: "
            f"{self.events_twice} on hl7.events, {self.research_twice} on research "
            f"({self.refused_by_deid} refused by de-identification); warehouse "
            f"{self.warehouse_rows} rows, none twice"
        )


def reconcile(bus: Bus, sent: Sent, warehouse: WarehouseConfig | None = None) -> Reconciled:
    """Assert the chain by control id (see the module's docstring) and count duplicates.

    Call once the worker and the sink have caught up and the sink has stopped (a DuckDB file is
    then free to read)."""
    raw_topic = bus.topic(topics.RAW)
    raw = read_topic(bus.bootstrap, raw_topic, bus.size(topics.RAW))
    produced = [
        Produced(r.partition() or 0, r.offset() or 0, r.key(), r.value() or b"")
        for r in sorted(raw, key=lambda r: (r.partition() or 0, r.offset() or 0))
    ]
    stored: dict[str, set[bytes]] = {}
    raw_resent = 0
    expected: dict[str, None] = {}  # every event the stored messages parse to, in raw's order
    by_control: dict[str, tuple[str, ...]] = {}
    for p in produced:
        envelope = codec.decode(p.value)[1]
        control_id, payload = envelope["control_id"], envelope["raw"]
        if envelope["feed"] != FEED or not control_id:
            continue
        if payload in stored.setdefault(control_id, set()):
            raw_resent += 1  # the same message again: a resend, the worker's dedupe absorbs it
            continue
        stored[control_id].add(payload)
        by_control[control_id] = p.event_ids
        expected.update(dict.fromkeys(p.event_ids))
    missing = [cid for cid, payload in sent.accepted.items() if payload not in stored.get(cid, ())]
    assert not missing, f"{len(missing)} AA'd messages not in hl7.raw, e.g. {missing[:5]}"
    no_events = [cid for cid in sent.accepted if not by_control.get(cid)]
    assert not no_events, f"AA'd messages without events: {no_events[:5]}"

    def ids_of(names: list[str]) -> tuple[Counter[str], dict[str, bytes]]:
        sizes = kafka_clients.topic_sizes(KAFKA, bus.bootstrap, names)
        counts: Counter[str] = Counter()
        values: dict[str, bytes] = {}
        for name in names:
            for r in read_topic(bus.bootstrap, name, sizes[name] or 0) if sizes[name] else []:
                eid = codec.decode(r.value() or b"", None)[1]["event_id"]
                counts[eid] += 1
                values.setdefault(eid, r.value() or b"")
        return counts, values

    events, _ = ids_of([bus.topic(topics.EVENTS)])
    assert set(events) == set(expected), (
        f"hl7.events: {len(set(expected) - set(events))} events missing, "
        f"{len(set(events) - set(expected))} unexpected"
    )
    research, values = ids_of(bus.research_topics)
    dlq_topic = bus.topic(topics.DLQ)
    refused = {
        codec.decode(r.value() or b"")[1]["event_id"]
        for r in read_topic(bus.bootstrap, dlq_topic, bus.size(topics.DLQ))
        if dict(r.headers() or []).get("hl7bus.stage") == b"deidentifying"
    }
    assert set(research) | refused == set(expected), "research events missing"
    assert not set(research) & refused

    # The warehouse: the facts of the research records, each once. The reference is written
    # here from each record once, in hl7.raw's order, by the sink's own writer.
    ordered = [values[eid] for eid in expected if eid in values]
    reference = open_engine(WarehouseConfig(path=bus.reference_path))
    try:
        BatchWriter(reference, NoVocabulary()).write([Incoming(v) for v in ordered])
        wanted = omop_rows(reference)
    finally:
        reference.close()
    engine = open_engine(warehouse or WarehouseConfig(path=bus.warehouse_path))
    try:
        actual = omop_rows(engine)
    finally:
        engine.close()
    for table in TABLES:
        doubled = [row for row, n in actual[table].items() if n > 1]
        assert not doubled, f"{table}: {len(doubled)} rows written twice"
        assert actual[table] == wanted[table], table
    rows = sum(sum(c.values()) for c in actual.values())

    # No patient value of what was sent in any component's log.
    logs = bus.logs()
    leaked = [v for v in patient_values(sent.accepted.values()) if v in logs]
    assert not leaked, f"{len(leaked)} patient values in the logs"
    assert sum(actual["person"].values()) > 0 and sum(actual["measurement"].values()) > 0

    return Reconciled(
        accepted=len(sent.accepted),
        raw_records=len(produced),
        raw_resent=raw_resent,
        events=len(expected),
        events_twice=sum(n - 1 for n in events.values()),
        research_twice=sum(n - 1 for n in research.values()),
        refused_by_deid=len(refused),
        warehouse_rows=rows,
    )
