"""Splitting a message file into its messages on the raw bytes, sans I/O.

A file is one message, an FHS/BHS ... BTS/FTS batch, or messages simply concatenated. The split
and the envelope checks are :func:`hl7bus.hl7v2.batch.split_batch` (which says why splitting
bytes is safe); each message is returned as a byte range of the file, so the envelope's ``raw``
is exactly the bytes the file holds for it, and each message is decoded on its own (its own
MSH-18): one message in a charset the file's other messages do not share, or with undecodable
bytes, goes to the DLQ alone instead of failing the file. This module adds what is specific to
files: the :class:`FileFormatError` codes.
"""

from __future__ import annotations

from hl7bus.hl7v2 import Hl7CharsetError, Hl7ParseError
from hl7bus.hl7v2.batch import BatchSplit, split_batch

__all__ = ["FileFormatError", "SplitFile", "split_file"]

#: The messages of a file: ``ranges``, ``charset`` (set when the file fixes it), ``batches``.
SplitFile = BatchSplit


class FileFormatError(ValueError):
    """The file as a whole cannot be read as HL7 messages.

    ``code`` is a short label for metrics and DLQ headers ("empty", "not_hl7", "batch",
    "charset"); the text names what and where (segment index counted from the file's first
    segment), never values.
    """

    def __init__(self, code: str, reason: str, segment_index: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.segment_index = segment_index
        super().__init__(reason if segment_index is None else f"{reason} (segment {segment_index})")


def split_file(data: bytes, charset: str | None = None) -> SplitFile:
    """Find the messages of a file; validate its batch envelope (see ``split_batch``).

    ``charset`` is the feed's override (checked for ASCII compatibility). Raises
    :class:`FileFormatError`.
    """
    try:
        split = split_batch(data, charset)
    except Hl7CharsetError as exc:
        raise FileFormatError("charset", exc.reason) from None
    except Hl7ParseError as exc:
        # The only error at the first segment without a field: it is no MSH and no envelope.
        if exc.segment_index == 0 and exc.field is None:
            raise FileFormatError(
                "not_hl7", "the file does not start with MSH or FHS/BHS"
            ) from None
        raise FileFormatError("batch", exc.reason, exc.segment_index) from None
    if not split.segments:
        raise FileFormatError("empty", "the file holds no segments")
    return split
