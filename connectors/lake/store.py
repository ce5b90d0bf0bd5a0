"""The lake on its filesystem: its folders, its Arrow schemas, and the one way a file is published.

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

`lake.path` is a local folder or a URI that pyarrow.fs.FileSystem.from_uri resolves (file://,
s3://, gs://, hdfs://, ...). On the local filesystem (a folder, or file://) publication is as
above. On any other filesystem it goes through pyarrow.fs: the temporary object is written in
full (the output stream's close completes the upload), then moved over the old one
(FileSystem.move; on S3 and GCS a server-side copy, then a delete of the temporary object).
There "atomic" means what an object store offers: an object is replaced whole by one copy, so a
reader gets the old or the new object, never a partial one; a reader that lists the folder
between the copy and the delete may also see the temporary object, which it skips by its name
as above. Only the local filesystem is tested here (and pyarrow's in-memory mock filesystem for
the generic path): no object store runs in the tests.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
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


def _is_uri(where: str) -> bool:
    return "://" in where


def redacted(where: str) -> str:
    """`where` without the user and password a URI may carry (s3://KEY:SECRET@bucket/...)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1***@", where)


class LakeFiles:
    """The files of a lake at `root`: a local folder, or a URI of a pyarrow filesystem, or a
    path on the pyarrow `filesystem` given (a SubTreeFileSystem, one made with credentials).

    Files are named by their path on that filesystem (`path(name)` for a name under the root,
    as DATA, CODES_FILE); on the local filesystem that is the OS path, so the publication there
    keeps fsync and os.replace."""

    def __init__(
        self, root: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
    ) -> None:
        where = os.fspath(root)
        self.url = redacted(where)  # for messages: without credentials a URI may carry
        self.fs: pafs.FileSystem
        if filesystem is not None:
            self.fs = filesystem
            self.base = where.rstrip("/") or where
        elif _is_uri(where):
            try:
                fs, base = pafs.FileSystem.from_uri(where)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise LakeError(
                    f"lake.path {self.url}: not a filesystem URI pyarrow knows "
                    f"({_first_line(exc) or type(exc).__name__})"
                ) from exc
            self.fs = fs
            self.base = base.rstrip("/") or base
        else:
            self.fs = pafs.LocalFileSystem()
            self.base = str(Path(where).expanduser().absolute())
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, name: str) -> str:
        """The path on the filesystem of `name` (a path under the root, / separated)."""
        return f"{self.base}/{name}" if name else self.base

    def exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type == pafs.FileType.File)

    def is_dir(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type == pafs.FileType.Directory)

    def files(self, folder: str, suffix: str, recursive: bool = False) -> list[str]:
        """Paths of the files under `folder` whose name ends with `suffix`, skipping
        temporary files (their names start with a dot); sorted."""
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)
        return sorted(
            info.path
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
            and info.base_name.endswith(suffix)
            and not info.base_name.startswith(TEMP_PREFIX)
        )

    def read_table(self, path: str, **options: Any) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs, **options)

    def num_rows(self, path: str) -> int:
        with self.fs.open_input_file(path) as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as handle:
            return bytes(handle.read()).decode("utf-8")

    @contextmanager
    def publish(self, path: str, progress: Progress | None = None) -> Iterator[BinaryIO]:
        """Write `path` atomically (the module's docstring says what that means where)."""
        if self.local:
            with publish(Path(path), progress) as handle:
                yield handle
            return
        folder, _, name = path.rpartition("/")
        temp = f"{folder}/{TEMP_PREFIX}{name}.tmp"
        self.fs.create_dir(folder, recursive=True)
        try:
            with self.fs.open_output_stream(temp) as handle:
                yield handle
            if progress is not None:
                progress("written", temp)
            self.fs.move(temp, path)
        except BaseException:
            if self.exists(temp):
                self.fs.delete_file(temp)
            raise
        if progress is not None:
            progress("published", path)

    def write_parquet(self, table: pa.Table, path: str, progress: Progress | None = None) -> None:
        with self.publish(path, progress) as handle:
            pq.write_table(table, handle, compression=COMPRESSION)

    def remove(self, path: str, progress: Progress | None = None) -> None:
        """Unpublish a file (a shard left with no rows, a folded append file)."""
        if self.local:
            remove(Path(path), progress)
            return
        if self.exists(path):
            self.fs.delete_file(path)
        if progress is not None:
            progress("removed", path)


class LakeStore(LakeFiles):
    """The lake: opening it (checked writable, layout kept), its shards and append files."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        layout: Layout,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        super().__init__(root, filesystem)
        self.layout = layout
        self._next_seq = 0

    def open(self) -> None:
        """Create the folders, check they are writable, check the layout, and clear the
        temporary files a killed process left. Raises LakeError naming the problem."""
        try:
            for folder in (DATA, METADATA, PENDING):
                if self.local:
                    Path(self.path(folder)).mkdir(parents=True, exist_ok=True)
                else:
                    self.fs.create_dir(self.path(folder), recursive=True)
            probe = self.path(f"{STATE}/{TEMP_PREFIX}probe.tmp")
            with self.fs.open_output_stream(probe) as handle:
                handle.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as exc:  # pyarrow raises OSError (and its subclasses) for I/O too
            reason = exc.strerror or _first_line(exc) or type(exc).__name__
            raise LakeError(f"lake folder {self.url} is not writable ({reason})") from exc
        self._check_layout()
        # What a killed process left: temporary files (named .<name>.tmp).
        selector = pafs.FileSelector(self.base, recursive=True)
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            stale = name.startswith(TEMP_PREFIX) and name.endswith(".tmp")
            if stale and info.type == pafs.FileType.File:
                self.fs.delete_file(info.path)
        pending = self.pending_files()
        self._next_seq = _seq(pending[-1]) + 1 if pending else 0

    def _check_layout(self) -> None:
        path = self.path(LAYOUT_FILE)
        wanted = self.layout.fingerprint()
        if self.exists(path):
            made = json.loads(self.read_text(path)).get("layout")
            if made != wanted:
                raise LakeError(
                    f"lake {self.url} was made with another split key, split ratios or "
                    "shards_per_split (lake.split_key, lake.split_ratios, "
                    "lake.shards_per_split): keep them, or write a new lake"
                )
            return
        with self.publish(path) as handle:
            handle.write(json.dumps({"layout": wanted}, indent=2).encode())

    def pending_files(self) -> list[str]:
        return sorted(self.files(self.path(PENDING), ".parquet"), key=_seq)

    def append(self, table: pa.Table, progress: Progress | None = None) -> str:
        """Publish one batch's rows (PENDING_SCHEMA, versions from `next_seq`) as an append file."""
        path = self.path(f"{PENDING}/{self._next_seq:016d}.parquet")
        self._next_seq += 1
        self.write_parquet(table, path, progress)
        return path

    @property
    def next_seq(self) -> int:
        """The sequence number of the next append file: its rows' versions start at
        next_seq << 32, so every later file's versions are greater."""
        return self._next_seq

    def shard_paths(self) -> list[str]:
        return shard_paths(self)


def shard_paths(files: LakeFiles) -> list[str]:
    """The shards: data/<split>/<n>.parquet (not deeper, as the layout makes them)."""
    data = files.path(DATA)
    return [
        path
        for path in files.files(data, ".parquet", recursive=True)
        if path[len(data) + 1 :].count("/") == 1
    ]


def _seq(path: str) -> int:
    return int(path.rpartition("/")[2].removesuffix(".parquet"))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""
