"""The file source's resume protocol with an in-memory producer (no broker needed)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from hl7bus.connectors.envelope import Route
from hl7bus.connectors.files import FileResult, FilesConfig, FileSource
from hl7bus.connectors.files.source import _locked, _state_name
from hl7bus.connectors.kafka_clients import DeliveryError, Headers
from hl7bus.ops.demo_run import sample_feed_path
from hl7bus.schemas import codec

ROUTE = Route("raw", "dlq")


class MemoryProducer:
    """Confirms every record, or fails every record after `fail_after` of them."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.records: list[tuple[str, bytes]] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> tuple[int, int]:
        await asyncio.sleep(0)
        if self.fail_after is not None and len(self.records) >= self.fail_after:
            raise DeliveryError("_MSG_TIMED_OUT", True)
        self.records.append((topic, codec.decode(value)[1]["raw"]))
        return 0, len(self.records)


def messages(n: int) -> list[bytes]:
    data = sample_feed_path().read_bytes()
    return [m + b"\r\n" for m in data.split(b"\r\n") if m][:n]


def ingest(cfg: FilesConfig, producer: MemoryProducer, path: Path) -> FileResult:
    return asyncio.run(FileSource(cfg, producer, ROUTE).ingest_file(path))


def config(tmp_path: Path, **extra: object) -> FilesConfig:
    return FilesConfig.model_validate(
        {"drop_dir": tmp_path, "checkpoint_every": 7, "max_in_flight": 4, **extra}
    )


def test_kafka_failure_keeps_the_file_and_resumes_exactly(tmp_path: Path) -> None:
    msgs = messages(50)
    path = tmp_path / "f.hl7"
    path.write_bytes(b"".join(msgs))
    cfg = config(tmp_path)

    first = MemoryProducer(fail_after=23)
    failed = ingest(cfg, first, path)
    assert failed.outcome == "failed" and "_MSG_TIMED_OUT" in (failed.reason or "")
    assert path.exists() and failed.delivered == 23
    (state,) = (tmp_path / ".state").glob("*.json")
    assert json.loads(state.read_text())["confirmed"] == 23  # the final checkpoint on failure

    second = MemoryProducer()
    done = ingest(cfg, second, path)
    assert (done.outcome, done.resumed_from, done.delivered) == ("done", 23, 27)
    assert [raw for _, raw in first.records + second.records] == msgs  # nothing lost, no dup
    assert not path.exists() and (tmp_path / "done" / "f.hl7").exists()
    assert not list((tmp_path / ".state").iterdir()), "state and lock files left behind"


def test_a_redropped_file_starts_over(tmp_path: Path) -> None:
    msgs = messages(10)
    path = tmp_path / "f.hl7"
    path.write_bytes(b"".join(msgs))
    cfg = config(tmp_path)
    ingest(cfg, MemoryProducer(fail_after=5), path)
    # Same name and bytes, but a new file (another copy dropped later): not the one that failed.
    path.unlink()
    path.write_bytes(b"".join(msgs))
    os.utime(path, ns=(1, 1))
    again = MemoryProducer()
    result = ingest(cfg, again, path)
    assert result.resumed_from == 0 and len(again.records) == 10


def test_a_fully_confirmed_file_is_only_moved(tmp_path: Path) -> None:
    """Crash after the last checkpoint, before the move: the next run sends nothing."""
    path = tmp_path / "f.hl7"
    path.write_bytes(b"".join(messages(3)))
    cfg = config(tmp_path, done_dir=tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_text("a file where the folder should be")
    first = ingest(cfg, MemoryProducer(), path)
    assert first.outcome == "failed" and "cannot move" in (first.reason or "")
    (tmp_path / "elsewhere").unlink()
    producer = MemoryProducer()
    result = ingest(cfg, producer, path)
    assert (result.outcome, result.resumed_from, producer.records) == ("done", 3, [])
    assert (tmp_path / "elsewhere" / "f.hl7").exists()


def test_a_file_another_process_holds_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "f.hl7"
    path.write_bytes(b"".join(messages(2)))
    cfg = config(tmp_path)
    (tmp_path / ".state").mkdir()
    lock = tmp_path / ".state" / f"{_state_name(path.absolute())}.lock"
    # flock locks are per open file description: a second open in this process conflicts too.
    with _locked(lock) as mine:
        assert mine
        producer = MemoryProducer()
        assert ingest(cfg, producer, path).outcome == "busy"
        assert producer.records == []


def test_unparseable_message_goes_to_the_dlq_topic(tmp_path: Path) -> None:
    msgs = messages(3)
    broken = b"MSH|||\rPID|1\r"  # MSH-2 holds no encoding characters
    path = tmp_path / "f.hl7"
    path.write_bytes(msgs[0] + broken + msgs[1])
    producer = MemoryProducer()
    result = ingest(config(tmp_path), producer, path)
    assert (result.outcome, result.delivered, result.dlq) == ("done", 2, 1)
    assert ("dlq", broken) in producer.records
