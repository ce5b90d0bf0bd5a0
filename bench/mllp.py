"""``hl7bus bench mllp``: the MLLP listener's throughput and ACK latency, with and without Kafka.

Workload: ~2 KB ORU^R01 messages (the sample feed's ORU^R01, padded with its own OBX segments),
distinct MSH-10 each, sent by the project's MLLP client with ``window`` unacknowledged messages
per connection (default 1: the classic send-and-wait interface engine).

Contenders, measured in the same run, on the same listener code, alternating per step:

* ``kafka`` -- the listener as deployed: each message is produced to hl7.raw on a real local
  broker (started here, in a temp dir) with acks=all and idempotence, and ACKed after the
  delivery report;
* ``no_kafka`` -- the same listener given a null producer (:class:`NullProducer`, defined here):
  it decodes, parses, builds and encodes the envelope and answers AA without producing. The
  ratio between the two is the cost of durability.

Steps: 1, 8 and 32 connections as fast as the ACKs allow (throughput, ACK latency p50/p99 as
the sender sees it), then the widest step again with a pipelining sender (``pipelined_window``
unacknowledged messages per connection, default 8, as interface engines do; a send-and-wait
sender is bound by its round trip, not by the listener), then a fixed offered rate (default 1,000
messages/s) for the p99 ACK latency under a steady load. The sender runs in a separate process so
it does not share the listener's event loop. Each step also reports the listener process's CPU
time per message (all its threads, librdkafka's included; the broker and the sender are other
processes), which moves much less than wall-clock figures when the machine is shared; the
sender's and the broker's CPU per message too, since all three share the machine's cores. The
broker, started fresh, is first warmed up with ``BROKER_WARMUP_RECORDS`` records produced
directly (its JIT compilers would otherwise dominate its CPU in the first steps). Machines
are shared and noisy: read the ratios, not the absolute figures.

``framer``, without the broker: one 12 MiB frame through the framer in 64 KiB reads against
the same frame fed in one call; a ratio near 1 says the framer stays linear in the frame size.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import cProfile
import io
import multiprocessing
import os
import platform
import pstats
import shutil
import site
import tempfile
import time
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hl7bus.connectors.kafka_clients import Headers, OnDelivery, Submitter

TARGET_MESSAGE_BYTES = 2048
TARGET_THROUGHPUT_32 = 5000.0
TARGET_P99_AT_RATE_MS = 25.0
# Records produced straight to the fresh broker before any step: its JIT compilers otherwise
# spend most of the broker's CPU during the first steps (a deployed broker is warm).
BROKER_WARMUP_RECORDS = 100_000
# The framer step: one large frame read from the socket in the listener's read size.
FRAMER_FRAME_BYTES = 12 * 1024 * 1024
FRAMER_READ_BYTES = 65536


# -- the workload --------------------------------------------------------------------------------


@cache
def _templates() -> tuple[str, ...]:
    """ORU^R01 texts of ~2 KB: the sample feed's, OBX/NTE segments cycled to reach the size."""
    from hl7bus.hl7v2 import parse_batch
    from hl7bus.ops.demo_run import sample_feed_path

    out = []
    for message in parse_batch(sample_feed_path().read_bytes()):
        if message.message_type != "ORU^R01":
            continue
        segments = message.to_er7().split("\r")[:-1]
        results = [s for s in segments if s[:3] in ("OBX", "NTE")]
        if not results:
            continue
        body = list(segments)
        i = 0
        while len(("\r".join(body) + "\r").encode("utf-8")) < TARGET_MESSAGE_BYTES:
            body.append(results[i % len(results)])
            i += 1
        out.append("\r".join(body) + "\r")
    if not out:
        raise RuntimeError("the sample feed has no ORU^R01 with results")
    return tuple(out)


def corpus(count: int, tag: str, variants: int | None = None) -> list[bytes]:
    """``count`` messages with MSH-10 = TAG + a sequence number, cycling over the first
    ``variants`` templates (all of them when None)."""
    from hl7bus.hl7v2 import parse

    templates = _templates()[:variants]
    out = []
    for i in range(count):
        message = parse(templates[i % len(templates)])
        message.set("MSH-10", f"{tag}{i:07d}")
        out.append(message.to_bytes())
    return out


# -- the sender (runs in a child process) --------------------------------------------------------


def _send_job(
    port: int, count: int, connections: int, window: int, rate: float | None, tag: str
) -> dict[str, Any]:
    from hl7bus.connectors.mllp.client import send_many, summarize

    messages = corpus(count, tag)
    cpu = time.process_time()
    started = time.perf_counter()
    results = asyncio.run(
        send_many(
            "127.0.0.1",
            port,
            messages,
            connections=connections,
            window=window,
            rate=rate,
            ack_timeout=60,
        )
    )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    summary = summarize(results)
    return {
        "messages": summary.total,
        "accepted": summary.accepted,
        "by_code": summary.by_code,
        "errors": summary.errors,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(summary.total / elapsed, 1),
        "ack_p50_ms": _ms(summary.latency_p50_s),
        "ack_p99_ms": _ms(summary.latency_p99_s),
        "ack_max_ms": _ms(summary.latency_max_s),
        "mean_bytes": round(sum(map(len, messages)) / len(messages)),
        # The sender shares the machine's cores with the listener and the broker.
        "sender_cpu_us_per_message": round(cpu / max(count, 1) * 1e6, 1),
    }


def _loadavg() -> str | None:
    """/proc/loadavg (1, 5, 15 minutes), where there is one."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def _process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of another process so far (Linux procfs), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# -- the framer on one large frame ---------------------------------------------------------------


def framer_large_frame(repeats: int = 3) -> dict[str, Any]:
    """One 12 MiB frame fed to the framer in 64 KiB reads, against the same frame fed in one
    call (the peer), best of ``repeats`` each. The framer scans only the bytes of each new read,
    so the ratio stays near 1; rescanning its buffer on every read would be quadratic (minutes
    for this frame)."""
    from hl7bus.connectors.mllp.framer import Frame, Framer, encode_frame

    text = _templates()[0].encode("utf-8")
    payload = (text * (FRAMER_FRAME_BYTES // len(text) + 1))[:FRAMER_FRAME_BYTES]
    data = encode_frame(payload)
    reads = [data[pos : pos + FRAMER_READ_BYTES] for pos in range(0, len(data), FRAMER_READ_BYTES)]

    def best(parts: list[bytes]) -> float:
        times = []
        for _ in range(repeats):
            framer = Framer(2 * FRAMER_FRAME_BYTES)
            started = time.perf_counter()
            events = [event for part in parts for event in framer.feed(part)]
            times.append(time.perf_counter() - started)
            if events != [Frame(payload)]:
                raise RuntimeError("the framer did not return the one frame it was fed")
        return min(times)

    chunked, whole = best(reads), best([data])
    return {
        "frame_bytes": len(payload),
        "read_bytes": FRAMER_READ_BYTES,
        "reads": len(reads),
        "chunked_s": round(chunked, 4),
        "whole_s": round(whole, 4),
        "chunked_mb_per_s": round(len(data) / chunked / 1e6, 1),
        "ratio_chunked_to_whole": round(chunked / whole, 2),
    }


# -- the run -------------------------------------------------------------------------------------


class NullProducer:
    """The ``no_kafka`` peer's producer: every write is confirmed at once and goes nowhere.
    ``submit`` calls back before it returns, so the listener does the work it does with Kafka,
    minus the producing."""

    def submit(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: Headers,
        on_delivery: OnDelivery,
    ) -> None:
        on_delivery((0, 0))

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        return 0, 0

    def flush(self, timeout: float = 30.0) -> int:
        return 0


class _Bench:
    def __init__(
        self,
        bootstrap: str,
        pool: concurrent.futures.Executor,
        broker_pid: int | None = None,
        linger_ms: int | None = None,
    ) -> None:
        from hl7bus.connectors import kafka_clients
        from hl7bus.connectors.envelope import Route
        from hl7bus.connectors.kafka_clients import KafkaConfig
        from hl7bus.ops import topics_apply
        from hl7bus.schemas import topics

        self.kafka_cfg = KafkaConfig() if linger_ms is None else KafkaConfig(linger_ms=linger_ms)
        catalog = topics.TopicCatalog.load(
            topics.TopicsConfig(prefix=f"bench-{uuid.uuid4().hex[:8]}.")
        )
        topics_apply.apply(kafka_clients.admin_client(self.kafka_cfg, bootstrap), catalog, 1)
        self.route = Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
        self.producer = kafka_clients.AsyncProducer(
            kafka_clients.producer_config(self.kafka_cfg, bootstrap)
        )
        self.bootstrap = bootstrap
        self.pool = pool
        self.broker_pid = broker_pid
        self.runs = 0

    async def measure(
        self,
        kafka: bool,
        count: int,
        connections: int,
        window: int,
        rate: float | None = None,
        profiler: cProfile.Profile | None = None,
    ) -> dict[str, Any]:
        from hl7bus.connectors.mllp.config import MllpConfig
        from hl7bus.connectors.mllp.listener import MllpListener

        cfg = MllpConfig(port=0, feed="bench", metrics_port=None, max_in_flight=max(window, 1))
        producer: Submitter = self.producer if kafka else NullProducer()
        listener = MllpListener(cfg, producer, self.route)
        await listener.start()
        self.runs += 1
        loop = asyncio.get_running_loop()
        cpu = time.process_time()
        broker_cpu = _process_cpu_s(self.broker_pid)
        try:
            if profiler is not None:
                profiler.enable()
            result: dict[str, Any] = await loop.run_in_executor(
                self.pool,
                _send_job,
                listener.port,
                count,
                connections,
                window,
                rate,
                f"B{self.runs:03d}",
            )
        finally:
            if profiler is not None:
                profiler.disable()
            cpu = time.process_time() - cpu
            broker_after = _process_cpu_s(self.broker_pid)
            await listener.stop(5)
        result["listener_cpu_us_per_message"] = round(cpu / max(count, 1) * 1e6, 1)
        if broker_cpu is not None and broker_after is not None:
            # Clock ticks (10 ms): a coarse figure, and it includes the broker's idle work.
            result["broker_cpu_us_per_message"] = round(
                (broker_after - broker_cpu) / max(count, 1) * 1e6, 1
            )
        return result

    def warm_broker(self, count: int) -> float:
        """Produce ``count`` envelopes to hl7.raw as fast as librdkafka batches them; seconds."""
        from confluent_kafka import Producer

        from bench.support import produce_all
        from hl7bus.connectors import kafka_clients
        from hl7bus.connectors.envelope import build_envelope, raw_headers
        from hl7bus.schemas import codec

        records = []
        for message in corpus(500, "W"):
            built = build_envelope(message, feed="bench", peer="warm-up")
            records.append((built.key, codec.encode("RawMessage", built.record)))
        headers: list[tuple[str, str | bytes | None]] = list(raw_headers())
        producer = Producer(kafka_clients.producer_config(self.kafka_cfg, self.bootstrap))
        started = time.perf_counter()
        produce_all(
            producer,
            self.route.raw_topic,
            (records[i % len(records)] for i in range(count)),
            headers,
        )
        return time.perf_counter() - started

    def close(self) -> None:
        self.producer.close(10)


def _pair(kafka: dict[str, Any], no_kafka: dict[str, Any]) -> dict[str, Any]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "kafka": kafka,
        "no_kafka": no_kafka,
        "throughput_ratio_kafka_to_no_kafka": ratio(
            kafka["messages_per_s"], no_kafka["messages_per_s"]
        ),
        "p50_ratio_kafka_to_no_kafka": ratio(kafka["ack_p50_ms"], no_kafka["ack_p50_ms"]),
        "p99_ratio_kafka_to_no_kafka": ratio(kafka["ack_p99_ms"], no_kafka["ack_p99_ms"]),
    }


async def _run(
    bench: _Bench,
    messages: int,
    connections: Sequence[int],
    window: int,
    rate: float,
    rate_seconds: float,
    profile: bool,
    pipelined_window: int,
) -> dict[str, Any]:
    # Warm-up: broker metadata, producer connection, the sender process's imports.
    await bench.measure(True, 200, 4, window)
    await bench.measure(False, 200, 4, window)
    steps = []
    plan = [(n, window) for n in connections]
    if pipelined_window != window:
        plan.append((max(connections), pipelined_window))
    for n, w in plan:
        kafka = await bench.measure(True, messages, n, w)
        no_kafka = await bench.measure(False, messages, n, w)
        steps.append({"connections": n, "window": w, **_pair(kafka, no_kafka)})
    rate_count = max(1, round(rate * rate_seconds))
    rate_connections, rate_window = 4, 16
    kafka = await bench.measure(True, rate_count, rate_connections, rate_window, rate)
    no_kafka = await bench.measure(False, rate_count, rate_connections, rate_window, rate)
    result: dict[str, Any] = {
        "throughput": steps,
        "offered_rate": {
            "offered_per_s": rate,
            "connections": rate_connections,
            "window": rate_window,
            **_pair(kafka, no_kafka),
        },
    }
    if profile:
        profiler = cProfile.Profile()
        n = max(connections)
        await bench.measure(True, messages, n, window, profiler=profiler)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        result["profile_kafka_tottime_top25"] = out.getvalue()
    return result


def run(
    messages: int = 3000,
    connections: Sequence[int] = (1, 8, 32),
    *,
    window: int = 1,
    rate: float = 1000.0,
    rate_seconds: float = 5.0,
    profile: bool = False,
    pipelined_window: int = 8,
    linger_ms: int | None = None,
) -> dict[str, Any]:
    """Start a broker, run every step for both contenders, return the JSON-ready result."""
    from hl7bus.ops.local_kafka import kafka_version, temporary_broker
    from hl7bus.schemas.gc_settings import settle_gc

    data = Path(tempfile.mkdtemp(prefix="hl7bus-bench-mllp-"))
    started = time.perf_counter()
    load_before = _loadavg()
    try:
        with (
            temporary_broker(data, name="bench-mllp") as broker,
            concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                # The sender process finds _send_job as bench.mllp in the checkout (`hl7bus
                # bench` imports bench/ from its path, which a spawned child does not inherit).
                initializer=site.addsitedir,
                initargs=(str(Path(__file__).resolve().parent.parent),),
            ) as pool,
        ):
            bench = _Bench(broker.bootstrap, pool, broker.pid, linger_ms)
            try:
                warmup_s = bench.warm_broker(BROKER_WARMUP_RECORDS)
                settle_gc()  # as `hl7bus mllp serve` does once it listens
                body = asyncio.run(
                    _run(
                        bench,
                        messages,
                        connections,
                        window,
                        rate,
                        rate_seconds,
                        profile,
                        pipelined_window,
                    )
                )
            finally:
                bench.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    steps = body["throughput"]
    widest = max((s for s in steps if s["window"] == window), key=lambda s: s["connections"])
    piped = [s for s in steps if s["window"] == pipelined_window and s is not widest]
    at_rate = body["offered_rate"]["kafka"]
    return {
        "benchmark": "mllp",
        "command": (
            f"hl7bus bench mllp --messages {messages} "
            f"--connections {','.join(map(str, connections))} --window {window} --rate {rate:g}"
            + ("" if linger_ms is None else f" --linger-ms {linger_ms}")
        ),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "workload": {
            "message_type": "ORU^R01",
            "mean_message_bytes": steps[0]["kafka"]["mean_bytes"],
            "messages_per_step": messages,
            "pipelined_window": pipelined_window,
            "sender": "hl7bus MLLP client in a separate process",
        },
        "peer": "no_kafka: the same listener answering AA without producing (a null producer)",
        "kafka": {
            "version": kafka_version(),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": bench.kafka_cfg.linger_ms,
            "brokers": 1,
            "warmup_records": BROKER_WARMUP_RECORDS,
            "warmup_s": round(warmup_s, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
        },
        **body,
        "framer": framer_large_frame(),
        "targets": {
            "throughput_at_32_connections_min_per_s": TARGET_THROUGHPUT_32,
            "throughput_at_widest_step_per_s": widest["kafka"]["messages_per_s"],
            "throughput_met": widest["connections"] >= 32
            and widest["kafka"]["messages_per_s"] >= TARGET_THROUGHPUT_32,
            **(
                {
                    f"throughput_at_widest_step_window_{pipelined_window}_per_s": piped[0]["kafka"][
                        "messages_per_s"
                    ],
                    f"throughput_met_window_{pipelined_window}": piped[0]["connections"] >= 32
                    and piped[0]["kafka"]["messages_per_s"] >= TARGET_THROUGHPUT_32,
                }
                if piped
                else {}
            ),
            "p99_at_offered_rate_max_ms": TARGET_P99_AT_RATE_MS,
            "p99_at_offered_rate_ms": at_rate["ack_p99_ms"],
            "p99_met": (at_rate["ack_p99_ms"] or 1e9) <= TARGET_P99_AT_RATE_MS,
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
