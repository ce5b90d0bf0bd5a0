"""`hl7bus dlq` and `hl7bus replay` on the real broker, with a running `hl7bus worker`.

DLQ records are written as their writers write them: the listener's (connectors/mllp/intake.py
_to_dlq: the envelope keyed by feed, dlq_headers("receiving", ...)) and the worker's parse
step's own DLQ output (streams/steps.py parse_step).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka_helpers import apply_catalog, read_topic
from samples import envelope, feed, first
from test_dlq_units import _bad_charset
from typer.testing import CliRunner
from worker_helpers import KAFKA, SEOUL, produce_raw, worker_env

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import build_envelope, dlq_headers
from hl7bus.ops.cli import app
from hl7bus.ops.processes import Processes, free_port
from hl7bus.schemas import codec, topics
from hl7bus.streams.steps import REPLAY_HEADER, parse_step

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _cli(args: list[str], code: int = 0) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    return result.output


def _objects(text: str) -> list[Any]:
    """The JSON objects printed one after another (rich indents them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) >= 0:
        obj, at = decoder.raw_decode(text, start)
        found.append(obj)
    return found


def _size(topic: str, bootstrap: str) -> int:
    return kafka_clients.topic_sizes(KAFKA, bootstrap, [topic])[topic] or 0


def _env(monkeypatch: pytest.MonkeyPatch, bootstrap: str, unique_name: str) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("HL7BUS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HL7BUS_KAFKA_BOOTSTRAP", bootstrap)
    monkeypatch.setenv("HL7BUS_TOPICS_PREFIX", f"{unique_name}.")
    monkeypatch.setenv("HL7BUS_MLLP_FEED", "lab")


def test_dlq_list_show_resubmit_and_purge(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic, dlq_topic = catalog.name(topics.RAW), catalog.name(topics.DLQ)
    events_topic = catalog.name(topics.EVENTS)
    _env(monkeypatch, kafka_bootstrap, unique_name)

    # 0:0, the listener's: a charset no codec knows (fixed below by the feed's override).
    built = build_envelope(_bad_charset(), feed="lab", peer="10.0.0.9:5000", require_header=True)
    assert built.reason == "charset"
    listener_value = codec.encode("RawMessage", built.record)
    # 0:1, the worker's parse step's: bytes that are no HL7 message.
    junk = codec.encode("RawMessage", envelope(first("ADT^A01"), "lab") | {"raw": b"junk\r"})
    [parse_dlq] = parse_step(b"lab|x|1", junk, SEOUL)
    assert parse_dlq.topic_id == topics.DLQ
    producer = Producer(kafka_clients.producer_config(KAFKA, kafka_bootstrap))
    producer.produce(
        dlq_topic,
        listener_value,
        b"lab",
        headers=kafka_clients.wire_headers(dlq_headers("receiving", "charset", "x")),
    )
    producer.produce(
        dlq_topic,
        parse_dlq.value,
        parse_dlq.key,
        headers=kafka_clients.wire_headers(parse_dlq.headers),
    )
    assert producer.flush(30) == 0

    listed = _objects(_cli(["dlq", "list", "--json"]))
    assert [(r["id"], r["stage"], r["reason"], r["feed"], r["status"]) for r in listed] == [
        ("0:0", "receiving", "charset", "lab", "open"),
        ("0:1", "parsing", "hl7_parse_error", "lab", "open"),
    ]
    assert [r["id"] for r in _objects(_cli(["dlq", "list", "--json", "--stage", "parsing"]))] == [
        "0:1"
    ]
    assert _objects(_cli(["dlq", "list", "--json", "--feed", "other"])) == []
    assert _objects(_cli(["dlq", "list", "--json", "--reason", "charset"]))[0]["id"] == "0:0"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _objects(_cli(["dlq", "list", "--json", "--since", future])) == []

    # show: redacted by default; --reveal needs the audit log and writes one line to it.
    name = first("ADT^A01").get("PID-5.1")
    assert name
    redacted = _cli(["dlq", "show", "0:0"])
    assert name not in redacted and "<redacted>" in redacted and "10.0.0.9" in redacted
    assert "dlq.audit_log" in _cli(["dlq", "show", "0:0", "--reveal"], code=2)
    audit_log = tmp_path / "audit" / "dlq.log"
    monkeypatch.setenv("HL7BUS_DLQ_AUDIT_LOG", str(audit_log))
    assert name in _cli(["dlq", "show", "0:0", "--reveal"])
    [line] = audit_log.read_text().splitlines()
    audit = json.loads(line)
    assert (audit["record"], audit["action"], audit["topic"]) == ("0:0", "reveal", dlq_topic)
    assert audit["who"] and audit["at"] and name not in line

    # resubmit: the cause is not fixed yet -> refused (exit 3), nothing written.
    out = _cli(["dlq", "resubmit", "--stage", "receiving", "--execute"], code=3)
    assert "still refused" in out and _size(raw_topic, kafka_bootstrap) == 0
    # Fixed (the feed's charset override): a dry run writes nothing and marks nothing ...
    monkeypatch.setenv("HL7BUS_MLLP_CHARSET", "utf-8")
    assert "dry run: 1 record(s)" in _cli(["dlq", "resubmit", "--stage", "receiving"])
    assert _size(raw_topic, kafka_bootstrap) == 0
    assert len(_objects(_cli(["dlq", "list", "--json"]))) == 2
    # ... --execute writes it to hl7.raw marked as a replay, then marks it done.
    assert "1 record(s) resubmitted" in _cli(["dlq", "resubmit", "0:0", "--execute"])
    [resent] = read_topic(kafka_bootstrap, raw_topic, 1)
    assert dict(resent.headers() or [])[REPLAY_HEADER] == b"dlq/0:0"
    assert [r["id"] for r in _objects(_cli(["dlq", "list", "--json"]))] == ["0:1"]
    done = _objects(_cli(["dlq", "list", "--json", "--all"]))
    assert [r["status"] for r in done] == ["resubmitted", "open"]

    # The worker takes it to hl7.events.
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "worker", free_port())
    expected = len(parse_step(resent.key(), resent.value() or b"", SEOUL))
    try:
        procs.start("worker", ["worker"], env)
        procs.wait_for(
            "the resubmitted message's events",
            lambda: _size(events_topic, kafka_bootstrap) >= expected,
            90,
        )
    finally:
        procs.stop_all()
    assert expected > 0

    # purge: a dry run deletes nothing; --execute marks 0:1 and deletes the done head.
    assert "dry run: 1 record(s)" in _cli(["dlq", "purge", "--stage", "parsing"])
    assert _size(dlq_topic, kafka_bootstrap) == 2
    out = _cli(["dlq", "purge", "--stage", "parsing", "--execute"])
    assert "partition 0 before offset 2" in out
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_name})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(dlq_topic, 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (2, 2)
    assert _objects(_cli(["dlq", "list", "--json", "--all"])) == []
    # Their markers are tombstoned, so compaction drops them too.
    markers = read_topic(kafka_bootstrap, catalog.name(topics.DLQ_DONE), 4)
    assert [(m.key(), m.value() is None) for m in markers[-2:]] == [(b"0:0", True), (b"0:1", True)]


def test_replay_re_emits_a_time_range_past_dedupe_and_diff_names_changes(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic, events_topic = catalog.name(topics.RAW), catalog.name(topics.EVENTS)
    _env(monkeypatch, kafka_bootstrap, unique_name)
    messages = feed()
    start = datetime.now(UTC) - timedelta(seconds=1)
    produced = produce_raw(kafka_bootstrap, raw_topic, {"a": messages[:8], "b": messages[8:12]})
    a_events = sum(len(p.event_ids) for p in produced[:8])
    total = sum(len(p.event_ids) for p in produced)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    port = free_port()
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "worker", port)
    try:
        procs.start("worker", ["worker"], env)
        procs.wait_for("the first pass", lambda: _size(events_topic, kafka_bootstrap) >= total, 90)

        # --dry-run and --diff write nothing; the diff finds every event as stored.
        out = _objects(
            _cli(["replay", "--feed", "a", "--from", start.isoformat(), "--dry-run", "--json"])
        )
        assert out[0]["chosen"] == 8 and out[0]["other_feeds"] == 4 and out[0]["replayed"] == 0
        diff = _objects(
            _cli(["replay", "--feed", "a", "--from", start.isoformat(), "--diff", "--json"])
        )
        assert diff[-1]["totals"] == {"same": a_events}
        # An event stored by an older map: its field differs from what the maps make now.
        stored = read_topic(kafka_bootstrap, events_topic, total)
        target = next(
            r
            for r in stored
            if codec.decode(r.value() or b"")[1]["feed"] == "a"
            and "message_type" in codec.decode(r.value() or b"")[1]
        )
        event_type, record = codec.decode(target.value() or b"")
        old = codec.encode(event_type, record | {"message_type": "OLD^MAP"}, topic=topics.EVENTS)
        producer = Producer(kafka_clients.producer_config(KAFKA, kafka_bootstrap))
        producer.produce(events_topic, old, target.key(), headers=target.headers())
        assert producer.flush(30) == 0
        diff = _objects(
            _cli(["replay", "--feed", "a", "--from", start.isoformat(), "--diff", "--json"])
        )
        changed = [d for d in diff[:-1] if d["status"] == "changed"]
        assert [(d["event_id"], d["fields"]) for d in changed] == [
            (record["event_id"], ["message_type"])
        ]
        assert _size(raw_topic, kafka_bootstrap) == 12

        # The replay: feed a's 8 records again, marked; the worker re-emits all their events
        # (not dropped as resends), so the latest stored form is the current map's again.
        before = _size(events_topic, kafka_bootstrap)
        out = _objects(_cli(["replay", "--feed", "a", "--from", start.isoformat(), "--json"]))
        assert out[0]["replayed"] == 8
        procs.wait_for(
            "the replay's events",
            lambda: _size(events_topic, kafka_bootstrap) >= before + a_events,
            90,
        )
        # A second replay of the same range chooses the originals only, never the replays.
        again = _objects(
            _cli(["replay", "--feed", "a", "--from", start.isoformat(), "--dry-run", "--json"])
        )
        assert again[0]["chosen"] == 8 and again[0]["skipped_replays"] == 8
    finally:
        procs.stop_all()
    diff = _objects(
        _cli(["replay", "--feed", "a", "--from", start.isoformat(), "--diff", "--json"])
    )
    assert diff[-1]["totals"] == {"same": a_events}
    assert _size(events_topic, kafka_bootstrap) == total + 1 + a_events
    # Offsets: PARTITION:OFFSET picks one partition's records.
    p0 = [p for p in produced[:8] if p.partition == produced[0].partition]
    out = _objects(
        _cli(
            ["replay", "--feed", "a", "--from", f"{produced[0].partition}:0", "--dry-run", "--json"]
        )
    )
    assert out[0]["chosen"] == len(p0)


def test_a_replay_rewrites_stale_warehouse_rows(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written under an older map (made stale here by hand while the sink is stopped: the
    shipped maps cannot change mid-test) are rewritten by a replay: the worker re-emits the
    range past dedupe, the sink upserts by event id, and no row is doubled."""
    import duckdb

    catalog = apply_catalog(kafka_bootstrap, unique_name)
    raw_topic = catalog.name(topics.RAW)
    research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    _env(monkeypatch, kafka_bootstrap, unique_name)
    warehouse = tmp_path / "warehouse.duckdb"
    env = worker_env(kafka_bootstrap, unique_name, tmp_path / "worker", free_port())
    env |= {
        "HL7BUS_WAREHOUSE_PATH": str(warehouse),
        "HL7BUS_WAREHOUSE_METRICS_PORT": str(free_port()),
        "HL7BUS_WAREHOUSE_GROUP_ID": f"{unique_name}-warehouse",
    }
    start = datetime.now(UTC) - timedelta(seconds=1)
    oru = [m for m in feed() if m.message_type == "ORU^R01"][:10]
    produce_raw(kafka_bootstrap, raw_topic, {"a": oru})

    def research_size() -> int:
        sizes = kafka_clients.topic_sizes(KAFKA, kafka_bootstrap, research)
        return sum(v or 0 for v in sizes.values())

    def caught_up() -> bool:
        group = f"{unique_name}-warehouse"
        worker = f"{unique_name}-worker"
        return (
            research_size() > 0
            and kafka_clients.group_lag(KAFKA, kafka_bootstrap, worker, [raw_topic]) == 0
            and kafka_clients.group_lag(KAFKA, kafka_bootstrap, group, research) == 0
        )

    def measurements() -> list[tuple[Any, ...]]:
        conn = duckdb.connect(str(warehouse), read_only=True)
        try:
            return conn.execute(
                "SELECT measurement_id, measurement_source_value FROM measurement ORDER BY 1"
            ).fetchall()
        finally:
            conn.close()

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        procs.start("worker", ["worker"], env)
        procs.start("sink", ["sink", "warehouse"], env)
        procs.wait_for("the first pass in the warehouse", caught_up, 120)
        procs.stop("sink")
        fresh = measurements()
        assert fresh
        conn = duckdb.connect(str(warehouse))
        conn.execute("UPDATE measurement SET measurement_source_value = 'STALE'")
        conn.close()
        before = research_size()

        procs.start("sink2", ["sink", "warehouse"], env)
        out = _objects(_cli(["replay", "--feed", "a", "--from", start.isoformat(), "--json"]))
        assert out[0]["replayed"] == len(oru)
        procs.wait_for(
            "the replay in the warehouse",
            lambda: research_size() >= 2 * before and caught_up(),
            120,
        )
        procs.stop("sink2")
    finally:
        procs.stop_all()
    assert measurements() == fresh
