"""`hl7bus bench stream`: the worker through a real broker vs the bare loop of the same runtime.

Workload: ORU^R01 messages with exactly 10 OBX (the sample feed's ORU^R01, results cycled to
ten) and the free-text NTE of bench deid (names, phones, an RRN, dates of the message's own
patient), a distinct MSH-10 each, as RawMessage envelopes on hl7.raw of a real local Kafka
broker that the benchmark starts in a temp dir.

Contenders (``--contenders``; default forward and parse), each a fresh worker process on the
faust app of streams/runtime.py, on its own copy of the input, interleaved over rounds:

- `parse`: the parse stage alone (dedupe check and table, parse, map, normalize, encode,
  produce to hl7.events with acks=all);
- `fused`: the worker as deployed by default, both stages: parse as above, and each event's
  research form made in the same pass (policy kr-pseudonym, leak check on, encoded with its
  research contract) and produced to its research topic;
- `research_only`: `fused` with ``worker.identified_output: false`` (no hl7.events records, no
  identified encode);
- `forward`: the bare consume->produce loop on the same app (built with no stages): an agent,
  added here, that writes every hl7.raw record unchanged to hl7.events with the producer's
  send, taken in batches and confirmed as the runtime's stages are.

With ``--baseline DIR`` (another checkout, e.g. a git worktree of an earlier commit) each
round also runs the contenders' workers on that tree's hl7bus (named ``<contender>@baseline``;
research_only is left out there, older trees have no identified_output), and the report gives
each contender's CPU per message against the baseline's (research_only against the baseline's
fused worker).

Throughput is taken from the broker's record timestamps of the output topics (first to last
record), so worker start-up and the group join are not counted. `events_per_s` counts output
records (parse writes 11 events per message, fused 22, research_only 11, forward one);
`messages_per_s` counts input records. `cpu_us_per_message` is the worker process's CPU time
(user + system, /proc, sampled every 20 ms) from the start of its first batch after a tenth of
the input (the worker notes when each batch starts) to its last output record's timestamp, per
input message of that span: per core (load from other processes does not stretch it) and in
steady state (no start-up, group join or first-batch warm-up). The
issue's target (>= 0.5) is on events/s, parse over forward (`ratio`). The stricter
`messages_ratio` (same input, parse over forward) is reported beside it.
"""

from __future__ import annotations

import bisect
import cProfile
import io
import os
import pstats
import secrets
import subprocess
import sys
import tempfile
import threading
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
CONTENDERS = ("forward", "parse", "fused", "research_only")


@cache
def _template() -> str:
    """One ORU^R01 text with exactly OBX_PER_MESSAGE OBX segments and bench deid's free-text
    NTE at the end (the sample feed's own NTEs dropped)."""
    from bench.deid import _note
    from hl7bus.hl7v2 import parse, parse_batch
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
        text = "\r".join(head + obx) + "\r"
        return f"{text}NTE|1|L|{_note(parse(text))}\r"
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


def worker_main(
    contender: str, prefix: str, bootstrap: str, batches_to: str, profile_to: str | None
) -> None:
    """Run the worker of one contender until SIGTERM; note the start of each batch in
    ``batches_to`` (see _note_batch)."""
    from hl7bus.schemas import topics
    from hl7bus.streams import deid, runtime
    from hl7bus.streams.stage import Stages

    process = Stages.process

    def process_and_mark(self: Any, stage: str, records: Any) -> Any:
        _note_batch(batches_to, len(records))
        return process(self, stage, records)

    Stages.process = process_and_mark  # type: ignore[method-assign]

    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=prefix))
    settings: dict[str, Any] = {}
    if contender == "research_only":  # only set when off: older trees have no such setting
        settings["identified_output"] = False
    try:
        from hl7bus.streams.worker_config import WorkerConfig
    except ImportError:  # a baseline tree from before streams/worker_config.py
        WorkerConfig = runtime.WorkerConfig  # type: ignore[attr-defined,misc]
    cfg = WorkerConfig(
        app_id=f"{prefix}worker",
        data_dir=Path(tempfile.mkdtemp(prefix="hl7bus-bench-worker-")),
        metrics_port=None,
        **settings,
    )
    policy = deid.Policy.load(None)
    key = deid.Pseudonymizer(secrets.token_bytes(32), "bench")
    stages = {"forward": (), "parse": ("parse",)}.get(contender, ("parse", "deidentify"))
    app = runtime.build_app(cfg, bootstrap, catalog, policy, key, True, stages=stages)
    if contender == "forward":
        _add_forward_agent(app, cfg, catalog, batches_to)
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


_taken = [0]  # records the worker took before the current batch


def _note_batch(path: str, records: int) -> None:
    """Append "<wall time> <records taken before>" for a batch that starts now."""
    with open(path, "a", encoding="ascii") as fh:
        fh.write(f"{time.time()!r} {_taken[0]}\n")
    _taken[0] += records


def _add_forward_agent(app: Any, cfg: Any, catalog: Any, batches_to: str) -> None:
    """The peer's agent: every hl7.raw record unchanged to hl7.events. Taken in batches as the
    runtime's stages are (worker.batch_*), each record sent with the app's producer (the bare
    loop: no record batches of its own); it waits for every confirmation, and only then are
    the batch's offsets acked (take_events acks after the loop body)."""
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
            _note_batch(batches_to, len(batch))
            producer = await app.maybe_start_producer()
            name = events.get_topic_name()
            pending = [
                await producer.send(name, event.key, event.value, None, None, None)
                for event in batch
            ]
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat, all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _CpuClock:
    """The CPU seconds of a process, sampled every 20 ms with the wall clock (a thread), so
    that the CPU it spent between two wall times (those of output records) can be read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), _cpu_seconds(self.pid)))
            except OSError:  # the process is gone
                return
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, when: float) -> float:
        """CPU seconds at wall time ``when``, interpolated between the samples around it."""
        times = [t for t, _ in self.samples]
        i = bisect.bisect_left(times, when)
        if i == 0:
            return self.samples[0][1]
        if i == len(times):
            return self.samples[-1][1]
        (t0, c0), (t1, c1) = self.samples[i - 1], self.samples[i]
        return c0 + (c1 - c0) * (when - t0) / (t1 - t0)


def _output_span(
    bootstrap: str, topic_names: list[str], expected: int, timeout: float
) -> tuple[int, float, float]:
    """(records, the first and the last record's timestamp) of the output topics."""
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
    consumer.subscribe(topic_names)
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
        raise RuntimeError(f"only {count} of {expected} records reached {', '.join(topic_names)}")
    return count, first, max(last, first + 1e-6)


def _one(
    contender: str,
    bootstrap: str,
    records: list[tuple[bytes | None, bytes]],
    per_message: int,
    logs: Path,
    profile_to: str | None = None,
    hl7bus_from: Path | None = None,
) -> dict[str, Any]:
    """One worker run of `contender` on its own copy of the input (`hl7bus_from`: a folder
    holding another tree's `hl7bus` package for the worker, the baseline)."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import topics_apply
    from hl7bus.schemas import topics
    from hl7bus.streams import worker_config

    prefix = f"bench-{contender.replace('_', '-')}-{uuid.uuid4().hex[:8]}."
    catalog = topics.TopicCatalog.load(topics.TopicsConfig(prefix=prefix))
    admin = kafka_clients.admin_client(kafka_clients.KafkaConfig(), bootstrap)
    topics_apply.apply(admin, catalog, 1)
    worker_config.declare_changelog(admin, f"{prefix}worker", catalog.specs[topics.RAW].partitions)
    _fill(bootstrap, catalog.name(topics.RAW), records)
    outputs = [catalog.name(topics.EVENTS)] if contender != "research_only" else []
    if contender in ("fused", "research_only"):
        outputs += [catalog.name(t) for t in catalog.specs if t.startswith(topics.research(""))]
    log = (logs / f"{prefix}log").open("wb")
    batches_to = logs / f"{prefix}batches"
    args = [sys.executable, "-m", "bench.stream", contender, prefix, bootstrap, str(batches_to)]
    if profile_to:
        args.append(profile_to)
    root = Path(__file__).resolve().parent.parent
    # The checkout first; a PYTHONPATH given to the benchmark stays after it (e.g. another
    # tree's hl7bus, to measure it with this benchmark).
    given = (str(hl7bus_from) if hl7bus_from else None, os.environ.get("PYTHONPATH"))
    path = os.pathsep.join(p for p in (str(root), *given) if p)
    proc = subprocess.Popen(
        args,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
    )
    clock = _CpuClock(proc.pid)
    try:
        count, first, last = _output_span(bootstrap, outputs, len(records) * per_message, 300)
    finally:
        clock.stop()
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # The worker's CPU time from the start of the first batch after a tenth of the input to its
    # last output (the records' timestamps are its producer's clock), per message of that
    # span: steady state, without start-up, group join and the first batches' warm-up (lazy
    # caches and regex compiles), which a worker that runs for days does not see.
    span = last - first
    batches = [line.split() for line in batches_to.read_text(encoding="ascii").splitlines()]
    since, before = next(
        ((float(t), int(n)) for t, n in batches if int(n) >= len(records) // 10),
        (float(batches[0][0]), 0),
    )
    cpu = clock.at(last) - clock.at(since)
    messages = len(records) - before
    return {
        "messages": len(records),
        "events": count,
        "seconds": round(span, 3),
        "messages_per_s": round(len(records) / span, 1),
        "events_per_s": round(count / span, 1),
        "cpu_us_per_message": round(cpu / messages * 1e6, 1) if cpu > 0 else None,
        "messages_per_cpu_s": round(messages / cpu, 1) if cpu > 0 else None,
    }


def _package_of(checkout: Path, into: Path) -> Path:
    """A folder holding the `hl7bus` package of another checkout of this repository (its
    top-level folders are the subpackages, as pyproject.toml's package-dir maps them)."""
    package = into / "hl7bus"
    package.mkdir(parents=True)
    for sub in ("hl7v2", "schemas", "streams", "connectors", "ops"):
        if not (checkout / sub / "__init__.py").is_file():
            raise ValueError(f"{checkout}: no {sub}/ package; give a checkout of hl7bus")
        (package / sub).symlink_to((checkout / sub).resolve())
    return into


def run(
    messages: int = 3000,
    rounds: int = 3,
    profile: bool = False,
    contenders: tuple[str, ...] = ("forward", "parse"),
    baseline: Path | None = None,
) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    from hl7bus.ops.local_kafka import temporary_broker
    from hl7bus.schemas import topics
    from hl7bus.streams import deid
    from hl7bus.streams.steps import DeidSettings, parse_step

    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; known: {', '.join(CONTENDERS)}")
    started = datetime.now(UTC)
    load_before = loadavg()
    records = corpus(messages, f"B{uuid.uuid4().hex[:6]}")
    settings = DeidSettings(
        deid.Policy.load(None), deid.Pseudonymizer(secrets.token_bytes(32), "bench"), True
    )
    key, value = records[0]
    zone = ZoneInfo("Asia/Seoul")
    identified = len(parse_step(key, value, zone))
    fused = parse_step(key, value, zone, settings)
    if any(o.topic_id == topics.DLQ for o in fused):
        raise RuntimeError("the benchmark message does not de-identify cleanly")
    per_message = {
        "forward": 1,
        "parse": identified,
        "fused": len(fused),
        "research_only": len(fused) - identified,
    }
    # (name, contender, hl7bus of the baseline or None) in the order each round runs them.
    runs: list[tuple[str, str, Path | None]] = [(c, c, None) for c in contenders]
    if baseline is not None:
        # research_only needs worker.identified_output, which older trees do not have.
        runs += [(f"{c}@baseline", c, baseline) for c in contenders if c != "research_only"]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in runs}
    profiles = {}
    with tempfile.TemporaryDirectory(prefix="hl7bus-bench-stream-") as tmp:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        shim = _package_of(baseline, Path(tmp) / "baseline") if baseline else None
        with temporary_broker(Path(tmp) / "kafka", name="bench-stream") as broker:
            for _ in range(rounds):
                for name, contender, tree in runs:
                    results[name].append(
                        _one(
                            contender,
                            broker.bootstrap,
                            records,
                            per_message[contender],
                            logs,
                            hl7bus_from=shim if tree else None,
                        )
                    )
            for contender in contenders if profile else ():
                if contender == "forward":
                    continue
                stats_file = str(Path(tmp) / f"{contender}.prof")
                _one(
                    contender,
                    broker.bootstrap,
                    records,
                    per_message[contender],
                    logs,
                    stats_file,
                )
                out = io.StringIO()
                stats = pstats.Stats(stats_file, stream=out)
                stats.sort_stats("cumulative").print_stats(35)
                stats.sort_stats("tottime").print_stats(25)
                profiles[contender] = out.getvalue()
            version = broker.version

    def best(contender: str, key: str) -> float:
        return float(max(r[key] for r in results[contender]))

    def cpu(name: str) -> float | None:
        # The lowest CPU time per message of the rounds: the least disturbed one.
        found = [r["cpu_us_per_message"] for r in results[name] if r["cpu_us_per_message"]]
        return min(found) if found else None

    def speedup(name: str, peer: str) -> float | None:
        ours, theirs = cpu(name), cpu(peer)
        return round(theirs / ours, 3) if ours and theirs else None

    report: dict[str, Any] = {
        "benchmark": "stream",
        "date": started.isoformat(timespec="seconds"),
        "workload": {
            "messages": messages,
            "message": f"ORU^R01 with {OBX_PER_MESSAGE} OBX and a free-text NTE",
            "events_per_message": identified,
            "outputs_per_message": {c: per_message[c] for c in contenders},
            "rounds": rounds,
            "kafka": version,
        },
        **results,
        "best": {
            **{f"{c}_messages_per_s": best(c, "messages_per_s") for c in contenders},
            **{f"{c}_events_per_s": best(c, "events_per_s") for c in contenders},
        },
        "cpu_us_per_message": {name: cpu(name) for name in results},
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    if "parse" in contenders and "forward" in contenders:
        ratios = [
            p["events_per_s"] / f["events_per_s"]
            for p, f in zip(results["parse"], results["forward"], strict=True)
        ]
        ratio = best("parse", "events_per_s") / best("forward", "events_per_s")
        report.update(
            ratio=round(ratio, 3),
            ratio_range=[round(min(ratios), 3), round(max(ratios), 3)],
            messages_ratio=round(
                best("parse", "messages_per_s") / best("forward", "messages_per_s"), 3
            ),
            target_ratio=TARGET_RATIO,
            meets_target=ratio >= TARGET_RATIO,
        )
    if baseline is not None:
        report["baseline"] = str(baseline)
        # CPU per message of the baseline's worker over ours (research_only: over the
        # baseline's fused worker, the deployment it replaces).
        report["speedup_per_core_vs_baseline"] = {
            c: speedup(c, f"{'fused' if c == 'research_only' else c}@baseline") for c in contenders
        }
    if profiles:
        report["profile"] = "\n".join(f"== {c} ==\n{text}" for c, text in profiles.items())
    return report


if __name__ == "__main__":
    contender, prefix, bootstrap, batches_to = sys.argv[1:5]
    worker_main(
        contender, prefix, bootstrap, batches_to, sys.argv[5] if len(sys.argv) > 5 else None
    )
