"""`hl7bus bench stream`: parse+normalize in one worker vs the bare loop of the same runtime.

Workload: ORU^R01 messages with exactly 10 OBX (the sample feed's ORU^R01, results cycled to
ten), a distinct MSH-10 each, as RawMessage envelopes on hl7.raw of a real local Kafka broker
that the benchmark starts in a temp dir.

Contenders, each a fresh worker process on the faust app of streams/runtime.py, on its own
copy of the input, interleaved over rounds:

- `parse`: the parse stage as deployed (dedupe check and table, parse, map, normalize, encode,
  produce to hl7.events with acks=all);
- `forward`: the bare consume->produce loop on the same app (built with no stages): an agent,
  added here, that writes every hl7.raw record unchanged to hl7.events, batched and confirmed
  as the runtime's stages are.

Throughput is taken from the broker's record timestamps of the output topic (first to last
record), so worker start-up and the group join are not counted. `events_per_s` counts output
records (parse writes 11 events per message, forward one); `messages_per_s` counts input
records. The issue's target (>= 0.5) is on events/s, parse over forward (`ratio`). The stricter
`messages_ratio` (same input, parse over forward) is reported beside it.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from bench.parse import loadavg, machine
from bench.support import produce_all

OBX_PER_MESSAGE = 10
TARGET_RATIO = 0.5


@cache
def _template() -> str:
    """One ORU^R01 text with exactly OBX_PER_MESSAGE OBX segments (NTE dropped)."""
    from hl7bus.hl7v2 import parse_batch
    from hl7bus.ops.demo_run import sample_feed_path

    for message in parse_batch(sample_feed_path().read_bytes()):
        if message.message_type != "ORU^R01":
            continue
        segments = message.to_er7().split("\r")[:-1]
        head = [s for s in segments if s[:3] not in ("OBX", "NTE")]
        results = [s for s in segments if s[:3] == "OBX"]
        if not results:
            continue
        obx = []
        for i in range(OBX_PER_MESSAGE):
            fields = results[i % len(results)].split("|")
            fields[1] = str(i + 1)  # OBX-1 set id
            obx.append("|".join(fields))
        return "\r".join(head + obx) + "\r"
    raise RuntimeError("the sample feed has no ORU^R01 with results")


def corpus(count: int, tag: str) -> list[tuple[bytes | None, bytes]]:
    """(key, RawMessage value) for `count` messages with MSH-10 = tag + sequence number."""
    from hl7bus.hl7v2 import parse
    from hl7bus.schemas import codec
    from hl7bus.schemas.keys import patient_key

    out = []
    received = datetime.now(UTC)
    for i in range(count):
        message = parse(_template())
        message.set("MSH-10", f"{tag}{i:07d}")
        key = patient_key("bench", message)
        envelope = {
            "schema_version": 1,
            "feed": "bench",
            "received_at": received,
            "peer": "127.0.0.1:1",
            "charset": "utf-8",
            "control_id": message.control_id,
            "message_type": message.message_type,
            "patient_key": key,
            "raw": message.to_bytes(),
        }
        out.append((key.encode() if key else None, codec.encode("RawMessage", envelope)))
    return out


# -- the worker (a child process) ------------------------------------------------------------------


def worker_main(stage: str, prefix: str, bootstrap: str, profile_to: str | None) -> None:
    """Run one worker with only `stage` (parse or forward) until SIGTERM."""
    from hl7bus.schemas import topics
    from hl7bus.streams import deid, runtime

    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=prefix))
    cfg = runtime.WorkerConfig(
        app_id=f"{prefix}worker",
        data_dir=Path(tempfile.mkdtemp(prefix="hl7bus-bench-worker-")),
        metrics_port=None,
    )
    policy = deid.Policy.load(None)
    key = deid.Pseudonymizer(secrets.token_bytes(32), "bench")
    if stage == "forward":
        app = runtime.build_app(cfg, bootstrap, catalog, policy, key, False, stages=())
        _add_forward_agent(app, cfg, catalog)
    else:
        app = runtime.build_app(cfg, bootstrap, catalog, policy, key, False, stages=(stage,))
    sys.argv = [sys.argv[0]]
    if profile_to is None:
        runtime.run(app)
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        runtime.run(app)
    finally:
        profiler.disable()
        profiler.dump_stats(profile_to)


def _add_forward_agent(app: Any, cfg: Any, catalog: Any) -> None:
    """The peer's agent: every hl7.raw record unchanged to hl7.events. Batched as the runtime's
    stages are (worker.batch_*): send the whole batch, wait for every confirmation, and only
    then are the batch's offsets acked (take_events acks after the loop body)."""
    from hl7bus.schemas import topics

    def topic(topic_id: str) -> Any:
        return app.topic(
            catalog.name(topic_id),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    events = topic(topics.EVENTS)

    async def forward(stream: Any) -> None:
        async for batch in stream.take_events(cfg.batch_max_records, cfg.batch_wait_ms / 1000.0):
            pending = [await events.send(key=event.key, value=event.value) for event in batch]
            for sent in pending:
                await sent

    app.agent(topic(topics.RAW), name="forward")(forward)


# -- the driver ----------------------------------------------------------------------------------


def _fill(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    from confluent_kafka import Producer

    from hl7bus.connectors import kafka_clients

    producer = Producer(
        kafka_clients.producer_config(kafka_clients.KafkaConfig(linger_ms=20), bootstrap)
    )
    produce_all(producer, topic, records)


def _output_span(bootstrap: str, topic: str, expected: int, timeout: float) -> tuple[int, float]:
    """(records, seconds from the first to the last record's timestamp) of the output topic."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
        }
    )
    consumer.subscribe([topic])
    count, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    try:
        while count < expected and time.monotonic() < deadline:
            for record in consumer.consume(10_000, 0.5):
                if record.error() is not None:
                    continue
                ts = record.timestamp()[1] / 1000.0
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
                count += 1
    finally:
        consumer.close()
    if count < expected or first is None or last is None:
        raise RuntimeError(f"only {count} of {expected} records reached {topic}")
    return count, max(last - first, 1e-6)


def _one(
    stage: str,
    bootstrap: str,
    records: list[tuple[bytes | None, bytes]],
    expected_out: int,
    logs: Path,
    profile_to: str | None = None,
) -> dict[str, Any]:
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import topics_apply
    from hl7bus.schemas import topics
    from hl7bus.streams import runtime

    prefix = f"bench-{stage}-{uuid.uuid4().hex[:8]}."
    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=prefix))
    admin = kafka_clients.admin_client(kafka_clients.KafkaConfig(), bootstrap)
    topics_apply.apply(admin, catalog, 1)
    runtime.declare_changelog(admin, f"{prefix}worker", catalog.specs[topics.RAW].partitions)
    _fill(bootstrap, catalog.name(topics.RAW), records)
    log = (logs / f"{prefix}log").open("wb")
    args = [sys.executable, "-m", "bench.stream", stage, prefix, bootstrap]
    if profile_to:
        args.append(profile_to)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        count, span = _output_span(bootstrap, catalog.name(topics.EVENTS), expected_out, 300)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "messages": len(records),
        "events": count,
        "seconds": round(span, 3),
        "messages_per_s": round(len(records) / span, 1),
        "events_per_s": round(count / span, 1),
    }


def run(messages: int = 3000, rounds: int = 3, profile: bool = False) -> dict[str, Any]:
    from hl7bus.ops.local_kafka import temporary_broker
    from hl7bus.streams.steps import parse_step

    started = datetime.now(UTC)
    load_before = loadavg()
    records = corpus(messages, f"B{uuid.uuid4().hex[:6]}")
    from zoneinfo import ZoneInfo

    per_message = len(parse_step(records[0][0], records[0][1], ZoneInfo("Asia/Seoul")))
    results: dict[str, list[dict[str, Any]]] = {"parse": [], "forward": []}
    profile_text = None
    with tempfile.TemporaryDirectory(prefix="hl7bus-bench-stream-") as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        with temporary_broker(Path(tmp) / "kafka", name="bench-stream") as broker:
            for _ in range(rounds):
                results["forward"].append(
                    _one("forward", broker.bootstrap, records, messages, logs)
                )
                results["parse"].append(
                    _one("parse", broker.bootstrap, records, messages * per_message, logs)
                )
            if profile:
                stats_file = str(Path(tmp) / "parse.prof")
                _one("parse", broker.bootstrap, records, messages * per_message, logs, stats_file)
                out = io.StringIO()
                stats = pstats.Stats(stats_file, stream=out)
                stats.sort_stats("cumulative").print_stats(35)
                stats.sort_stats("tottime").print_stats(25)
                profile_text = out.getvalue()
            version = broker.version

    def best(stage: str, key: str) -> float:
        return float(max(r[key] for r in results[stage]))

    ratios = [
        p["events_per_s"] / f["events_per_s"]
        for p, f in zip(results["parse"], results["forward"], strict=True)
    ]
    ratio = best("parse", "events_per_s") / best("forward", "events_per_s")
    report: dict[str, Any] = {
        "benchmark": "stream",
        "date": started.isoformat(timespec="seconds"),
        "workload": {
            "messages": messages,
            "message": f"ORU^R01 with {OBX_PER_MESSAGE} OBX",
            "events_per_message": per_message,
            "rounds": rounds,
            "kafka": version,
        },
        "parse": results["parse"],
        "forward": results["forward"],
        "best": {
            "parse_messages_per_s": best("parse", "messages_per_s"),
            "parse_events_per_s": best("parse", "events_per_s"),
            "forward_messages_per_s": best("forward", "messages_per_s"),
        },
        "ratio": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "messages_ratio": round(
            best("parse", "messages_per_s") / best("forward", "messages_per_s"), 3
        ),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    if profile_text is not None:
        report["profile"] = profile_text
    return report


if __name__ == "__main__":
    worker_main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
