"""The file source: message and batch files to hl7.raw, resumable, done only when delivered.

A file is read whole, split into messages on its raw bytes (``split.py``) and each message
becomes the same RawMessage envelope the MLLP listener writes (``connectors/envelope.py``),
with the file's path as peer. Undecodable or unparseable messages go to hl7.dlq with reason
headers; the rest go to hl7.raw keyed by patient key. A file that cannot be read as HL7 at all
(not HL7, bad batch counts) gets one DLQ record, is moved to the error folder and a
``<name>.reason.json`` is written beside it.

Resume protocol (Kafka Connect's source offsets): a small JSON state file per input file says
how many messages, counted from the start of the file, are confirmed by the producer's delivery
report; it is rewritten (atomically, fsynced) every ``checkpoint_every`` confirmations and when
the file stops. Only the contiguous confirmed prefix counts, so out-of-order delivery reports
across partitions never skip a message. After a crash the next run starts at the first
unconfirmed message: the messages that were in flight since the last checkpoint are sent again
(at-least-once; sinks upsert by event id). A file is moved to the done folder only after its
last message is confirmed, and its state file is removed after the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from hl7bus.connectors.envelope import (
    FEED_NAME_PATTERN,
    Built,
    Route,
    build_envelope,
    dlq_headers,
    raw_headers,
)
from hl7bus.connectors.files.split import FileFormatError, split_file
from hl7bus.connectors.kafka_clients import DeliveryError, Sender
from hl7bus.connectors.paths import default_home
from hl7bus.schemas import codec, telemetry

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Whole-file DLQ records keep at most this many bytes of the file (the broker's default record
# limit is ~1 MB); the file itself is kept in the error folder.
DLQ_FILE_BYTES = 900 * 1024


class FilesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feed: str = Field(
        "files",
        pattern=FEED_NAME_PATTERN,
        description="Feed name stamped on every envelope; part of the patient key.",
    )
    drop_dir: Path | None = Field(
        None,
        description=(
            "Drop folder that `hl7bus ingest --watch` polls for new files; required there."
        ),
    )
    done_dir: Path | None = Field(
        None,
        description=(
            "Where a file is moved once every message in it is delivered; default "
            "<drop_dir>/done. Unset and no drop_dir: `ingest FILE` leaves files in place."
        ),
    )
    error_dir: Path | None = Field(
        None,
        description=(
            "Where files that cannot be read as HL7 (not HL7, bad batch counts) are moved, with "
            "a <name>.reason.json beside them; default <drop_dir>/error."
        ),
    )
    pattern: str = Field(
        "*.hl7",
        description="Glob of the file names picked up in the drop folder and in `ingest DIR`.",
    )
    charset: str | None = Field(
        None,
        description="Decode every message with this charset, ignoring MSH-18 (feeds that lie).",
    )
    fallback_charset: str | None = Field(
        None, description="Charset to try when MSH-18's charset cannot decode a message."
    )
    poll_interval_s: float = Field(
        2.0, gt=0, description="How often the drop folder is looked at in watch mode."
    )
    settle_s: float = Field(
        1.0,
        ge=0,
        description="Pick up a dropped file only once unchanged this long (still copying).",
    )
    state_dir: Path | None = Field(
        None,
        description=(
            "Where per-file progress (confirmed message counts) is checkpointed; default "
            "<drop_dir>/.state, else ~/.cache/hl7bus/files-state."
        ),
    )
    checkpoint_every: int = Field(
        100, ge=1, description="Rewrite a file's progress after this many confirmed messages."
    )
    max_in_flight: int = Field(
        1000,
        ge=1,
        description="How far ahead of the first unconfirmed message sending may run; a crash "
        "resends at most this plus checkpoint_every messages.",
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz in watch mode."
    )


FILES = Counter("hl7bus_files_files_total", "Files finished, by outcome.", ["feed", "outcome"])
MESSAGES = Counter(
    "hl7bus_files_messages_total", "Messages confirmed by Kafka, by topic.", ["feed", "topic"]
)
DLQ = Counter("hl7bus_files_dlq_total", "Records sent to the DLQ.", ["feed", "reason"])
#: The source's share of the shared vocabulary (schemas/telemetry.py).
STAGE = telemetry.StageMetrics("files", "receiving")


Outcome = Literal["done", "error", "failed", "interrupted", "busy"]


@dataclass
class FileResult:
    """What happened to one file in one run.

    done: every message confirmed (moved to done_dir when there is one); error: not readable as
    HL7 (DLQ record, moved to error_dir); failed: Kafka or the file system failed, the file stays
    and resumes next time; interrupted: stopped on request, resumes next time; busy: another
    process holds it.
    """

    path: Path
    outcome: Outcome
    messages: int = 0
    resumed_from: int = 0
    delivered: int = 0
    dlq: int = 0
    reason: str | None = None
    moved_to: Path | None = None


@dataclass
class Summary:
    """Totals of a run. ``results`` holds each file's result unless the run is a long-lived
    watcher (``keep=False``), which only counts."""

    results: list[FileResult] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    dlq: int = 0

    def add(self, result: FileResult, keep: bool = True) -> None:
        if keep:
            self.results.append(result)
        self.outcomes[result.outcome] = self.outcomes.get(result.outcome, 0) + 1
        self.delivered += result.delivered
        self.dlq += result.dlq

    def count(self, outcome: Outcome) -> int:
        return self.outcomes.get(outcome, 0)

    @property
    def files(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> bool:
        """Every file done and every message in hl7.raw."""
        return self.files == self.count("done") and self.dlq == 0


class Progress(Protocol):
    def file_started(self, path: Path, messages: int, resume_from: int) -> None: ...
    def advanced(self, messages: int) -> None: ...
    def file_finished(self, result: FileResult) -> None: ...


class _NoProgress:
    def file_started(self, path: Path, messages: int, resume_from: int) -> None:
        pass

    def advanced(self, messages: int) -> None:
        pass

    def file_finished(self, result: FileResult) -> None:
        pass


# -- state files --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    """Which file instance a state belongs to: same path, same bytes, not a re-drop."""

    path: str
    size: int
    sha256: str
    inode: int
    mtime_ns: int

    def matches(self, state: dict[str, Any]) -> bool:
        return all(state.get(k) == v for k, v in self.__dict__.items())


def _state_name(path: Path) -> str:
    return hashlib.sha256(str(path).encode("utf-8")).hexdigest()[:32]


class _State:
    def __init__(self, state_dir: Path, identity: _Identity, messages: int) -> None:
        self.path = state_dir / f"{_state_name(Path(identity.path))}.json"
        self.identity = identity
        self.messages = messages
        self.confirmed = 0

    def load(self) -> int:
        """Confirmed messages of an earlier run of this very file, else 0."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        if (
            not isinstance(data, dict)
            or data.get("version") != STATE_VERSION
            or data.get("messages") != self.messages
            or not self.identity.matches(data)
        ):
            return 0
        confirmed = data.get("confirmed")
        if not isinstance(confirmed, int) or not 0 <= confirmed <= self.messages:
            return 0
        self.confirmed = confirmed
        return confirmed

    def save(self, confirmed: int) -> None:
        self.confirmed = confirmed
        data = {
            "version": STATE_VERSION,
            **self.identity.__dict__,
            "messages": self.messages,
            "confirmed": confirmed,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock: True when this process may work on the file."""
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    stem, dot, suffix = name.partition(".")
    for n in range(1, 10_000):
        target = folder / f"{stem}.{stamp}-{n}{dot}{suffix}"
        if not target.exists():
            return target
    raise FileExistsError(f"no free name for {name} in {folder}")


def _move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = _unique_target(folder, path.name)
    shutil.move(path, target)  # a rename on the same file system
    return target


# -- the source ---------------------------------------------------------------------------------


class FileSource:
    """Ingests files into Kafka: one-shot (:meth:`ingest`) or drop-folder mode (:meth:`watch`)."""

    def __init__(self, cfg: FilesConfig, producer: Sender, route: Route) -> None:
        self.cfg = cfg
        self.producer = producer
        self.route = route
        drop = cfg.drop_dir
        self.done_dir = cfg.done_dir or (drop / "done" if drop else None)
        self.error_dir = cfg.error_dir or (drop / "error" if drop else None)
        self.state_dir: Path = cfg.state_dir or (
            drop / ".state" if drop else default_home() / "files-state"
        )

    # -- finding files

    @staticmethod
    def expand_paths(paths: Sequence[Path], pattern: str) -> list[Path]:
        """The files named, and the files in the directories named that match the pattern
        (not recursive: a drop folder's done/ and error/ are not read again)."""
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                found = path.glob(pattern)
                files.extend(sorted(p for p in found if p.is_file()))
            elif path.is_file():
                files.append(path)
            else:
                raise FileNotFoundError(f"{path}: no such file or directory")
        return list(dict.fromkeys(files))  # a file named twice is ingested once

    def pending(self) -> list[Path]:
        """Settled files in the drop folder, oldest first."""
        drop = self.cfg.drop_dir
        if drop is None:
            raise ValueError("files.drop_dir is not set (HL7BUS_FILES_DROP_DIR)")
        now = time.time()
        ready = []
        for path in drop.glob(self.cfg.pattern):
            if path.name.startswith("."):
                continue
            try:
                st = path.stat()
            except OSError:
                continue  # moved away meanwhile
            if path.is_file() and now - st.st_mtime >= self.cfg.settle_s:
                ready.append((st.st_mtime, path.name, path))
        return [p for _, _, p in sorted(ready)]

    # -- running

    async def ingest(
        self,
        paths: Sequence[Path],
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
    ) -> Summary:
        summary = Summary()
        for path in paths:
            if stop is not None and stop.is_set():
                break
            summary.add(await self.ingest_file(path, progress, stop))
        return summary

    async def watch(self, stop: asyncio.Event, progress: Progress | None = None) -> Summary:
        """Poll the drop folder and ingest what settles there until ``stop`` is set."""
        summary = Summary()
        assert self.cfg.drop_dir is not None, "files.drop_dir is not set"
        self.cfg.drop_dir.mkdir(parents=True, exist_ok=True)
        while not stop.is_set():
            for path in self.pending():
                if stop.is_set():
                    break
                summary.add(await self.ingest_file(path, progress, stop), keep=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.poll_interval_s)
        return summary

    async def ingest_file(
        self,
        path: Path,
        progress: Progress | None = None,
        stop: asyncio.Event | None = None,
    ) -> FileResult:
        """Deliver every message of one file, resuming after the last confirmed one."""
        progress = progress or _NoProgress()
        path = path.absolute()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Locked before reading: a second process (another watcher, a one-shot run) skips the
        # file, and finds it gone once the first has moved it.
        lock_path = self.state_dir / f"{_state_name(path)}.lock"
        with _locked(lock_path) as mine:
            if not mine:
                return self._finish(FileResult(path, "busy", reason="another process"), progress)
            result = await self._ingest_locked(path, progress, stop)
            if result.outcome in ("done", "error"):
                lock_path.unlink(missing_ok=True)
        return self._finish(result, progress)

    async def _ingest_locked(
        self, path: Path, progress: Progress, stop: asyncio.Event | None
    ) -> FileResult:
        try:
            data = await asyncio.to_thread(path.read_bytes)
            st = path.stat()
        except FileNotFoundError:
            return FileResult(path, "busy", reason="gone (taken by another process)")
        except OSError as exc:
            return FileResult(path, "failed", reason=f"cannot read the file ({exc.strerror})")
        try:
            split = split_file(data, self.cfg.charset)
        except FileFormatError as exc:
            return await self._reject(path, data, exc)
        identity = _Identity(
            path=str(path),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            inode=st.st_ino,
            mtime_ns=st.st_mtime_ns,
        )
        state = _State(self.state_dir, identity, len(split.ranges))
        start = state.load()
        progress.file_started(path, len(split.ranges), start)
        result = await self._deliver(
            path, data, split.ranges, split.charset, state, start, progress, stop
        )
        if result.outcome == "done":
            result = self._complete(result, state)
        return result

    def _finish(self, result: FileResult, progress: Progress) -> FileResult:
        FILES.labels(self.cfg.feed, result.outcome).inc()
        if result.outcome in ("failed", "error"):
            # The reason names the problem, never file contents.
            log.warning("file %s: %s (%s)", result.path.name, result.outcome, result.reason)
        progress.file_finished(result)
        return result

    def _complete(self, result: FileResult, state: _State) -> FileResult:
        if self.done_dir is not None:
            try:
                result.moved_to = _move(result.path, self.done_dir)
            except OSError as exc:
                # Everything is delivered and the state says so: the next run only moves it.
                result.outcome = "failed"
                result.reason = f"delivered, but cannot move it to {self.done_dir} ({exc})"
                return result
        state.remove()
        return result

    async def _deliver(
        self,
        path: Path,
        data: bytes,
        ranges: list[tuple[int, int]],
        file_charset: str | None,
        state: _State,
        start: int,
        progress: Progress,
        stop: asyncio.Event | None,
    ) -> FileResult:
        total = len(ranges)
        result = FileResult(path, "done", messages=total, resumed_from=start)
        if start >= total:
            return result
        peer = str(path)
        charset = self.cfg.charset or file_charset
        confirmed_flags = [False] * (total - start)
        confirmed = start
        saved = start
        failure: list[str] = []
        # A window over positions, not a count of sends: message i is sent only while
        # i - confirmed < max_in_flight. A partition that lags therefore stalls the file instead
        # of letting later messages pile up beyond the watermark, so a crash resends at most
        # max_in_flight + checkpoint_every messages.
        moved = asyncio.Event()

        def on_confirmed(i: int, to_dlq: bool) -> None:
            nonlocal confirmed, saved
            confirmed_flags[i - start] = True
            if to_dlq:
                result.dlq += 1
            else:
                result.delivered += 1
            while confirmed < total and confirmed_flags[confirmed - start]:
                confirmed += 1
                moved.set()
            progress.advanced(1)
            if confirmed - saved >= self.cfg.checkpoint_every:
                state.save(confirmed)
                saved = confirmed

        async def send_one(i: int, built: Built) -> None:
            try:
                to_dlq = built.message is None
                if to_dlq:
                    assert built.reason is not None
                    await self._send_dlq(built.record, built.reason, str(built.error))
                else:
                    await self.producer.send(
                        self.route.raw_topic,
                        codec.encode("RawMessage", built.record),
                        key=built.key,
                        headers=raw_headers(),
                    )
                    MESSAGES.labels(self.cfg.feed, "raw").inc()
                    STAGE.sent.inc()
                STAGE.received.inc()
                telemetry.FEED_RECEIVED.labels("files", self.cfg.feed).inc()
                on_confirmed(i, to_dlq)
            except DeliveryError as exc:
                failure.append(f"kafka delivery failed ({exc.code})")
            except Exception as exc:  # a bug: stop this file, keep what is confirmed
                # The type only: a traceback or the text may quote the message (patient data).
                log.error(
                    "file source: message %d of %s failed (%s)", i, path.name, type(exc).__name__
                )
                failure.append(f"internal error ({type(exc).__name__})")
            if failure:
                moved.set()

        tasks: set[asyncio.Task[None]] = set()
        try:
            for i in range(start, total):
                while i - confirmed >= self.cfg.max_in_flight and not failure:
                    moved.clear()
                    await moved.wait()
                if failure or (stop is not None and stop.is_set()):
                    break
                lo, hi = ranges[i]
                built = build_envelope(
                    data[lo:hi],
                    feed=self.cfg.feed,
                    peer=peer,
                    charset=charset,
                    fallback=self.cfg.fallback_charset,
                )
                task = asyncio.create_task(send_one(i, built))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            # Also on cancellation: what is confirmed stays confirmed.
            if confirmed != saved:
                state.save(confirmed)
        if confirmed < total:
            result.outcome = "failed" if failure else "interrupted"
            result.reason = failure[0] if failure else "stopped"
        return result

    async def _send_dlq(
        self, record: dict[str, Any], reason: str, detail: str | None, key: bytes | None = None
    ) -> None:
        await self.producer.send(
            self.route.dlq_topic,
            codec.encode("RawMessage", record),
            key=key or self.cfg.feed.encode("utf-8"),
            headers=dlq_headers("receiving", reason, detail),
        )
        DLQ.labels(self.cfg.feed, reason).inc()
        MESSAGES.labels(self.cfg.feed, "dlq").inc()
        STAGE.dlq(reason)
        log.warning(
            "file source %s: a message went to the DLQ (stage receiving, reason %s)",
            self.cfg.feed,
            reason,
        )

    async def _reject(self, path: Path, data: bytes, exc: FileFormatError) -> FileResult:
        """One DLQ record for the whole file, then the file to the error folder."""
        result = FileResult(path, "error", reason=str(exc))
        record: dict[str, Any] = {
            "feed": self.cfg.feed,
            "received_at": datetime.now(UTC),
            "peer": str(path),
            "raw": data[:DLQ_FILE_BYTES],
        }
        reason = f"file_{exc.code}"
        detail = str(exc)
        if len(data) > DLQ_FILE_BYTES:
            detail += f"; record holds the first {DLQ_FILE_BYTES} of {len(data)} bytes"
        try:
            await self._send_dlq(record, reason, detail)
        except DeliveryError as err:
            result.outcome = "failed"
            result.reason = f"{exc}; and the DLQ write failed ({err.code})"
            return result
        result.dlq = 1
        if self.error_dir is not None:
            note = {
                "file": path.name,
                "source": str(path),
                "reason": reason,
                "detail": detail,
                "segment_index": exc.segment_index,
                "bytes": len(data),
                "at": datetime.now(UTC).isoformat(),
            }
            try:
                self.error_dir.mkdir(parents=True, exist_ok=True)
                target = _unique_target(self.error_dir, path.name)
                # The reason first: a crash in between leaves a note, never an unexplained file.
                reason_file = target.with_name(target.name + ".reason.json")
                reason_file.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
                shutil.move(path, target)
                result.moved_to = target
            except OSError as err:
                result.outcome = "failed"
                result.reason = f"{exc}; and cannot move it to {self.error_dir} ({err})"
        return result


async def ingest_file(
    path: Path,
    cfg: FilesConfig,
    producer: Sender,
    route: Route,
    progress: Progress | None = None,
) -> FileResult:
    """Ingest one file (see :meth:`FileSource.ingest_file`)."""
    return await FileSource(cfg, producer, route).ingest_file(path, progress)
