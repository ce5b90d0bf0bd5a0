"""The file source against the real broker: byte-exact envelopes, DLQ, error folder, resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message as KafkaRecord
from kafka_helpers import apply_catalog, read_topic, record_headers
from polling import wait_until, wait_until_async

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import Route
from hl7bus.connectors.files import FilesConfig, FileSource
from hl7bus.connectors.kafka_clients import AsyncProducer, Headers, KafkaConfig, Sender
from hl7bus.hl7v2 import parse
from hl7bus.ops.demo_run import sample_feed_path
from hl7bus.schemas import codec, topics
from hl7bus.schemas.keys import patient_key

pytestmark = pytest.mark.kafka

FEED = "filetest"


def sample_messages() -> list[bytes]:
    """The sample feed's messages exactly as the file holds them (CR segments, CRLF after each
    message), cut without the code under test."""
    data = sample_feed_path().read_bytes()
    return [m + b"\r\n" for m in data.split(b"\r\n") if m]


def batch(messages: list[bytes], count: int | None = None) -> bytes:
    n = len(messages) if count is None else count
    head = b"FHS|^~\\&|SNUH-EMR|SNUH\rBHS|^~\\&|SNUH-EMR|SNUH\r"
    return head + b"".join(messages) + f"BTS|{n}\rFTS|1\r".encode()


def control_id(raw: bytes) -> str:
    cid = parse(raw).control_id
    assert cid is not None
    return cid


class Setup:
    def __init__(self, bootstrap: str, prefix: str, tmp_path: Path) -> None:
        self.bootstrap = bootstrap
        self.catalog = apply_catalog(bootstrap, prefix)
        self.route = Route(self.catalog.name(topics.RAW), self.catalog.name(topics.DLQ))
        self.drop = tmp_path / "drop"
        self.drop.mkdir()
        self.cfg = FilesConfig(feed=FEED, drop_dir=self.drop, settle_s=0, checkpoint_every=5)

    def producer(self) -> AsyncProducer:
        return AsyncProducer(kafka_clients.producer_config(KafkaConfig(), self.bootstrap))

    def drop_file(self, name: str, data: bytes) -> Path:
        path = self.drop / name
        path.write_bytes(data)
        return path

    def raw(self, expected: int) -> list[KafkaRecord]:
        return read_topic(self.bootstrap, self.route.raw_topic, expected)

    def dlq(self, expected: int) -> list[KafkaRecord]:
        return read_topic(self.bootstrap, self.route.dlq_topic, expected)

    def ingest(self, path: Path, producer: Sender | None = None, **cfg: Any) -> Any:
        async def main() -> Any:
            real = self.producer()
            try:
                config = self.cfg.model_copy(update=cfg)
                return await FileSource(config, producer or real, self.route).ingest_file(path)
            finally:
                real.close()

        return asyncio.run(main())


@pytest.fixture
def setup(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Setup:
    return Setup(kafka_bootstrap, unique_name, tmp_path)


def test_batch_file_lands_byte_exact_in_hl7_raw(setup: Setup) -> None:
    messages = sample_messages()[:40]
    path = setup.drop_file("batch.hl7", batch(messages))

    result = setup.ingest(path)

    assert (result.outcome, result.messages, result.delivered, result.dlq) == ("done", 40, 40, 0)
    assert result.moved_to == setup.drop / "done" / "batch.hl7"
    assert not path.exists() and result.moved_to.read_bytes() == batch(messages)
    assert not list((setup.drop / ".state").glob("*.json")), "state left after done"
    records = setup.raw(40)
    assert len(records) == 40
    envelopes = [codec.decode(r.value() or b"") for r in records]
    assert Counter(e["raw"] for _, e in envelopes) == Counter(messages)
    for record, (event_type, env) in zip(records, envelopes, strict=True):
        assert event_type == "RawMessage"
        assert env["feed"] == FEED
        assert env["peer"] == str(path)
        assert env["charset"] == "utf-8"
        message = parse(env["raw"])
        assert env["control_id"] == message.control_id
        assert env["message_type"] == message.message_type
        assert env["patient_key"] == patient_key(FEED, message)
        assert record.key() == env["patient_key"].encode()
        assert record_headers(record)[codec.EVENT_TYPE_HEADER] == b"RawMessage"


def test_undecodable_message_goes_to_dlq_the_rest_to_raw(setup: Setup) -> None:
    messages = sample_messages()[:10]
    assert b"\xec" in messages[3]  # a Hangul lead byte: UTF-8 as MSH-18 says
    bad = messages[3].replace(b"\xec", b"\xff", 1)
    messages[3] = bad
    path = setup.drop_file("mixed.hl7", b"".join(messages))

    result = setup.ingest(path)

    assert (result.outcome, result.delivered, result.dlq) == ("done", 9, 1)
    raw = setup.raw(9)
    assert Counter(codec.decode(r.value() or b"")[1]["raw"] for r in raw) == Counter(
        m for i, m in enumerate(messages) if i != 3
    )
    dlq = setup.dlq(1)
    assert len(dlq) == 1
    _, env = codec.decode(dlq[0].value() or b"")
    assert env["raw"] == bad
    assert env["peer"] == str(path) and env["charset"] is None
    h = record_headers(dlq[0])
    assert (h["hl7bus.stage"], h["hl7bus.reason"]) == (b"receiving", b"charset")
    assert dlq[0].key() == FEED.encode()


def test_bad_batch_count_goes_to_the_error_folder(setup: Setup) -> None:
    messages = sample_messages()[:4]
    data = batch(messages, count=5)
    path = setup.drop_file("short.hl7", data)

    result = setup.ingest(path)

    assert result.outcome == "error"
    assert "BTS-1 says 5 messages, batch has 4" in (result.reason or "")
    error_dir = setup.drop / "error"
    assert result.moved_to == error_dir / "short.hl7"
    assert result.moved_to.read_bytes() == data
    note = json.loads((error_dir / "short.hl7.reason.json").read_text())
    assert note["reason"] == "file_batch" and "BTS-1" in note["detail"]
    dlq = setup.dlq(1)
    assert len(dlq) == 1
    assert codec.decode(dlq[0].value() or b"")[1]["raw"] == data
    assert record_headers(dlq[0])["hl7bus.reason"] == b"file_batch"
    assert setup.raw(0) == [], "nothing of a rejected file may reach hl7.raw"


class CrashingProducer:
    """Passes the first `after` records to Kafka; then the process 'dies': later sends never
    complete, and the state file is reset to what was on disk at that moment (a kill -9 writes
    no final checkpoint)."""

    def __init__(self, inner: AsyncProducer, after: int, state_dir: Path) -> None:
        self.inner = inner
        self.after = after
        self.state_dir = state_dir
        self.sent = 0
        self.delivered = 0
        self.snapshot: dict[Path, bytes] = {}
        self.crashed = asyncio.Event()

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        if self.sent >= self.after:
            if not self.crashed.is_set():
                self.snapshot = {p: p.read_bytes() for p in self.state_dir.glob("*.json")}
                self.crashed.set()
            await asyncio.Event().wait()
        self.sent += 1
        confirmed = await self.inner.send(topic, value, key, headers)
        self.delivered += 1
        return confirmed


def test_crash_after_k_messages_resumes_with_nothing_lost(setup: Setup) -> None:
    messages = sample_messages()[:120]
    path = setup.drop_file("big.hl7", batch(messages))
    state_dir = setup.drop / ".state"
    after = 47

    async def crash_run() -> None:
        inner = setup.producer()
        crashing = CrashingProducer(inner, after, state_dir)
        cfg = setup.cfg.model_copy(update={"max_in_flight": 8})
        task = asyncio.create_task(FileSource(cfg, crashing, setup.route).ingest_file(path))
        await asyncio.wait_for(crashing.crashed.wait(), 30)
        await wait_until_async(
            lambda: crashing.delivered == after, f"the delivery reports of the first {after}"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        inner.close()
        for state, content in crashing.snapshot.items():
            state.write_bytes(content)  # what a kill -9 at the crash point leaves on disk

    asyncio.run(crash_run())
    assert path.exists(), "a file with undelivered messages must not be moved"
    (state_file,) = state_dir.glob("*.json")
    checkpoint = json.loads(state_file.read_text())["confirmed"]
    # At most max_in_flight (8) unconfirmed plus checkpoint_every (5) behind the crash point.
    assert after - 8 - 5 < checkpoint <= after

    result = setup.ingest(path)

    assert result.outcome == "done"
    assert result.resumed_from == checkpoint
    assert result.delivered == 120 - checkpoint
    assert (setup.drop / "done" / "big.hl7").exists() and not path.exists()
    expected = after + 120 - checkpoint
    records = setup.raw(expected)
    stored = Counter(codec.decode(r.value() or b"")[1]["raw"] for r in records)
    assert set(stored) == set(messages), "a message is missing from hl7.raw"
    assert len(records) == expected  # duplicates: only the window since the checkpoint
    assert sum(stored.values()) - len(messages) == after - checkpoint


def test_killed_ingest_process_resumes(setup: Setup, tmp_path: Path) -> None:
    """kill -9 of `hl7bus ingest` mid-file, then again: every message in hl7.raw, file done."""
    data = sample_feed_path().read_bytes()
    messages = sample_messages()
    path = tmp_path / "feed.hl7"
    path.write_bytes(data)
    state_dir, done_dir = tmp_path / "state", tmp_path / "done"
    env = {
        **os.environ,
        "HL7BUS_KAFKA_BOOTSTRAP": setup.bootstrap,
        "HL7BUS_KAFKA_LINGER_MS": "20",  # slow enough to be killed mid-file
        "HL7BUS_TOPICS_PREFIX": setup.route.raw_topic.removesuffix("hl7.raw"),
        "HL7BUS_FILES_FEED": FEED,
        "HL7BUS_FILES_STATE_DIR": str(state_dir),
        "HL7BUS_FILES_DONE_DIR": str(done_dir),
        "HL7BUS_FILES_MAX_IN_FLIGHT": "4",
        "HL7BUS_FILES_CHECKPOINT_EVERY": "10",
    }
    command = [sys.executable, "-m", "hl7bus.ops.cli", "ingest", str(path)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    confirmed = 0

    def confirmed_50_or_exited() -> bool:
        nonlocal confirmed
        for state in state_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):  # written meanwhile
                confirmed = json.loads(state.read_text())["confirmed"]
        return confirmed >= 50 or proc.poll() is not None

    try:
        # Polled often: the kill must land mid-file.
        wait_until(confirmed_50_or_exited, "50 confirmed messages", timeout=60, interval=0.005)
        assert proc.poll() is None, "ingest finished before it could be killed"
        assert confirmed >= 50
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.exists() and not done_dir.exists()

    second = subprocess.run(command, env=env, capture_output=True, timeout=120)
    out = second.stdout.decode()
    assert second.returncode == 0, out + second.stderr.decode()
    assert "resum" in out
    assert (done_dir / "feed.hl7").read_bytes() == data
    assert not list(state_dir.glob("*.json"))
    records = setup.raw(len(messages))
    stored = Counter(codec.decode(r.value() or b"")[1]["raw"] for r in records)
    assert set(stored) == set(messages), "a message is missing from hl7.raw"


def test_watch_mode_ingests_dropped_files(setup: Setup) -> None:
    messages = sample_messages()[:6]

    class ScanCountingSource(FileSource):
        scans = 0

        def pending(self) -> list[Path]:
            self.scans += 1
            return super().pending()

    async def main() -> Any:
        producer = setup.producer()
        source = ScanCountingSource(
            setup.cfg.model_copy(update={"poll_interval_s": 0.1}), producer, setup.route
        )
        stop = asyncio.Event()
        watcher = asyncio.create_task(source.watch(stop))
        # Dropped while it watches, not found on its first look.
        await wait_until_async(lambda: source.scans > 0, "the watcher's first scan")
        setup.drop_file("a.hl7", b"".join(messages[:3]))
        setup.drop_file("b.hl7", batch(messages[3:]))
        setup.drop_file("ignored.txt", b"not picked up")
        done = setup.drop / "done"
        await wait_until_async(
            lambda: len(list(done.glob("*.hl7"))) >= 2, "both files in the done folder"
        )
        stop.set()
        summary = await watcher
        producer.close()
        return summary

    summary = asyncio.run(main())
    assert summary.count("done") == 2 and summary.delivered == 6
    assert (setup.drop / "ignored.txt").exists()
    assert len(setup.raw(6)) == 6
