"""The worker's two stages as plain functions over bytes: what goes where, and why.

The faust runtime only moves records; everything it decides comes from here, so the stages are
tested without Kafka and the runtime stays replaceable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from enum import StrEnum
from typing import Any

from fastavro.validation import ValidationError as AvroValidationError

from hl7bus.hl7v2 import Hl7ParseError
from hl7bus.schemas import codec, topics
from hl7bus.schemas.keys import content_digest, join_key
from hl7bus.streams.deid import DeidError, Policy, PolicyError, Pseudonymizer, deidentify
from hl7bus.streams.deid import metrics as deid_metrics
from hl7bus.streams.deid.contract import research_schema
from hl7bus.streams.parse import Event, events_from_raw
from hl7bus.streams.terminology import Terminology

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Output:
    topic_id: str  # catalog id: events, dlq, research.<type>
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


DEID_STAGE = "deidentifying"  # the hl7bus.stage header of de-identification's DLQ records
#: Header of a record an operator sent again (`hl7bus replay`, `hl7bus dlq resubmit`); its value
#: says where the record came from (``raw/<partition>/<offset>``, ``dlq/<partition>/<offset>``).
#: The worker takes a raw record carrying it as new, without remembering it for dedupe
#: (docs/operations.md, Replay).
REPLAY_HEADER = "hl7bus.replay"


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
    """A received message as the duplicate check sees it: feed|MSH-10, when it came, a digest
    of its bytes, and the raw record it came in (partition, offset) when known."""

    key: str
    feed: str
    received_us: int
    digest: str | None  # None: remembered before digests were kept (same content assumed)
    source: tuple[int, int] | None = None


class Verdict(StrEnum):
    """What the duplicate check makes of a raw record (docs/architecture.md, Delivery)."""

    NEW = "new"  # processed
    RESENT = "resent"  # the sender sent the same message again: counted, not re-emitted
    REDELIVERED = "redelivered"  # the same raw record again, its outputs already confirmed
    REUSED = "reused"  # same control id, other content: processed and counted


def dedupe_check(
    envelope: dict[str, Any] | None,
    source: tuple[int, int] | None,
    seen: Callable[[str], Sequence[Sighting]],
    window_us: int,
) -> tuple[Sighting | None, Verdict]:
    """(this record's sighting, what it is) for a raw record's decoded envelope; the sighting is
    None when the record could not be decoded (`envelope` None) or has no control id: never a
    duplicate (the parse step sends it to the DLQ or maps it as usual). `seen` gives the
    remembered sightings of a feed|MSH-10; a sighting is remembered once the outputs of a NEW
    or REUSED record are delivered.

    A duplicate is the same feed, MSH-10 and content (digest of the message bytes) received
    again within the window after a sighting; a reused control id with other content (a
    sender that reset its counter) is new content and processed. The same raw record seen
    again (`source`: its partition and offset), after a crash or rebalance that came between
    the confirmation of its outputs and the commit of its offset, is a redelivery, not a send.
    """
    if envelope is None:
        return None, Verdict.NEW
    control_id = envelope.get("control_id")
    if not control_id:
        return None, Verdict.NEW
    feed = envelope["feed"]
    sighting = Sighting(
        join_key(feed, control_id),
        feed,
        int(envelope["received_at"].timestamp() * 1_000_000),
        content_digest(envelope["raw"]),
        source,
    )
    recent = [
        s for s in seen(sighting.key) if 0 <= sighting.received_us - s.received_us <= window_us
    ]
    if source is not None and any(s.source == source for s in recent):
        return sighting, Verdict.REDELIVERED
    if any(s.digest is None or s.digest == sighting.digest for s in recent):
        return sighting, Verdict.RESENT
    return sighting, Verdict.REUSED if recent else Verdict.NEW


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
    envelope: dict[str, Any] | None = None,
    terms: Terminology | None = None,
) -> list[Output]:
    """hl7.raw record -> typed events for hl7.events, or one DLQ record.

    `envelope`: the record's value already decoded (the worker decodes it once for the
    duplicate check and the parse); None: decoded here. `terms`: the code maps (None: the
    packaged ones).

    With ``deid`` (the worker runs both stages), the research form of each event follows its
    identified form, made from the event in memory: the same result as :func:`deidentify_step`
    on the encoded event (a test checks it), without decoding it again. ``identified=False``
    (``worker.identified_output: false``, only with ``deid``): no hl7.events outputs and no
    identified encode; the research forms and the DLQ records are those made with it on.
    """
    try:
        if envelope is None:
            envelope = codec.decode(value)[1]
        events = events_from_raw(envelope, zone, terms)
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
