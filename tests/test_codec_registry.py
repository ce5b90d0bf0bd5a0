"""Registry mode of the codec: Confluent wire format through SchemaRegistryClient (mock://)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from samples import envelope, first

from hl7bus.ops import config as config_mod
from hl7bus.schemas import codec


@pytest.fixture
def registry() -> Iterator[Any]:
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    yield client
    codec.reset()


def _register(client: Any, topic: str, event_type: str) -> int:
    definition = json.dumps(codec.schema(event_type).definition)
    return int(client.register_schema(codec.subject(topic, event_type), Schema(definition, "AVRO")))


def test_production_mode_uses_the_registered_schema(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=False, topic_names={"raw": "x.hl7.raw"})
    schema_id = _register(registry, "x.hl7.raw", "RawMessage")
    raw = envelope(first("ADT^A04"))

    value = codec.encode("RawMessage", raw)  # default topic of RawMessage: the raw topic
    assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == schema_id
    assert codec.decode(value) == ("RawMessage", raw)
    assert codec.encode("RawMessage", raw, topic="raw") == value  # catalog id or name

    # Single-object values stay readable in registry mode (a topic can be migrated).
    assert codec.decode(codec.encode_single_object("RawMessage", raw)) == ("RawMessage", raw)


def test_unregistered_subject_is_a_clear_error_not_a_codec_error(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=False)
    with pytest.raises(codec.RegistryError, match=r"hl7\.events-hl7bus\.v1\.RawMessage"):
        codec.encode("RawMessage", envelope(first("ADT^A04")), topic="hl7.events")
    assert not registry.get_subjects()  # nothing was registered behind our back


def test_development_mode_registers_per_topic_and_record(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=True)
    raw = envelope(first("ADT^A04"))
    codec.encode("RawMessage", raw, topic="a.hl7.raw")
    codec.encode("RawMessage", raw, topic="b.hl7.raw")
    assert sorted(registry.get_subjects()) == [
        "a.hl7.raw-hl7bus.v1.RawMessage",
        "b.hl7.raw-hl7bus.v1.RawMessage",
    ]


def test_without_a_registry_confluent_values_are_codec_errors(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=True)
    value = codec.encode("RawMessage", envelope(first("ADT^A04")))
    codec.reset()
    with pytest.raises(codec.CodecError, match="no schema registry"):
        codec.decode(value)


def test_config_section_selects_the_mode(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"mock://{uuid.uuid4().hex}"
    monkeypatch.setenv("HL7BUS_SCHEMAS_REGISTRY_URL", url)
    monkeypatch.setenv("HL7BUS_SCHEMAS_AUTO_REGISTER", "true")
    settings = config_mod.load()
    assert settings.schemas.registry_url == url and settings.schemas.auto_register
    codec.configure(settings.schemas, {"raw": "p.hl7.raw"})
    value = codec.encode("RawMessage", envelope(first("ADT^A04")))
    assert value[:1] == b"\x00"
    codec.configure(codec.SchemasConfig())
    assert codec.encode("RawMessage", envelope(first("ADT^A04")))[:2] == b"\xc3\x01"
