"""The event fields as the engine sees them: PHI classes and value kinds from the Avro schemas
(cached per event type), and the fields that are the engine's own."""

from __future__ import annotations

from functools import lru_cache

from hl7bus.schemas import codec

#: Set by the engine, not by the policy (a policy may name them; only "keep" is accepted).
ENGINE_FIELDS = frozenset({"pseudonym_key_id", "deid_policy"})
#: Carried on identified topics for de-identification; never on research topics.
CARRIER = "message_identifiers"


@lru_cache(maxsize=64)
def phi_classes(event_type: str) -> dict[str, str]:
    return codec.schema(event_type).phi_classes()


@lru_cache(maxsize=64)
def field_kinds(event_type: str) -> dict[str, str]:
    """field -> string, instant, date_string, int, array, other (for action checks)."""
    out: dict[str, str] = {}
    for f in codec.schema(event_type).definition["fields"]:
        branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
        kind = "other"
        for b in branches:
            if b == "null":
                continue
            if isinstance(b, dict):
                if b.get("logicalType") == "timestamp-micros":
                    kind = "instant"
                elif b.get("type") == "array":
                    kind = "array"
            elif b == "string":
                kind = "date_string" if f.get("phi") == "date" else "string"
            elif b in ("int", "long"):
                kind = "int"
        out[f["name"]] = kind
    return out
