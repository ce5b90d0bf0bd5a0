"""The stream worker as a test runs it: its environment, the raw records it is fed and what
the parse step must make of them, the group's committed offsets, its health endpoints.

Shared by the fault tests (tests/test_worker_faults.py) and the scale-out test
(tests/test_worker_scale_out.py).
"""

from __future__ import annotations

import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import Consumer, Producer, TopicPartition
from polling import wait_until
from samples import envelope, feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.hl7v2 import Message
from hl7bus.ops.processes import ProcessError, Processes
from hl7bus.schemas import codec, topics
from hl7bus.schemas.keys import patient_key
from hl7bus.streams.runtime import EXIT_STUCK
from hl7bus.streams.steps import parse_step

SEOUL = ZoneInfo("Asia/Seoul")
KAFKA = KafkaConfig()


@dataclass(frozen=True)
class Produced:
    """One RawMessage record on hl7.raw and the ids of the events its parse must yield."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @cached_property
    def event_ids(self) -> tuple[str, ...]:
        # Worked out when first asked, not while producing: a test that races the worker
        # (a kill mid-stream) is not slowed by its own parsing.
        return tuple(
            codec.decode(out.value)[1]["event_id"]
            for out in parse_step(self.key, self.value, SEOUL)
            if out.topic_id == topics.EVENTS
        )


def produce_raw(
    bootstrap: str, topic: str, feeds: dict[str, Iterable[Message]], shift_s: int = 0
) -> list[Produced]:
    """Envelopes as the listener writes them (keyed by patient key), feed by feed, with their
    positions."""
    producer = Producer(kafka_clients.producer_config(KAFKA, bootstrap))
    pending: list[tuple[bytes, bytes | None, list[Any]]] = []
    for feed_name, messages in feeds.items():
        for message in messages:
            raw = envelope(message, feed_name)
            raw["received_at"] += timedelta(seconds=shift_s)
            key = patient_key(feed_name, message)
            raw["patient_key"] = key
            value = codec.encode("RawMessage", raw)
            slot: list[Any] = []
            key_bytes = key.encode() if key else None
            pending.append((value, key_bytes, slot))
            producer.produce(topic, value=value, key=key_bytes, on_delivery=_collect(slot))
            producer.poll(0)
    assert producer.flush(30) == 0
    produced = []
    for value, key_bytes, slot in pending:
        err, msg = slot[0]
        assert err is None, err
        produced.append(Produced(msg.partition(), msg.offset(), key_bytes, value))
    return produced


def _collect(slot: list[Any]) -> Any:
    def on_delivery(err: Any, msg: Any) -> None:
        slot.append((err, msg))

    return on_delivery


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (0 where nothing was committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        found = kafka_clients.until_served(lambda: consumer.committed(tps, timeout=10), 10)
        return {tp.partition: max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


def worker_env(
    bootstrap: str, unique_name: str, data_dir: Path, metrics_port: int
) -> dict[str, str]:
    """The variables of one `hl7bus worker` (a fresh pseudonymization key per call)."""
    return {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": bootstrap,
        "HL7BUS_TOPICS_PREFIX": f"{unique_name}.",
        "HL7BUS_WORKER_APP_ID": f"{unique_name}-worker",
        "HL7BUS_WORKER_DATA_DIR": str(data_dir),
        "HL7BUS_WORKER_METRICS_PORT": str(metrics_port),
        # A killed worker's partitions come back after the session timeout: keep it short.
        "HL7BUS_WORKER_SESSION_TIMEOUT_S": "6",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }


def http_status(port: int, path: str) -> int:
    """The HTTP status of a health endpoint; 0 while nothing answers."""
    return http_get(port, path)[0]


def http_get(port: int, path: str) -> tuple[int, str]:
    """The HTTP status and body of a health endpoint; (0, "") while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError:
        return 0, ""


@dataclass(frozen=True)
class MidStreamKill:
    """What a test needs to know about a worker killed mid-stream."""

    produced: list[Produced]
    raw_committed: dict[int, int]  # the group's committed offsets on hl7.raw at the kill
    events_at_kill: int  # records on hl7.events at the kill


def kill_mid_stream(
    procs: Processes,
    victim: str,
    bootstrap: str,
    raw_topic: str,
    events_topic: str,
    group: str,
    partitions: int,
) -> MidStreamKill:
    """The sample feed as six feeds (distinct patients and event ids: 1830 messages, ~12000
    events) into running workers: the first feed is worked and committed, the second sent, and
    `victim` is killed (SIGKILL: no flush, no commit, no leave-group) as soon as the workers
    start on it, so the kill lands mid-stream on a fast machine as on a slow one; the other
    four feeds follow the kill.

    The feeds come one at a time, not all at once: a worker whose stream buffers are full when
    a rebalance starts can hang in table recovery for good (faust-streaming #74; seen here as
    "No event received for active tp" forever). The worker guards against its cause and its
    watchdog restarts a worker that stays stuck (docs/operations.md, HL7BusPartitionStuck;
    tests/test_worker_scale_out.py checks the restart), but this helper's point is the kill."""

    def events_out() -> int:
        return kafka_clients.topic_sizes(KAFKA, bootstrap, [events_topic])[events_topic] or 0

    def committed() -> dict[int, int]:
        return committed_offsets(bootstrap, group, raw_topic, partitions)

    produced = produce_raw(bootstrap, raw_topic, {"a": feed()})
    first_part = sum(len(p.event_ids) for p in produced)
    procs.wait_for(
        "the first feed out and committed",
        lambda: events_out() >= first_part and sum(committed().values()) > 0,
        90,
    )
    produced += produce_raw(bootstrap, raw_topic, {"b": feed()})
    wait_until(lambda: events_out() > first_part, "the workers to start on the second feed", 60)
    procs.running.pop(victim).kill()
    at_kill = committed(), events_out()
    produced += produce_raw(bootstrap, raw_topic, {name: feed() for name in "cdef"})
    kill = MidStreamKill(produced, *at_kill)
    return kill


@dataclass
class Supervised(Processes):
    """Processes whose workers are restarted when their watchdog ends them (exit code
    EXIT_STUCK, its log line said why), as a deployment's supervisor does (systemd
    Restart=on-failure), at most `max_restarts` times in all; any other exit fails as in
    Processes. Every wait (`wait_for`) supervises. A restart logs to <name>-restart<n>.log."""

    max_restarts: int = 2
    restarts: list[str] = field(default_factory=list)  # the logs of the ended runs
    _commands: dict[str, tuple[list[str], dict[str, str], str]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        super().start(name, args, env)
        self._commands[name] = (args, env, name)

    def check(self) -> None:
        for name, proc in list(self.running.items()):
            if proc.poll() is None or proc.returncode != EXIT_STUCK or name not in self._commands:
                continue
            args, env, log_name = self._commands[name]
            said = (self.logs / f"{log_name}.log").read_text(errors="replace")
            if "worker: stuck, exiting for a restart:" not in said:
                raise ProcessError(f"{log_name} exited with {EXIT_STUCK} but did not say why")
            if len(self.restarts) >= self.max_restarts:
                raise ProcessError(f"{log_name} stuck once more than allowed; logs: {self.logs}")
            self.restarts.append(log_name)
            restarted = f"{name}-restart{len(self.restarts)}"
            del self.running[name]
            super().start(restarted, args, env)
            self.running[name] = self.running.pop(restarted)
            self._commands[name] = (args, env, restarted)
        super().check()
