"""Avro single-object encoding of the packaged event schemas (the embedded default).

Every value on an hl7bus topic is `C3 01` + the 8-byte little-endian CRC-64-AVRO fingerprint of
the writer schema's canonical form + the Avro binary body (Avro specification, "Single object
encoding"), so any Avro library that holds our published `*.avsc` files can decode it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
# Kafka header that names the event type, so consumers can route without decoding.
EVENT_TYPE_HEADER = "hl7bus.event_type"
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8


class CodecError(ValueError):
    """A value that is not a single-object-encoded record of a known schema."""


@dataclass(frozen=True)
class EventSchema:
    name: str
    definition: dict[str, Any]
    parsed: Any
    fingerprint: bytes

    def phi_classes(self) -> dict[str, str]:
        """Field name -> PHI class ("direct", "quasi", "date", "free_text", "none")."""
        return {f["name"]: f["phi"] for f in self.definition["fields"]}


@cache
def schemas() -> dict[str, EventSchema]:
    """All packaged schemas by short record name (RawMessage, Patient, ...)."""
    found: dict[str, EventSchema] = {}
    for entry in resources.files(__package__).iterdir():
        if not entry.name.endswith(".avsc"):
            continue
        loaded = _load(entry.read_text(encoding="utf-8"))
        found[loaded.name] = loaded
    return found


def _load(text: str) -> EventSchema:
    definition = json.loads(text)
    parsed = fastavro.parse_schema(definition)
    canonical = to_parsing_canonical_form(parsed)
    return EventSchema(
        name=definition["name"],
        definition=definition,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


@cache
def _by_fingerprint() -> dict[bytes, EventSchema]:
    return {s.fingerprint: s for s in schemas().values()}


@cache
def _released() -> dict[bytes, EventSchema]:
    """Writer schemas of released versions (schemas/released/v*/), for values on the topics
    that were written before an upgrade; they are resolved to the current schema on decode."""
    found: dict[bytes, EventSchema] = {}
    root = resources.files(__package__).joinpath("released")
    if not root.is_dir():
        return found
    for version in root.iterdir():
        if not version.is_dir():
            continue
        for entry in version.iterdir():
            if entry.name.endswith(".avsc"):
                writer = _load(entry.read_text(encoding="utf-8"))
                if writer.name in schemas() and writer.fingerprint not in _by_fingerprint():
                    found[writer.fingerprint] = writer
    return found


def schema(event_type: str) -> EventSchema:
    try:
        return schemas()[event_type]
    except KeyError:
        raise CodecError(
            f"unknown event type {event_type!r}; known: {', '.join(sorted(schemas()))}"
        ) from None


def encode(event_type: str, record: Mapping[str, Any]) -> bytes:
    target = schema(event_type)
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC)
    out.write(target.fingerprint)
    fastavro.schemaless_writer(out, target.parsed, dict(record))
    return out.getvalue()


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Return (event type, record) of a single-object-encoded value."""
    if len(data) < _HEADER_LEN or data[:2] != SINGLE_OBJECT_MAGIC:
        raise CodecError(f"not an Avro single-object value ({len(data)} bytes, bad magic)")
    fp = data[2:_HEADER_LEN]
    writer = _by_fingerprint().get(fp)
    reader = None
    if writer is None:
        writer = _released().get(fp)
        if writer is None:
            raise CodecError(f"unknown schema fingerprint {fp.hex()}")
        reader = schemas()[writer.name].parsed  # resolve an older release to the current schema
    try:
        body = io.BytesIO(data[_HEADER_LEN:])
        record = fastavro.schemaless_reader(body, writer.parsed, reader)
    except Exception as exc:  # fastavro raises several types on truncated or corrupt bodies
        raise CodecError(f"corrupt {writer.name} body: {type(exc).__name__}") from exc
    if not isinstance(record, dict):
        raise CodecError(f"{writer.name} body did not decode to a record")
    return writer.name, record
