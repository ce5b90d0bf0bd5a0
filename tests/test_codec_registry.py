"""Registry mode of the codec: Confluent wire format, one subject per topic (`<topic>-value`).

No schema registry server can run here from a package registry (Karapace is not on PyPI;
Apicurio Registry's app does not resolve from Maven Central: modules it needs are not served),
so these tests use confluent-kafka's in-process mock (mock://). The mock checks no
compatibility itself: the refused incompatible change is refused by `hl7bus schemas register`,
which checks every new schema against the subject's latest version before sending it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from samples import envelope, first
from typer.testing import CliRunner

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli import app
from hl7bus.schemas import codec, subjects, topics
from hl7bus.streams.deid import Policy, Pseudonymizer
from hl7bus.streams.deid.contract import research_schema, research_schemas
from hl7bus.streams.steps import DeidSettings, parse_step

SEOUL = ZoneInfo("Asia/Seoul")
KEY = Pseudonymizer(b"registry-test-key-0123456789abcd", "r1")
runner = CliRunner()


@pytest.fixture
def registry() -> Iterator[Any]:
    client = SchemaRegistryClient.new_client({"url": f"mock://{uuid.uuid4().hex}"})
    yield client
    codec.reset()


def _register(client: Any, topic: str, definition: Any) -> int:
    return int(client.register_schema(codec.subject(topic), Schema(json.dumps(definition), "AVRO")))


def _raw(message_type: str) -> bytes:
    return codec.encode_single_object("RawMessage", envelope(first(message_type)))


def _catalog_names() -> dict[str, str]:
    catalog = topics.TopicCatalog.load(topics.TopicsConfig())
    return {tid: spec.name for tid, spec in catalog.specs.items()}


def test_production_mode_uses_the_registered_schema(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=False, topic_names={"raw": "x.hl7.raw"})
    schema_id = _register(registry, "x.hl7.raw", codec.schema("RawMessage").definition)
    raw = envelope(first("ADT^A04"))

    value = codec.encode("RawMessage", raw)  # default topic of RawMessage: the raw topic
    assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == schema_id
    assert codec.decode(value) == ("RawMessage", raw)
    assert codec.encode("RawMessage", raw, topic="raw") == value  # catalog id or name

    # Single-object values stay readable in registry mode (a topic can be migrated).
    assert codec.decode(codec.encode_single_object("RawMessage", raw)) == ("RawMessage", raw)


def test_unregistered_subject_is_a_clear_error_not_a_codec_error(registry: Any) -> None:
    codec.use_registry_client(registry, auto_register=False)
    with pytest.raises(codec.RegistryError, match=r"'hl7\.raw-value'.*hl7bus schemas register"):
        codec.encode("RawMessage", envelope(first("ADT^A04")))
    # A subject whose registered version is another schema is no licence to write.
    _register(registry, "hl7.raw", {**codec.schema("RawMessage").definition, "doc": "older"})
    with pytest.raises(codec.RegistryError, match=r"hl7\.raw-value"):
        codec.encode("RawMessage", envelope(first("ADT^A04")))
    assert registry.get_subjects() == ["hl7.raw-value"]  # nothing registered behind our back


def test_the_pipeline_registers_one_subject_per_topic(registry: Any) -> None:
    """Development mode through the real parse step with de-identification: identified events
    of several types under hl7.events-value (one union), each research event under its research
    topic's subject with its research contract."""
    names = {tid: f"p.{name}" for tid, name in _catalog_names().items()}
    codec.use_registry_client(registry, auto_register=True, topic_names=names)
    policy = Policy.load("kr-pseudonym")
    deid = DeidSettings(policy, KEY, leak_check=True)
    outputs = [*parse_step(None, _raw("ORU^R01"), SEOUL, deid)]
    outputs += parse_step(None, _raw("ADT^A04"), SEOUL, deid)
    by_topic: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for out in outputs:
        assert out.value[:1] == b"\x00", out.topic_id
        by_topic.setdefault(out.topic_id, []).append(codec.decode(out.value, out.topic_id))
    assert {t for t, _ in by_topic[topics.EVENTS]} == {
        "Order",
        "Observation",
        "Patient",
        "Encounter",
    }
    assert sorted(registry.get_subjects()) == [
        "p.hl7.events-value",
        "p.research.encounter-value",
        "p.research.observation-value",
        "p.research.order-value",
        "p.research.patient-value",
    ]

    events = registry.get_latest_version("p.hl7.events-value")
    assert events.version == 1 and isinstance(json.loads(events.schema.schema_str), list)
    patient = json.loads(registry.get_latest_version("p.research.patient-value").schema.schema_str)
    assert patient == research_schema(policy, "Patient").definition
    assert patient[codec.POLICY_PROPERTY] == policy.digest
    assert "national_id" not in {f["name"] for f in patient["fields"]}

    [(_, identified)] = [r for r in by_topic[topics.EVENTS] if r[0] == "Patient"]
    [(name, research)] = by_topic[topics.research("Patient")]
    assert name == "Patient" and identified["family_name"]
    assert "family_name" not in research and "national_id" not in research
    assert research["deid_policy"] == policy.digest
    assert research["patient_key"] != identified["patient_key"]


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


def _cli_registry(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    """`hl7bus schemas register` against this test's mock (a mock:// URL gives each client a
    store of its own)."""
    monkeypatch.setenv("HL7BUS_SCHEMAS_REGISTRY_URL", "mock://cli")
    monkeypatch.setenv("HL7BUS_TOPICS_PREFIX", "c.")
    monkeypatch.setattr(codec, "registry_client", lambda cfg: client)


def test_schemas_register_then_production_mode_writes(
    registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cli_registry(monkeypatch, registry)
    result = runner.invoke(app, ["schemas", "register"])
    assert result.exit_code == 0, result.output
    assert "registered c.research.patient-value (version 1" in result.output
    assert sorted(registry.get_subjects()) == sorted(
        ["c.hl7.raw-value", "c.hl7.events-value"]
        + [f"c.{topics.research(t)}-value" for t in research_schemas(Policy.load(None))]
    )
    again = runner.invoke(app, ["schemas", "register"])
    assert again.exit_code == 0 and "unchanged c.hl7.events-value (version 1" in again.output

    # Production mode finds every schema the worker writes with.
    names = {tid: f"c.{name}" for tid, name in _catalog_names().items()}
    codec.use_registry_client(registry, auto_register=False, topic_names=names)
    deid = DeidSettings(Policy.load(None), KEY, True)
    outputs = parse_step(None, _raw("ORU^R01"), SEOUL, deid)
    assert {o.topic_id for o in outputs} == {
        topics.EVENTS,
        "research.observation",
        "research.order",
    }
    assert all(o.value[:1] == b"\x00" for o in outputs)


def test_an_incompatible_change_is_refused(registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registered research contract wrote birth_year as a string; the current one reads an
    int, which cannot read those values: refused, with the field, and nothing is sent."""
    contract = research_schema(Policy.load(None), "Patient").definition
    older = json.loads(json.dumps(contract))
    for field in older["fields"]:
        if field["name"] == "birth_year":
            field["type"] = ["null", "string"]
    _register(registry, "c.research.patient", older)
    _cli_registry(monkeypatch, registry)

    result = runner.invoke(app, ["schemas", "register"])
    assert result.exit_code == 1
    assert "refused c.research.patient-value" in result.output
    assert "birth_year: writer type string matches no reader branch" in result.output
    assert registry.get_versions("c.research.patient-value") == [1]
    assert "registered c.hl7.events-value" in result.output  # the others go on

    # The union of hl7.events: a record type that is gone, or a PHI class loosened, is refused.
    loosened = json.loads(json.dumps(codec.events_union()))
    for record in loosened:
        for field in record["fields"]:
            if field["name"] == "patient_key":
                field["phi"] = "none"
    outcomes = subjects.register(registry, {"c.hl7.events-value": loosened[1:]})
    assert [o.status for o in outcomes] == ["refused"]
    assert outcomes[0].reasons[0] == "Allergy: schema: released record type is gone"
    assert "Diagnosis: patient_key: PHI class changed from direct to none" in outcomes[0].reasons
    assert registry.get_versions("c.hl7.events-value") == [1]

    # A compatible change (a policy that lets one more field out) registers a new version.
    wider = json.loads(json.dumps(contract))
    wider["fields"].append(
        {"name": "city", "type": ["null", "string"], "default": None, "phi": "quasi", "doc": "x"}
    )
    _register(registry, "c.research.patient", contract)
    outcomes = subjects.register(registry, {"c.research.patient-value": wider})
    assert [(o.status, o.version) for o in outcomes] == [("registered", 3)]


def test_research_values_decode_as_written_and_identified_as_current(registry: Any) -> None:
    """In registry mode a research value decodes with its registered contract (no dropped
    field comes back as null); an identified one resolves to this release's schema."""
    codec.use_registry_client(registry, auto_register=True)
    policy = Policy.load("safe-harbor")
    outputs = parse_step(None, _raw("ADT^A04"), SEOUL, DeidSettings(policy, KEY, True))
    research = [o for o in outputs if o.topic_id == "research.patient"]
    [(name, record)] = [codec.decode(o.value, o.topic_id) for o in research]
    assert name == "Patient"
    contract = research_schema(policy, "Patient")
    assert set(record) == {f["name"] for f in contract.definition["fields"]}
    assert record["received_at"] == datetime(2026, 1, 1, tzinfo=UTC)  # safe-harbor: the year
    identified = [codec.decode(o.value) for o in outputs if o.topic_id == topics.EVENTS]
    assert all(set(r) == set(codec.schema(n).phi_classes()) for n, r in identified)


def test_an_unregistered_research_contract_stops_the_worker_not_dlqs(registry: Any) -> None:
    """A policy whose contracts are not registered: the research encode raises RegistryError
    (the worker stops with the subject named) instead of sending every event to the DLQ."""
    codec.use_registry_client(registry, auto_register=False)
    _register(registry, "hl7.events", codec.events_union())
    deid = DeidSettings(Policy.load("limited"), KEY, True)
    with pytest.raises(codec.RegistryError, match=r"research\.patient-value"):
        parse_step(None, _raw("ADT^A04"), SEOUL, deid)
