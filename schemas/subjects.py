"""The schema registry subjects of the catalog topics, and their registration
(`hl7bus schemas register`).

One subject per topic, `<topic>-value` (TopicNameStrategy, see codec.py): `hl7.raw` holds the
RawMessage schema, `hl7.events` the union of the identified event records, each
`research.<type>` the research contract of its type under the deployment's policy. `hl7.dlq` has
none: a DLQ value is the failed input as it was, with its own schema id.

Registration checks each new schema against the subject's latest version with this package's
own rules (schemas/compat.py: Avro backward compatibility, and no PHI class change) before the
registry sees it, so an incompatible change is refused with field-level reasons whatever the
registry's compatibility setting; the registry's own refusal (HTTP 409) is reported too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hl7bus.schemas import codec, compat, topics


def contracts(
    topic_names: Mapping[str, str], research: Mapping[str, codec.EventSchema]
) -> dict[str, Any]:
    """Subject -> schema (JSON) of every catalog topic with values of its own: raw, events and
    the research topics of the event types in `research` (event type -> its contract)."""
    out: dict[str, Any] = {
        codec.subject(topic_names.get(topics.RAW, "hl7.raw")): codec.schema(
            "RawMessage"
        ).definition,
        codec.subject(topic_names.get(topics.EVENTS, "hl7.events")): codec.events_union(),
    }
    for event_type, contract in sorted(research.items()):
        topic_id = topics.research(event_type)
        if topic_id in topic_names:
            out[codec.subject(topic_names[topic_id])] = contract.definition
    return out


@dataclass(frozen=True)
class Outcome:
    subject: str
    status: str  # registered, unchanged, refused
    schema_id: int | None = None
    version: int | None = None
    reasons: list[str] = field(default_factory=list)


def register(client: Any, wanted: Mapping[str, Any]) -> list[Outcome]:
    """Register each subject's schema unless it is already its latest version; refuse (and send
    nothing) when it cannot read what the latest version wrote."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    outcomes = []
    for subject, definition in wanted.items():
        text = json.dumps(definition)
        try:
            latest = client.get_latest_version(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise codec.RegistryError(f"schema registry: {subject}: {exc}") from None
            latest = None
        if latest is not None:
            if latest.schema.schema_str == text:
                outcomes.append(Outcome(subject, "unchanged", latest.schema_id, latest.version))
                continue
            problems = compat.check_subject(definition, json.loads(latest.schema.schema_str))
            if problems:
                reasons = [str(p) for p in problems]
                outcomes.append(Outcome(subject, "refused", None, latest.version, reasons))
                continue
        try:
            done = client.register_schema_full_response(subject, Schema(text, "AVRO"))
        except SchemaRegistryError as exc:
            if exc.http_status_code != 409:  # 409: incompatible by the registry's own check
                raise codec.RegistryError(f"schema registry: {subject}: {exc}") from None
            outcomes.append(Outcome(subject, "refused", reasons=[f"registry: {exc}"]))
            continue
        version = done.version
        if version is None:  # a real registry answers with the id only
            version = client.lookup_schema(subject, Schema(text, "AVRO")).version
        outcomes.append(Outcome(subject, "registered", done.schema_id, version))
    return outcomes
