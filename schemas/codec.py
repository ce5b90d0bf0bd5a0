"""Avro encoding of the event contracts: single-object (the default) or a schema registry.

Embedded default: every value on an hl7bus topic is `C3 01` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form + the Avro binary body (Avro
specification, "Single object encoding"), so any Avro library that holds our published `*.avsc`
files can decode it.

The writers are the identified schemas (`schemas/*.avsc`) and the research contracts: the
schema of a research topic is derived from the identified one and a de-identification policy
(streams/deid/contract.py), carries the policy hash in the schema-level property
`hl7bus.deid_policy` (POLICY_PROPERTY), and is published for the shipped profiles as
`schemas/research/<profile>.<type>.avsc`. `decode` knows every packaged writer by fingerprint,
and those a process adds with `add_writer` (the contracts of a policy file of its own).

With a schema registry configured (`schemas.registry_url`, see `configure`): values use the
Confluent wire format through confluent-kafka's SchemaRegistryClient and AvroSerializer, one
subject per topic, `<topic>-value` (TopicNameStrategy): a research topic's subject holds its
research contract; `hl7.raw`'s the RawMessage schema; `hl7.events`, which carries every event
type, holds one union of the identified event records (`events_union`). In production mode
nothing is registered by the bus: the exact schema a value is written with must already be
registered under its subject (`hl7bus schemas register`), else RegistryError. `decode` reads
both formats, so a topic can be migrated.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import BaseModel, ConfigDict, Field

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
# Schema-level properties of a research contract: the hash of the de-identification policy that
# made it (Policy.digest) and the policy's name. Avro keeps unknown attributes as metadata and
# leaves them out of the parsing canonical form, so they change neither the wire format nor the
# fingerprint; a registry stores them with the schema.
POLICY_PROPERTY = "hl7bus.deid_policy"
PROFILE_PROPERTY = "hl7bus.deid_profile"
# Kafka header that names the event type, so consumers can route without decoding.
EVENT_TYPE_HEADER = "hl7bus.event_type"
_HEADER_LEN = len(SINGLE_OBJECT_MAGIC) + 8


class CodecError(ValueError):
    """A value that is not a single-object-encoded record of a known schema."""


class RegistryError(RuntimeError):
    """The schema registry cannot serve a subject or schema (a deployment problem, not bad data:
    it is not a CodecError, so it is not sent to the DLQ as one)."""


class SchemasConfig(BaseModel):
    """How values are encoded: Avro single-object encoding, or a Confluent schema registry."""

    model_config = ConfigDict(extra="forbid")

    registry_url: str | None = Field(
        None,
        description=(
            "Schema registry URL (http(s)://host:8081). Unset: Avro single-object encoding with "
            "the packaged schemas, no registry."
        ),
    )
    auto_register: bool = Field(
        False,
        description=(
            "Register each topic's schema under its subject on first use (development only). "
            "Off: the exact schema must already be registered under the subject (hl7bus schemas "
            "register); an unregistered one is an error."
        ),
    )
    client: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra SchemaRegistryClient properties (basic.auth.user.info, ssl.*); values whose "
            "key mentions password or secret are masked in `config show`."
        ),
    )


@dataclass(frozen=True)
class EventSchema:
    name: str
    definition: dict[str, Any]
    parsed: Any
    fingerprint: bytes

    def phi_classes(self) -> dict[str, str]:
        """Field name -> PHI class ("direct", "quasi", "date", "free_text", "none")."""
        return {f["name"]: f["phi"] for f in self.definition["fields"]}

    @property
    def full_name(self) -> str:
        namespace = self.definition.get("namespace")
        return f"{namespace}.{self.name}" if namespace else self.name

    @property
    def policy(self) -> str | None:
        """The policy hash of a research contract (None for an identified schema)."""
        value = self.definition.get(POLICY_PROPERTY)
        return str(value) if value is not None else None


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
    return load_schema(json.loads(text))


def load_schema(definition: dict[str, Any]) -> EventSchema:
    """A schema given as JSON (e.g. a derived research contract), parsed and fingerprinted."""
    parsed = fastavro.parse_schema(definition)
    canonical = to_parsing_canonical_form(parsed)
    return EventSchema(
        name=definition["name"],
        definition=definition,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


@cache
def published_contracts() -> dict[str, dict[str, EventSchema]]:
    """The published research contracts of the shipped profiles (schemas/research/
    <profile>.<type>.avsc) by profile and record name."""
    found: dict[str, dict[str, EventSchema]] = {}
    for entry in resources.files(__package__).joinpath("research").iterdir():
        if entry.name.endswith(".avsc"):
            loaded = _load(entry.read_text(encoding="utf-8"))
            profile = str(loaded.definition.get(PROFILE_PROPERTY, entry.name.split(".")[0]))
            found.setdefault(profile, {})[loaded.name] = loaded
    return found


# Writers a process added at run time (add_writer): the research contracts of its policy.
_added: dict[bytes, EventSchema] = {}


def add_writer(writer: EventSchema) -> None:
    """Let `decode` read values written with `writer` (a derived research contract)."""
    _added.setdefault(writer.fingerprint, writer)


@cache
def _by_fingerprint() -> dict[bytes, EventSchema]:
    found = {s.fingerprint: s for p in published_contracts().values() for s in p.values()}
    found.update((s.fingerprint, s) for s in schemas().values())  # identified ones win a tie
    return found


@cache
def _released() -> dict[bytes, tuple[EventSchema, Any]]:
    return released_writers(resources.files(__package__).joinpath("released"))


def released_writers(root: Traversable | Path) -> dict[bytes, tuple[EventSchema, Any]]:
    """Writer schemas of released versions (<root>/v*/, research contracts under
    v*/research/), for values on the topics that were written before an upgrade, each with the
    reader it is resolved to on decode: the current schema of the same record (of the same
    profile, for a research contract; one whose profile is gone decodes as written)."""
    found: dict[bytes, tuple[EventSchema, Any]] = {}
    if not root.is_dir():
        return found
    for version in root.iterdir():
        if not version.is_dir():
            continue
        research = version.joinpath("research")
        entries = [*version.iterdir(), *(research.iterdir() if research.is_dir() else ())]
        for entry in entries:
            if not entry.name.endswith(".avsc"):
                continue
            writer = _load(entry.read_text(encoding="utf-8"))
            if writer.name not in schemas() or writer.fingerprint in _by_fingerprint():
                continue
            if writer.policy is None:
                found[writer.fingerprint] = (writer, schemas()[writer.name].parsed)
            else:
                profile = str(writer.definition.get(PROFILE_PROPERTY))
                current = published_contracts().get(profile, {}).get(writer.name)
                found[writer.fingerprint] = (writer, current.parsed if current else None)
    return found


def schema(event_type: str) -> EventSchema:
    try:
        return schemas()[event_type]
    except KeyError:
        raise CodecError(
            f"unknown event type {event_type!r}; known: {', '.join(sorted(schemas()))}"
        ) from None


def encode(
    event_type: str,
    record: Mapping[str, Any],
    topic: str | None = None,
    writer: EventSchema | None = None,
) -> bytes:
    """Encode a record for `topic` (a topic name or catalog id; only the registry mode uses it,
    for the subject; default: hl7.raw for RawMessage, else hl7.events) with `writer` (a research
    contract; default: the packaged schema of `event_type`)."""
    registry = _registry
    if registry is not None:
        return registry.encode(event_type, record, topic, writer)
    return encode_single_object(event_type, record, writer)


def encode_single_object(
    event_type: str, record: Mapping[str, Any], writer: EventSchema | None = None
) -> bytes:
    target = writer or schema(event_type)
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC)
    out.write(target.fingerprint)
    fastavro.schemaless_writer(out, target.parsed, record)  # not copied: fastavro only reads it
    return out.getvalue()


def decode(data: bytes, topic: str | None = None) -> tuple[str, dict[str, Any]]:
    """Return (event type, record) of a single-object or (registry mode) Confluent value."""
    if data[:1] == CONFLUENT_MAGIC:
        registry = _registry
        if registry is None:
            raise CodecError(
                f"not an Avro single-object value ({len(data)} bytes, bad magic: Confluent "
                "wire format, but no schema registry is configured)"
            )
        return registry.decode(data, topic)
    return decode_single_object(data)


def decode_single_object(data: bytes) -> tuple[str, dict[str, Any]]:
    if len(data) < _HEADER_LEN or data[:2] != SINGLE_OBJECT_MAGIC:
        raise CodecError(f"not an Avro single-object value ({len(data)} bytes, bad magic)")
    fp = data[2:_HEADER_LEN]
    writer = _by_fingerprint().get(fp) or _added.get(fp)
    reader = None
    if writer is None:
        released = _released().get(fp)
        if released is None:
            raise CodecError(f"unknown schema fingerprint {fp.hex()}")
        writer, reader = released  # an older release, resolved to the current schema
    try:
        body = io.BytesIO(data[_HEADER_LEN:])
        record = fastavro.schemaless_reader(body, writer.parsed, reader)
    except Exception as exc:  # fastavro raises several types on truncated or corrupt bodies
        raise CodecError(f"corrupt {writer.name} body: {type(exc).__name__}") from exc
    if not isinstance(record, dict):
        raise CodecError(f"{writer.name} body did not decode to a record")
    return writer.name, record


# -- schema registry mode -------------------------------------------------------------------------

CONFLUENT_MAGIC = b"\x00"
_registry: _Registry | None = None


def configure(cfg: SchemasConfig, topic_names: Mapping[str, str] | None = None) -> None:
    """Select the encoding for this process: registry mode when cfg.registry_url is set.

    topic_names maps catalog ids (raw, events, research.patient, ...) to topic names, so that
    callers may name topics by id. Components call this once at start (the CLI does).
    """
    global _registry
    if cfg.registry_url is None:
        _registry = None
        return
    _registry = _Registry(registry_client(cfg), cfg.auto_register, dict(topic_names or {}))


def registry_client(cfg: SchemasConfig) -> Any:
    """A SchemaRegistryClient for cfg.registry_url (mock://name: the in-process mock)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    if cfg.registry_url is None:
        raise RegistryError("schemas.registry_url is not set")
    conf = {**cfg.client, "url": cfg.registry_url}
    if cfg.registry_url.startswith("mock://"):
        return SchemaRegistryClient.new_client(conf)  # tests: the in-process mock registry
    return SchemaRegistryClient(conf)


def use_registry_client(
    client: Any, auto_register: bool, topic_names: Mapping[str, str] | None = None
) -> None:
    """Registry mode with a given SchemaRegistryClient (tests)."""
    global _registry
    _registry = _Registry(client, auto_register, dict(topic_names or {}))


def reset() -> None:
    """Back to single-object encoding."""
    global _registry
    _registry = None


def subject(topic: str) -> str:
    """The registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


def events_union() -> list[dict[str, Any]]:
    """The schema of hl7.events in registry mode: one union of the identified event records
    (one subject per topic, and hl7.events carries every event type)."""
    return [schemas()[name].definition for name in sorted(schemas()) if name != "RawMessage"]


class _Registry:
    def __init__(self, client: Any, auto_register: bool, topic_names: dict[str, str]) -> None:
        self.client = client
        self.auto_register = auto_register
        self.topic_names = topic_names
        self.events_topic = self.topic("", "events")
        self._serializers: dict[tuple[str, bytes, str | None], Any] = {}
        self._deserializers: dict[int, tuple[Any, str | None]] = {}

    def topic(self, event_type: str, topic: str | None) -> str:
        """The topic name for a name or catalog id (raw, events: hl7.raw, hl7.events when
        configure was given no names, as in topics.yaml; research ids are their names)."""
        if topic is None:
            topic = "raw" if event_type == "RawMessage" else "events"
        if topic in self.topic_names:
            return self.topic_names[topic]
        return f"hl7.{topic}" if topic in ("raw", "events") else topic

    def _serializer(self, topic: str, writer: EventSchema) -> Any:
        # One per topic and writer: a serializer remembers one schema id.
        key = (topic, writer.fingerprint, writer.policy)
        found = self._serializers.get(key)
        if found is None:
            from confluent_kafka.schema_registry.avro import AvroSerializer

            definition: Any = events_union() if topic == self.events_topic else writer.definition
            found = AvroSerializer(
                self.client,
                json.dumps(definition),
                # Production: look the exact schema up under the subject (no use.latest.version:
                # a value is never written with a schema other than its own contract).
                conf={"auto.register.schemas": self.auto_register},
            )
            self._serializers[key] = found
        return found

    def encode(
        self,
        event_type: str,
        record: Mapping[str, Any],
        topic: str | None,
        writer: EventSchema | None,
    ) -> bytes:
        from confluent_kafka.serialization import MessageField, SerializationContext

        name = self.topic(event_type, topic)
        writer = writer or schema(event_type)
        serializer = self._serializer(name, writer)
        # A union takes the branch by name (fastavro's tuple notation), not by trying each.
        value: Any = (writer.full_name, dict(record)) if name == self.events_topic else dict(record)
        try:
            encoded = serializer(value, SerializationContext(name, MessageField.VALUE))
        except Exception as exc:
            if _is_registry_error(exc):
                raise RegistryError(
                    f"schema registry: subject {subject(name)!r} has no version of the "
                    f"{event_type} schema this process writes ({_registry_reason(exc)}); "
                    "register it with `hl7bus schemas register` (or set schemas.auto_register "
                    "in development)"
                ) from None
            raise CodecError(f"{event_type} record does not fit its schema: {exc}") from exc
        if encoded is None:
            raise CodecError(f"{event_type} record encoded to nothing")
        return bytes(encoded)

    def _deserializer(self, schema_id: int) -> tuple[Any, str | None]:
        """(deserializer, record name; None for the events union, whose values name their
        record) for a registered schema id.

        Readers: the current events union or packaged schema, so that older registered
        versions resolve to what this release knows; a research contract is read as written
        (its shape is the policy's)."""
        found = self._deserializers.get(schema_id)
        if found is not None:
            return found
        from confluent_kafka.schema_registry.avro import AvroDeserializer

        try:
            registered = json.loads(self.client.get_schema(schema_id).schema_str)
        except Exception as exc:
            if _is_registry_error(exc):
                raise RegistryError(
                    f"schema registry: schema id {schema_id} not found ({_registry_reason(exc)})"
                ) from None
            raise
        union = isinstance(registered, list)
        name: str | None = None
        if union:
            reader: str | None = json.dumps(events_union())
        elif not isinstance(registered, dict) or registered.get("name") not in schemas():
            raise CodecError(f"registered schema {schema_id} is not one of ours")
        else:
            name = str(registered["name"])
            reader = None if POLICY_PROPERTY in registered else json.dumps(schema(name).definition)
        found = (AvroDeserializer(self.client, reader, return_record_name=union), name)
        self._deserializers[schema_id] = found
        return found

    def decode(self, data: bytes, topic: str | None) -> tuple[str, dict[str, Any]]:
        from confluent_kafka.serialization import MessageField, SerializationContext

        if len(data) < 5:
            raise CodecError(f"not a Confluent wire-format value ({len(data)} bytes)")
        # The deserializer parses the header itself; the id only picks the reader.
        deserializer, name = self._deserializer(int.from_bytes(data[1:5], "big"))
        ctx = SerializationContext(self.topic("", topic or "events"), MessageField.VALUE)
        try:
            decoded = deserializer(data, ctx)
        except Exception as exc:
            if _is_registry_error(exc):
                raise RegistryError(f"schema registry: {_registry_reason(exc)}") from None
            raise CodecError(f"corrupt value: {type(exc).__name__}") from exc
        if name is None and isinstance(decoded, tuple):
            full_name, decoded = decoded
            name = str(full_name).rsplit(".", 1)[-1]
        if not isinstance(decoded, dict) or name not in schemas():
            raise CodecError("registry value did not decode to one of our records")
        return name, decoded


def _is_registry_error(exc: BaseException) -> bool:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return isinstance(exc, SchemaRegistryError)


def _registry_reason(exc: BaseException) -> str:
    message = getattr(exc, "error_message", None) or str(exc)
    code = getattr(exc, "error_code", None)
    return f"{message} (error {code})" if code else str(message)
