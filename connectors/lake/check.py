"""`hl7bus lake check`: is a lake (a folder, or a URI of a pyarrow filesystem) a valid MEDS 0.4
dataset?

The meds package validates one table at a time (each shard against DataSchema, each metadata
file against its schema); the rules across files it does not check are checked here with one
DuckDB query each over all the shards: every subject in exactly one shard, a subject's rows
contiguous and sorted by time (static rows, with no time, first), every code listed in
codes.parquet, every subject in subject_splits.parquet once, in the split whose folder holds
its shard. Problems name the file and the rule, and give counts and at most a few subject ids
(pseudonymous integers), never a value of the data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from meds.schema import CodeMetadataSchema, DataSchema, DatasetMetadataSchema, SubjectSplitSchema

from hl7bus.connectors.lake.metadata import CODES_FILE, DATASET_FILE, SPLITS_FILE
from hl7bus.connectors.lake.store import LakeError, LakeFiles, shard_paths

_EXAMPLES = 3


@dataclass
class Report:
    shards: int = 0
    rows: int = 0
    subjects: int = 0
    codes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_lake(root: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None) -> Report:
    report = Report()
    try:
        files = LakeFiles(root, filesystem)
    except LakeError as exc:
        report.problems.append(str(exc))
        return report
    if not files.is_dir(files.base):
        report.problems.append(f"{files.url}: no such folder")
        return report
    shards = shard_paths(files)
    report.shards = len(shards)
    tables: dict[str, pa.Table] = {}
    for shard in shards:
        table = _validate(report, files, shard, DataSchema)
        if table is not None:  # the columns the cross-file rules need
            tables[shard] = table.select(["subject_id", "time", "code"])
    metadata: dict[str, pa.Table] = {}
    for name, schema in ((CODES_FILE, CodeMetadataSchema), (SPLITS_FILE, SubjectSplitSchema)):
        if not files.exists(files.path(name)):
            report.problems.append(f"{name}: missing")
        else:
            table = _validate(report, files, files.path(name), schema)
            if table is not None:
                metadata[name] = table
    _dataset(report, files)
    if report.problems:
        return report  # the cross-file rules assume files of the right shape
    con = duckdb.connect()
    try:
        _cross_file(report, con, files, tables, metadata)
    finally:
        con.close()
    return report


def _validate(report: Report, files: LakeFiles, path: str, schema: type) -> pa.Table | None:
    name = path[len(files.base) + 1 :]
    try:
        table = files.read_table(path)
    except Exception as exc:  # pyarrow raises several types for an unreadable file
        report.problems.append(f"{name}: unreadable Parquet ({type(exc).__name__})")
        return None
    try:
        schema.validate(table)  # type: ignore[attr-defined]
    except Exception as exc:  # the meds schemas raise their own error types
        report.problems.append(f"{name}: not {schema.__name__}: {_first_line(exc)}")
    if schema is DataSchema:
        report.rows += table.num_rows
        nulls = table["subject_id"].null_count + table["code"].null_count
        if nulls:
            report.problems.append(f"{name}: {nulls} rows without subject_id or code")
    return table


def _dataset(report: Report, files: LakeFiles) -> None:
    path = files.path(DATASET_FILE)
    if not files.exists(path):
        report.problems.append(f"{DATASET_FILE}: missing")
        return
    try:
        DatasetMetadataSchema.validate(json.loads(files.read_text(path)))
    except Exception as exc:  # JSON or schema errors
        report.problems.append(f"{DATASET_FILE}: not DatasetMetadataSchema: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _cross_file(
    report: Report,
    con: duckdb.DuckDBPyConnection,
    files: LakeFiles,
    shards: dict[str, pa.Table],
    metadata: dict[str, pa.Table],
) -> None:
    # The tables as read (through the lake's filesystem), each shard's rows with its name and
    # their order in it.
    con.register("codes", metadata[CODES_FILE])
    con.register("splits", metadata[SPLITS_FILE])
    codes, splits = "codes", "splits"
    report.codes = _scalar(con, "SELECT count(*) FROM codes")
    if not shards:
        return
    parts = []
    for path, table in shards.items():
        rows = table
        name = path[len(files.base) + 1 :]
        rows = rows.append_column("filename", pa.array([name] * rows.num_rows, pa.string()))
        rows = rows.append_column(
            "file_row_number", pc.cast(pa.array(range(rows.num_rows)), pa.int64())
        )
        parts.append(rows)
    con.register("data", pa.concat_tables(parts))
    report.subjects = _scalar(con, "SELECT count(DISTINCT subject_id) FROM data")
    rules = {
        "subjects in more than one shard": """
            SELECT subject_id FROM data GROUP BY subject_id HAVING count(DISTINCT filename) > 1
        """,
        "subjects whose rows are not contiguous in their shard": """
            SELECT subject_id FROM (
                SELECT subject_id, filename,
                       subject_id IS DISTINCT FROM lag(subject_id) OVER w AS starts
                FROM data WINDOW w AS (PARTITION BY filename ORDER BY file_row_number)
            ) WHERE starts GROUP BY subject_id, filename HAVING count(*) > 1
        """,
        "subjects whose rows are not sorted by time": """
            SELECT DISTINCT subject_id FROM (
                SELECT subject_id, time, lag(time) OVER w AS before,
                       lag(subject_id) OVER w AS before_subject
                FROM data WINDOW w AS (PARTITION BY filename ORDER BY file_row_number)
            ) WHERE before_subject = subject_id
                AND ((time IS NULL AND before IS NOT NULL) OR time < before)
        """,
        "subjects missing from metadata/subject_splits.parquet": f"""
            SELECT DISTINCT subject_id FROM data
            EXCEPT SELECT subject_id FROM {splits}
        """,
        "subjects listed more than once in metadata/subject_splits.parquet": f"""
            SELECT subject_id FROM {splits} GROUP BY subject_id HAVING count(*) > 1
        """,
        "subjects whose shard is not in the folder of their split": f"""
            SELECT DISTINCT d.subject_id FROM data d
            JOIN {splits} s USING (subject_id)
            WHERE regexp_extract(d.filename, '([^/]+)/[^/]+$', 1) <> s.split
        """,
    }
    for rule, sql in rules.items():
        found = con.sql(sql).fetchall()
        if found:
            examples = ", ".join(str(row[0]) for row in found[:_EXAMPLES])
            report.problems.append(f"{len(found)} {rule} (e.g. subject_id {examples})")
    unlisted = con.sql(f"SELECT DISTINCT code FROM data EXCEPT SELECT code FROM {codes}").fetchall()
    if unlisted:
        # Codes are vocabulary terms, not patient data: the first few are named.
        names = ", ".join(str(row[0]) for row in unlisted[:_EXAMPLES])
        report.problems.append(
            f"{len(unlisted)} codes of the data not listed in {CODES_FILE} (e.g. {names})"
        )


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.sql(sql).fetchall()
    return int(rows[0][0]) if rows else 0
