"""Event contracts: compatibility with the released versions, the committed catalog, decoding of
older releases, and outside consumers (Apache's avro package) reading the new event types."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import avro.io
import avro.schema
import fastavro
from typer.testing import CliRunner

from hl7bus.ops import event_catalog
from hl7bus.ops.cli import app
from hl7bus.schemas import codec, compat

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
runner = CliRunner()


def _fields(schema: Any) -> list[dict[str, Any]]:
    """Every field of a schema, nested records included."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            found += _fields(branch)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for field in schema["fields"]:
                found.append(field)
                found += _fields(field["type"])
        elif schema.get("type") == "array":
            found += _fields(schema["items"])
    return found


def test_every_field_nested_too_has_phi_and_doc_in_one_namespace() -> None:
    for schema in codec.schemas().values():
        assert schema.definition["namespace"] == "hl7bus.v1"
        for field in _fields(schema.definition):
            assert field.get("phi") in {"direct", "quasi", "date", "free_text", "none"}, field
            assert field.get("doc"), f"{schema.name}.{field['name']} has no doc"


def test_common_fields() -> None:
    common = ["schema_version", "event_id", "patient_key", "pseudonym_key_id", "feed"]
    common += ["source_control_id", "message_type", "event_time", "received_at"]
    for name, schema in codec.schemas().items():
        if name != "RawMessage":
            names = [f["name"] for f in schema.definition["fields"]]
            assert set(common) <= set(names), name


def test_schemas_check_passes() -> None:
    result = runner.invoke(app, ["schemas", "check"])
    assert result.exit_code == 0, result.output
    assert "compatible with released v1" in result.output


def test_schemas_check_catches_incompatible_changes(tmp_path: Path) -> None:
    changed = tmp_path / "schemas"
    changed.mkdir()
    for source in SCHEMAS.glob("*.avsc"):
        shutil.copy(source, changed)
    patient = json.loads((changed / "patient.avsc").read_text(encoding="utf-8"))
    for field in patient["fields"]:
        if field["name"] == "birth_year":
            field["type"] = ["null", "string"]  # int -> string is no promotion
        if field["name"] == "national_id":
            field["phi"] = "none"  # loosening a PHI class would leak on research topics
    patient["fields"].append({"name": "shoe_size", "type": "int", "phi": "none", "doc": "x"})
    (changed / "patient.avsc").write_text(json.dumps(patient), encoding="utf-8")
    (changed / "observation.avsc").unlink()

    result = runner.invoke(app, ["schemas", "check", "--schemas", str(changed)])
    assert result.exit_code == 1
    problems = [str(p) for p in compat.check(compat.load_dir(changed), _released())]
    assert problems == [
        "Observation: schema: released record type is gone",
        "Patient: birth_year: writer type int matches no reader branch",
        "Patient: shoe_size: new field without a default",
        "Patient: national_id: PHI class changed from direct to none",
    ]


def test_compatible_changes_pass() -> None:
    writer = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "int", "phi": "none"},
        {"name": "b", "type": ["null", "string"], "phi": "none"},
        {"name": "c", "type": {"type": "array", "items": "float"}, "phi": "none"},
    ]}  # fmt: skip
    reader = {"type": "record", "name": "R", "fields": [
        {"name": "a", "type": "long", "phi": "none"},  # promotion
        {"name": "b", "type": ["null", "string", "int"], "phi": "none"},  # wider union
        {"name": "c", "type": {"type": "array", "items": "double"}, "phi": "none"},
        {"name": "d", "type": ["null", "int"], "default": None, "phi": "none"},  # new, default
    ]}  # fmt: skip
    assert compat.check({"R": reader}, {"R": writer}) == []
    assert compat.check({"R": writer}, {"R": reader}) != []  # but not the other way round


def _released() -> dict[str, Any]:
    found = compat.latest_release()
    assert found is not None
    return found[1]


def test_values_written_with_a_released_schema_still_decode() -> None:
    old = _released()["Patient"]
    parsed = fastavro.parse_schema(old)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    record = {
        "event_id": "e1",
        "feed": "f",
        "message_type": "ADT^A04",
        "received_at": datetime(2026, 1, 1, tzinfo=UTC),
        "sex": "F",
    }
    out = io.BytesIO()
    out.write(codec.SINGLE_OBJECT_MAGIC)
    out.write(bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")))
    fastavro.schemaless_writer(out, parsed, record)
    assert out.getvalue()[2:10] != codec.schema("Patient").fingerprint  # really an older version
    name, decoded = codec.decode(out.getvalue())
    assert name == "Patient"
    assert decoded["sex"] == "F"
    assert decoded["identifiers"] is None and decoded["merged_from_patient_key"] is None


def test_catalog_is_committed_and_current() -> None:
    committed = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    assert committed == event_catalog.render(), "docs/events.md is stale: run `hl7bus schemas docs`"


def test_apache_avro_reads_nested_events() -> None:
    """Apache's avro package decodes the deepest new contracts (Generic tree, Patient ids)."""
    from test_events_golden import golden_envelope

    from hl7bus.streams.parse import events_from_raw

    for name in ("siu_s12", "adt_a40"):
        for event in events_from_raw(golden_envelope(name), ZoneInfo("Asia/Seoul")):
            data = codec.encode(event.type, event.record)
            text = json.dumps(codec.schema(event.type).definition)
            schema = avro.schema.parse(text)
            reader = avro.io.DatumReader(schema)
            decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[10:])))
            assert isinstance(decoded, dict)
            assert decoded["event_id"] == event.record["event_id"]
            if event.type == "Generic":
                assert decoded["segments"] == event.record["segments"]
            else:
                assert decoded["merged_from_identifiers"] == event.record["merged_from_identifiers"]
