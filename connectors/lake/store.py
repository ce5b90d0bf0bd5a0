"""The lake on disk: its folders, its Arrow schemas, and the one way a file is published.

    <root>/data/<split>/<n>.parquet       MEDS shards (compaction.py writes them)
    <root>/metadata/dataset.json          MEDS metadata (metadata.py)
    <root>/metadata/codes.parquet
    <root>/metadata/subject_splits.parquet
    <root>/_hl7bus/layout.json            the layout the lake was made with (layout.py)
    <root>/_hl7bus/pending/<seq>.parquet  append files: the sink's batches not compacted yet

Every file is published the same way (`publish`): written to a temporary file beside it whose
name starts with a dot, flushed to disk, renamed over the old one with os.replace, and the
folder flushed. A reader opens the old file or the new one, never a half-written one, and a
process killed anywhere leaves at most a stale temporary file, which readers skip (DuckDB's
``*.parquet`` glob and pyarrow.dataset both ignore dot files) and the next start removes.
The `_hl7bus` folder is skipped by pyarrow.dataset too (underscore prefix).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from hl7bus.connectors.lake.layout import Layout

DATA = "data"
METADATA = "metadata"
STATE = "_hl7bus"
PENDING = f"{STATE}/pending"
LAYOUT_FILE = f"{STATE}/layout.json"
TEMP_PREFIX = "."

# MEDS 0.4 data columns, then the lake's documented extensions (docs/ai-sink.md).
DATA_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int64(), nullable=False),
        pa.field("time", pa.timestamp("us")),
        pa.field("code", pa.string(), nullable=False),
        pa.field("numeric_value", pa.float32()),
        pa.field("text_value", pa.large_string()),
        pa.field("unit", pa.string()),
        pa.field("feed", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("fact_id", pa.int64()),
    ]
)
EXTENSION_COLUMNS = ("unit", "feed", "event_id", "fact_id")

# Kinds of append-file rows: a fact's row; a tombstone (the fact has no rows any more, from
# this version on); a merge (subject_id's rows now belong to merge_into).
ROW, TOMBSTONE, MERGE = 0, 1, 2
PENDING_SCHEMA = pa.schema(
    [
        *DATA_SCHEMA,
        pa.field("version", pa.int64(), nullable=False),
        pa.field("kind", pa.int8(), nullable=False),
        pa.field("merge_into", pa.int64()),
        pa.field("description", pa.string()),
    ]
)
COMPRESSION = "zstd"

# A published step of the work, for progress and for the tests that kill a process at it:
# (what happened, the file it happened to).
Progress = Callable[[str, str], None]


class LakeError(Exception):
    """The lake cannot be used as configured (not writable, made with another layout)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def publish(path: Path, progress: Progress | None = None) -> Iterator[BinaryIO]:
    """Write `path` atomically: the block writes to the temporary file handed to it."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with temp.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if progress is not None:
            progress("written", str(temp))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    if progress is not None:
        progress("published", str(path))


def write_parquet(table: pa.Table, path: Path, progress: Progress | None = None) -> None:
    with publish(path, progress) as handle:
        pq.write_table(table, handle, compression=COMPRESSION)


def remove(path: Path, progress: Progress | None = None) -> None:
    """Unpublish a file (a shard left with no rows): one rename-free unlink, also atomic."""
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    if progress is not None:
        progress("removed", str(path))


class LakeStore:
    """The lake folder: opening it (checked writable, layout kept), and its append files."""

    def __init__(self, root: Path, layout: Layout) -> None:
        self.root = root
        self.layout = layout
        self._next_seq = 0

    def open(self) -> None:
        """Create the folders, check they are writable, check the layout, and clear the
        temporary files a killed process left. Raises LakeError naming the problem."""
        try:
            for folder in (DATA, METADATA, PENDING):
                (self.root / folder).mkdir(parents=True, exist_ok=True)
            probe = self.root / STATE / f"{TEMP_PREFIX}probe.tmp"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise LakeError(
                f"lake folder {self.root} is not writable ({exc.strerror or type(exc).__name__})"
            ) from exc
        self._check_layout()
        for stale in self.root.rglob(f"{TEMP_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
        pending = self.pending_files()
        self._next_seq = _seq(pending[-1]) + 1 if pending else 0

    def _check_layout(self) -> None:
        path = self.root / LAYOUT_FILE
        wanted = self.layout.fingerprint()
        if path.exists():
            made = json.loads(path.read_text(encoding="utf-8")).get("layout")
            if made != wanted:
                raise LakeError(
                    f"lake {self.root} was made with another split key, split ratios or "
                    "shards_per_split (lake.split_key, lake.split_ratios, "
                    "lake.shards_per_split): keep them, or write a new lake"
                )
            return
        with publish(path) as handle:
            handle.write(json.dumps({"layout": wanted}, indent=2).encode())

    def pending_files(self) -> list[Path]:
        return sorted((self.root / PENDING).glob("*.parquet"), key=_seq)

    def append(self, table: pa.Table, progress: Progress | None = None) -> Path:
        """Publish one batch's rows (PENDING_SCHEMA, versions from `next_seq`) as an append file."""
        path = self.root / PENDING / f"{self._next_seq:016d}.parquet"
        self._next_seq += 1
        write_parquet(table, path, progress)
        return path

    @property
    def next_seq(self) -> int:
        """The sequence number of the next append file: its rows' versions start at
        next_seq << 32, so every later file's versions are greater."""
        return self._next_seq

    def shard_paths(self) -> list[Path]:
        return sorted((self.root / DATA).glob("*/*.parquet"))


def _seq(path: Path) -> int:
    return int(path.stem)
