"""The file source: single-message and batch files (FHS/BHS) to hl7.raw, resumable."""

from __future__ import annotations

from hl7bus.connectors.files.source import (
    FileResult,
    FilesConfig,
    FileSource,
    Summary,
    ingest_file,
)
from hl7bus.connectors.files.split import FileFormatError, SplitFile, split_file

__all__ = [
    "FileFormatError",
    "FileResult",
    "FileSource",
    "FilesConfig",
    "SplitFile",
    "Summary",
    "ingest_file",
    "split_file",
]
