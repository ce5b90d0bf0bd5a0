"""The worker's two stages as plain functions over bytes: what goes where, and why.

The faust runtime only moves records; everything it decides comes from here, so the stages are
tested without Kafka and the runtime stays replaceable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from fastavro.validation import ValidationError as AvroValidationError

from hl7bus.hl7v2 import Hl7ParseError
from hl7bus.schemas import codec, topics
from hl7bus.streams.deid import DeidError, Policy, PolicyError, Pseudonymizer, deidentify
from hl7bus.streams.deid import metrics as deid_metrics
from hl7bus.streams.deid.contract import research_schema
from hl7bus.streams.parse import Event, events_from_raw

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Output:
    topic_id: str  # catalog id: events, dlq, research.<type>
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


DEID_STAGE = "deidentifying"  # the hl7bus.stage header of de-identification's DLQ records


def _dlq(key: bytes | None, value: bytes, stage: str, reason: str) -> Output:
    # Reason headers name the stage and an error code; never a value from the message.
    return Output(
        topics.DLQ,
        key,
        value,
        [("hl7bus.stage", stage.encode()), ("hl7bus.reason", reason.encode())],
    )


@dataclass(frozen=True)
class Sighting:
    """A received message as the duplicate check sees it: feed|MSH-10 and when it came."""

    key: str
    received_us: int


def dedupe_check(
    value: bytes, first_seen: Callable[[str], int | None], window_us: int
) -> tuple[Sighting | None, bool]:
    """(the sighting to remember once the outputs are delivered, is it a duplicate send).

    A duplicate is the same feed and MSH-10 received again within the window after its first
    sighting. Records that cannot be decoded, or have no control id, are never duplicates (the
    parse step sends them to the DLQ or maps them as usual).
    """
    try:
        _, envelope = codec.decode(value)
    except codec.CodecError:
        return None, False
    control_id = envelope.get("control_id")
    if not control_id:
        return None, False
    received = envelope["received_at"]
    received_us = int(received.timestamp() * 1_000_000)
    sighting = Sighting(f"{envelope['feed']}|{control_id}", received_us)
    first = first_seen(sighting.key)
    if first is not None and 0 <= received_us - first <= window_us:
        return None, True
    return sighting, False


@dataclass(frozen=True)
class DeidSettings:
    """What de-identification needs: the policy, the key ring, and whether the leak check runs."""

    policy: Policy
    pseudonymize: Pseudonymizer
    leak_check: bool


def parse_step(
    key: bytes | None,
    value: bytes,
    zone: tzinfo,
    deid: DeidSettings | None = None,
    identified: bool = True,
) -> list[Output]:
    """hl7.raw record -> typed events for hl7.events, or one DLQ record.

    With ``deid`` (the worker runs both stages), the research form of each event follows its
    identified form, made from the event in memory: the same result as :func:`deidentify_step`
    on the encoded event (a test checks it), without decoding it again. ``identified=False``
    (``worker.identified_output: false``, only with ``deid``): no hl7.events outputs and no
    identified encode; the research forms and the DLQ records are those made with it on.
    """
    try:
        _, envelope = codec.decode(value)
        events = events_from_raw(envelope, zone)
        encoded = [_identified(e, key) for e in events] if identified else []
    except codec.CodecError:
        return [_dlq(key, value, "parsing", "undecodable_envelope")]
    except Hl7ParseError:
        return [_dlq(key, value, "parsing", "hl7_parse_error")]
    except (AvroValidationError, ValueError, TypeError):
        return [_dlq(key, value, "normalizing", "event_invalid")]
    except codec.RegistryError:
        raise  # a deployment problem (unregistered subject): stop, do not DLQ every record
    except Exception:
        # A mapping bug must not stop the partition: the record waits in the DLQ for a replay.
        return [_dlq(key, value, "parsing", "internal_error")]
    if deid is None:
        return encoded
    if identified:
        return encoded + [
            research_output(e.type, e.record, out.value, deid)
            for e, out in zip(events, encoded, strict=True)
        ]
    try:
        return [research_output(e.type, e.record, None, deid) for e in events]
    except (AvroValidationError, ValueError, TypeError):
        # An event that failed de-identification does not encode either (the DLQ record is its
        # identified form): the message goes to the DLQ whole, as the identified encode sends
        # it there when the identified output is on.
        return [_dlq(key, value, "normalizing", "event_invalid")]


def _identified(event: Event, key: bytes | None) -> Output:
    return Output(
        topics.EVENTS,
        event.key.encode("utf-8") if event.key else key,
        codec.encode(event.type, event.record, topic=topics.EVENTS),
        [(codec.EVENT_TYPE_HEADER, event.type.encode())],
    )


def deidentify_step(
    value: bytes, policy: Policy, pseudonymize: Pseudonymizer, leak_check: bool
) -> list[Output]:
    """hl7.events record -> its research form, or one DLQ record (see :func:`research_output`).

    The stage on its own: a worker that runs it without the parse stage (re-making the research
    topics from stored events under a new policy, or scaling the stages apart)."""
    try:
        event_type, record = codec.decode(value)
    except codec.CodecError:
        return [_deid_dlq(value, "undecodable_event")]
    return [
        research_output(event_type, record, value, DeidSettings(policy, pseudonymize, leak_check))
    ]


def research_output(
    event_type: str, record: dict[str, Any], source: bytes | None, deid: DeidSettings
) -> Output:
    """One identified event (``source``: its encoded form; None: encoded here only for a DLQ
    record) -> its research form encoded with the policy's research contract, or a DLQ record
    (restricted hl7.dlq, stage deidentifying, an error code, the identified form as the value).
    Fails closed. Counts refusals by code, leaks, and actions per (action, PHI class)
    (streams/deid/metrics.py; never values)."""
    counts: dict[tuple[str, str], int] = {}
    policy = deid.policy
    topic_id = topics.research(event_type)
    code: str | None = None  # why the event goes to the DLQ instead
    try:
        research = deidentify(
            event_type, record, policy, deid.pseudonymize, deid.leak_check, counts=counts
        )
        writer = research_schema(policy, event_type)
        encoded = codec.encode(event_type, research, topic=topic_id, writer=writer)
        key = research.get("patient_key")
    except DeidError as exc:
        code = exc.code
    except (PolicyError, AvroValidationError, ValueError, TypeError):
        # e.g. a policy that drops a required field: no research contract, nothing to encode.
        code = "unencodable_research_event"
    except codec.RegistryError:
        raise  # a deployment problem (unregistered subject): stop, do not DLQ every record
    except Exception:
        # Fail closed: whatever went wrong, nothing reaches a research topic.
        code = "internal_error"
    if code is not None:
        if source is None:  # no identified output: its encoding exists only for the DLQ
            source = codec.encode(event_type, record, topic=topics.EVENTS)
        return _deid_dlq(source, code)
    deid_metrics.ACTIONS_DONE.add(counts)
    return Output(
        topic_id,
        key.encode("utf-8") if isinstance(key, str) else None,
        encoded,
        [
            (codec.EVENT_TYPE_HEADER, event_type.encode()),
            ("hl7bus.policy", policy.digest.encode()),
        ],
    )


def _deid_dlq(value: bytes, code: str) -> Output:
    deid_metrics.ERRORS.labels(code).inc()
    if code == "leak":
        deid_metrics.LEAKS.inc()
    return _dlq(None, value, DEID_STAGE, code)
