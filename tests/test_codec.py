"""The event codec: Avro single-object encoding of the packaged schemas."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from importlib import resources

import avro.io
import avro.schema
import pytest

from hl7bus.schemas import codec

RAW = {
    "feed": "snuh",
    "received_at": datetime(2026, 11, 27, 1, 2, 3, 456000, tzinfo=UTC),
    "peer": "10.0.0.1:4000",
    "charset": "utf-8",
    "control_id": "MSG1",
    "message_type": "ADT^A01",
    "patient_key": "snuh|SNUH|123",
    "raw": b"MSH|^~\\&|...",
}


def test_round_trip() -> None:
    data = codec.encode("RawMessage", RAW)
    assert data[:2] == codec.SINGLE_OBJECT_MAGIC
    event_type, record = codec.decode(data)
    assert event_type == "RawMessage"
    assert record == {**RAW, "schema_version": 1}


def test_every_field_has_a_phi_class_and_a_doc() -> None:
    for schema in codec.schemas().values():
        for field in schema.definition["fields"]:
            assert field["phi"] in {"direct", "quasi", "date", "free_text", "none"}, field
            assert field.get("doc"), f"{schema.name}.{field['name']} has no doc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "bad magic"),
        (b"\x00\x00\x00\x00\x01hello", "bad magic"),
        (codec.SINGLE_OBJECT_MAGIC + b"\x01" * 8 + b"x", "unknown schema fingerprint"),
    ],
)
def test_garbage_is_a_codec_error(data: bytes, message: str) -> None:
    with pytest.raises(codec.CodecError, match=message):
        codec.decode(data)


def test_truncated_body_is_a_codec_error() -> None:
    data = codec.encode("RawMessage", RAW)
    with pytest.raises(codec.CodecError, match="corrupt RawMessage"):
        codec.decode(data[:-5])


def test_apache_avro_reads_our_values() -> None:
    """A consumer outside the project (Apache's own avro package) decodes what we write."""
    data = codec.encode("RawMessage", RAW)
    text = resources.files("hl7bus.schemas").joinpath("raw_message.avsc").read_text("utf-8")
    schema = avro.schema.parse(text)
    # Apache's Python package renders a logical-type long as {"type":"long"} in its canonical
    # form, against the spec (Java and fastavro give "long"), so its fingerprint of our schemas
    # differs; its CRC-64-AVRO over the spec's canonical form matches ours.
    canonical = schema.canonical_form.replace('{"type":"long"}', '"long"').encode()
    assert data[2:10] == avro.schema._crc_64_fingerprint(canonical)
    decoded = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
    assert isinstance(decoded, dict)
    assert decoded["control_id"] == "MSG1"
    assert decoded["raw"] == RAW["raw"]
    assert json.loads(text)["namespace"] == "hl7bus.v1"
