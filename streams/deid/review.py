"""Offline review of a de-identification policy: messages -> events -> research form, with a
field-by-field account of what the policy did (``hl7bus deid FILE... --policy P``).

The account shows identified values beside their research form: it is for a privacy officer
reviewing a policy on test or consented data before it goes live, never for logs or topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from hl7bus.hl7v2 import Message, parse_batch
from hl7bus.schemas import codec
from hl7bus.streams.deid.contract import research_schema
from hl7bus.streams.deid.engine import Step, deidentify
from hl7bus.streams.deid.errors import DeidError, PolicyError
from hl7bus.streams.deid.fields import CARRIER, ENGINE_FIELDS
from hl7bus.streams.deid.keys import Pseudonymizer
from hl7bus.streams.deid.policy import Policy
from hl7bus.streams.parse import events_from_raw

#: Printed above every review: the account holds identified values.
WARNING = (
    "CONTAINS IDENTIFIED VALUES (the 'before' column): an offline review for a privacy officer; "
    "do not store or share this output."
)
UNNAMED = "(not named: dropped)"


@dataclass
class Reviewed:
    message: int  # 1-based position in the input
    event_type: str
    research: dict[str, Any] | None  # None when refused
    error: str | None  # DLQ error code when refused
    reason: str | None
    steps: list[Step] = field(default_factory=list)


def envelope(message: Message, feed: str, received_at: datetime) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "feed": feed,
        "received_at": received_at,
        "peer": "review",
        "charset": message.charset or "utf-8",
        "control_id": message.control_id,
        "message_type": message.message_type,
        "patient_key": None,
        "raw": message.to_bytes(),
    }


def review_message(
    message: Message,
    number: int,
    policy: Policy,
    key: Pseudonymizer,
    zone: tzinfo,
    feed: str = "review",
    received_at: datetime | None = None,
) -> list[Reviewed]:
    env = envelope(message, feed, received_at or datetime.now(UTC))
    out: list[Reviewed] = []
    for event in events_from_raw(env, zone):
        steps: list[Step] = []
        try:
            research = deidentify(event.type, event.record, policy, key, True, account=steps)
            codec.encode_single_object(event.type, research, research_schema(policy, event.type))
        except DeidError as exc:
            out.append(Reviewed(number, event.type, None, exc.code, str(exc), steps))
            continue
        except (PolicyError, ValueError, TypeError) as exc:
            reason = (
                str(exc)  # names the policy and the field, never a value
                if isinstance(exc, PolicyError)
                else f"the research form does not encode: {type(exc).__name__}"
            )
            out.append(Reviewed(number, event.type, None, "unencodable_research_event", reason))
            continue
        # The carried identifiers are summarized: the account is about the event's fields.
        steps = [
            Step(s.field, s.phi, s.action, _carried_summary(s.before), s.after)
            if s.field == CARRIER and isinstance(s.before, str)
            else s
            for s in steps
        ]
        named = policy.actions.get(event.type, {})
        phi = codec.schema(event.type).phi_classes()
        for name, value in event.record.items():
            if name not in named and name not in ENGINE_FIELDS and value is not None:
                shown = _carried_summary(value) if name == CARRIER else value
                steps.append(Step(name, phi.get(name, "?"), UNNAMED, shown, None))
        for name in sorted(ENGINE_FIELDS & set(phi)):
            steps.append(Step(name, phi[name], "engine", None, research.get(name)))
        out.append(Reviewed(number, event.type, research, None, None, steps))
    return out


def _carried_summary(carried: str) -> str:
    """The carried identifiers (one per line) as a count, never their values."""
    return f"({carried.count(chr(10)) + 1} names and ids)"


def review(
    data: bytes,
    policy: Policy,
    key: Pseudonymizer,
    zone: tzinfo,
    feed: str = "review",
    received_at: datetime | None = None,
) -> list[Reviewed]:
    """Every event of every message in ``data`` (batch files and concatenations are split)."""
    out: list[Reviewed] = []
    for n, message in enumerate(parse_batch(data), 1):
        out += review_message(message, n, policy, key, zone, feed, received_at)
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def as_json(reviewed: list[Reviewed], policy: Policy, key: Pseudonymizer) -> dict[str, Any]:
    return {
        "warning": WARNING,
        "policy": {"name": policy.name, "source": policy.source, "hash": policy.digest},
        "key_id": key.key_id,
        "events": [
            {
                "message": r.message,
                "event_type": r.event_type,
                "outcome": "research" if r.research is not None else "dlq",
                "error": r.error,
                "reason": r.reason,
                "research": jsonable(r.research),
                "actions": [
                    {
                        "field": s.field,
                        "phi": s.phi,
                        "action": s.action,
                        "before": jsonable(s.before),
                        "after": jsonable(s.after),
                    }
                    for s in r.steps
                ],
            }
            for r in reviewed
        ],
    }
