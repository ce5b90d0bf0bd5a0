"""A research consumer that holds nothing of hl7bus but the published research contracts
(schemas/research/<profile>.<type>.avsc): Apache's avro package decodes, with the writer found
by the single-object fingerprint, as the Avro specification has a reader do.

The fingerprint of each file is computed by fastavro: Apache avro's Python package keeps
`{"type": "long"}` of a logical type in its canonical form, where the specification (and the
Java library) has `"long"`, so its own fingerprints of schemas with timestamps differ.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

RESEARCH = Path(__file__).resolve().parent.parent / "schemas" / "research"


@cache
def _contracts(profile: str) -> dict[bytes, avro.schema.RecordSchema]:
    found = {}
    for path in sorted(RESEARCH.glob(f"{profile}.*.avsc")):
        text = path.read_text(encoding="utf-8")
        schema = avro.schema.parse(text)
        assert isinstance(schema, avro.schema.RecordSchema)
        canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(text)))
        found[bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))] = schema
    assert found, f"no published research contracts for {profile}"
    return found


def decode(value: bytes, profile: str) -> tuple[avro.schema.RecordSchema, dict[str, Any]]:
    """(the published contract, the record) of one single-object research value."""
    assert value[:2] == b"\xc3\x01", "not a single-object value"
    schema = _contracts(profile)[value[2:10]]  # KeyError: written with no published contract
    record = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
    assert isinstance(record, dict)
    return schema, record
