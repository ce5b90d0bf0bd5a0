"""HL7 v2 wire format, pure and I/O-free: parse, escape, charsets, batches, ACKs.

The hot path of the bus (docs/architecture.md, Layers): str.split on demand; hl7apy is
imported only when :func:`validate` runs.
"""

from __future__ import annotations

from .ack import ACK_CODES, ERROR_CODES, AckError, build_ack, build_batch_ack
from .batch import parse_batch
from .charset import DEFAULT_CODEC, codec_for, decode_bytes, lookup_codec, read_msh_field
from .delimiters import DEFAULT_ENCODING, Encoding
from .errors import Hl7CharsetError, Hl7ParseError
from .escape import escape, unescape
from .message import (
    HL7_NULL,
    Message,
    Path,
    Segment,
    parse,
    parse_path,
    segment_offset,
    split_field,
)
from .validate import Finding, validate

__all__ = [
    "ACK_CODES",
    "DEFAULT_CODEC",
    "DEFAULT_ENCODING",
    "ERROR_CODES",
    "HL7_NULL",
    "AckError",
    "Encoding",
    "Finding",
    "Hl7CharsetError",
    "Hl7ParseError",
    "Message",
    "Path",
    "Segment",
    "build_ack",
    "build_batch_ack",
    "codec_for",
    "decode_bytes",
    "escape",
    "lookup_codec",
    "parse",
    "parse_batch",
    "parse_path",
    "read_msh_field",
    "segment_offset",
    "split_field",
    "unescape",
    "validate",
]
