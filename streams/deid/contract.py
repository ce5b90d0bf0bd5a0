"""Research contracts: the Avro schema of a research topic, derived from the identified schema
and the effective policy (docs/architecture.md, Privacy: only what the policy lets out).

:func:`derive` is pure (identified schema + policy -> schema JSON):

- a field the policy drops, or does not name, is **absent**, not null; the engine's own fields
  (``pseudonym_key_id``, ``deid_policy``) stay;
- a field keeps its type, position and PHI class (that of its source) and gains ``deid``, its
  action; the doc of a field that was acted on says what was done ("Keyed HMAC-SHA-256
  pseudonym of: ...", "Shifted by ...");
- the record keeps its name and namespace, so Avro schema resolution between the identified and
  research forms works (both are ``hl7bus.v1.Patient``) and decoding names the same event type;
  the policy hash (:attr:`Policy.digest`) and name go into the schema-level properties
  ``hl7bus.deid_policy`` and ``hl7bus.deid_profile`` and into the doc. Properties are not part
  of Avro's parsing canonical form: the single-object fingerprint follows the fields alone (two
  policies that let out the same fields share a writer fingerprint, and the ``deid_policy``
  field and header tell their records apart), while a registry, which stores the schema as
  written, records each policy as its own version under the topic's subject;
- a field the identified schema requires (no default) cannot be dropped: a research record
  without its event id or receipt time would be of no use to any sink (:class:`PolicyError`).

:func:`research_schema` is the parsed contract, made once per policy and event type; the codec
learns it so that this process can read what it writes. The shipped profiles' contracts are
published in ``schemas/research/`` (``hl7bus schemas research`` writes them; a test and
``hl7bus schemas check`` compare them with this derivation).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from hl7bus.schemas import codec
from hl7bus.streams.deid.errors import PolicyError
from hl7bus.streams.deid.fields import ENGINE_FIELDS
from hl7bus.streams.deid.policy import Policy

_TEXT_DATES = {
    "shift": "shifted with the patient's offset",
    "remove": "removed",
    "keep": "kept",
}


def kept(field: str, actions: Mapping[str, str]) -> bool:
    """Whether a field is part of the research contract under these actions."""
    return field in ENGINE_FIELDS or actions.get(field, "drop") != "drop"


def derive(identified: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
    """The research contract (Avro schema JSON) of one identified record schema."""
    event_type = str(identified["name"])
    actions = policy.actions.get(event_type)
    if actions is None:
        raise PolicyError(f"policy {policy.name} has no entry for {event_type}")
    named = _named_types(identified, identified.get("namespace", ""))
    defined: set[str] = set()
    fields = []
    for field in identified["fields"]:
        name = field["name"]
        if not kept(name, actions):
            if _required(field):
                raise PolicyError(
                    f"policy {policy.name}: {event_type}.{name}: required by the {event_type} "
                    "contract (no default), so it cannot be dropped; name it with an action"
                )
            continue
        action = "engine" if name in ENGINE_FIELDS else actions[name]
        out = dict(field)  # the attributes in their order; type and doc replaced in place
        out["type"] = _with_definitions(field["type"], named, defined, identified)
        out["doc"] = _doc(name, action, str(field.get("doc", "")), policy)
        out["deid"] = action
        fields.append(out)
    contract = {k: v for k, v in identified.items() if k != "fields"}
    contract["doc"] = (
        f"{identified.get('doc', '')} Research contract of de-identification policy "
        f"{policy.name} (hash {policy.digest}): only the fields the policy lets out; a field "
        f"it drops is absent. Generated from the identified {event_type} schema."
    ).strip()
    contract[codec.POLICY_PROPERTY] = policy.digest
    contract[codec.PROFILE_PROPERTY] = policy.name
    contract["fields"] = fields
    return contract


def _required(field: Mapping[str, Any]) -> bool:
    kind = field["type"]
    nullable = isinstance(kind, list) and "null" in kind
    return "default" not in field and not nullable


def _doc(name: str, action: str, doc: str, policy: Policy) -> str:
    if name == "deid_policy":
        return (
            f"Hash of the de-identification policy that made this event: {policy.digest} under "
            "this contract (also in the hl7bus.policy header)."
        )
    low, high = policy.date_shift
    says = {
        "pseudonymize": "Keyed HMAC-SHA-256 pseudonym (32 hex digits; the key's id is in "
        "pseudonym_key_id) of: ",
        "shift_date": f"Shifted by the patient's secret offset ({low} to {high} days, the same "
        "for all the patient's events, so intervals are kept): ",
        "truncate_date:year": "Truncated to the year (an instant to Jan 1 00:00 UTC, a date "
        "to YYYY): ",
        "truncate_date:month": "Truncated to the month (an instant to the 1st 00:00 UTC, a "
        "date to YYYY-MM): ",
        "generalize:age90": "Generalized: a birth year that makes the patient 90 or older at "
        "the event is that of a 90-year-old: ",
        "generalize:zip3": "Generalized to the first 3 digits of a US ZIP code (000 for areas "
        "of 20,000 people or fewer, null for anything else): ",
        "generalize:kr_postal3": "Generalized to the first 3 digits of a Korean postal code "
        "(the si/gun/gu district; null for anything else): ",
        "scrub": "Free text scrubbed of the message's names and identifiers and of identifier "
        f"patterns, dates in it {_TEXT_DATES[policy.free_text_dates]}: ",
    }
    return says.get(action, "") + doc


def _full(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _named_types(
    schema: Any, namespace: str, found: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Full name -> definition of the records, enums and fixed types declared in a schema."""
    found = {} if found is None else found
    if isinstance(schema, list):
        for branch in schema:
            _named_types(branch, namespace, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            found[_full(schema["name"], space)] = (schema, space)
            for field in schema.get("fields", []):
                _named_types(field["type"], space, found)
        elif kind == "array":
            _named_types(schema["items"], namespace, found)
        elif kind == "map":
            _named_types(schema["values"], namespace, found)
    return found


def _with_definitions(
    schema: Any, named: dict[str, Any], defined: set[str], top: Mapping[str, Any]
) -> Any:
    """A field type, copied, with each named type defined at its first use in the contract:
    when the field that declared a type is dropped, a later field that refers to it by name
    carries the declaration instead."""
    namespace = top.get("namespace", "")
    if isinstance(schema, list):
        return [_with_definitions(b, named, defined, top) for b in schema]
    if isinstance(schema, str):
        full = _full(schema, namespace)
        if full in named and full not in defined:
            declaration, space = named[full]
            moved = _with_definitions(declaration, named, defined, top)
            if space != namespace and "namespace" not in moved and "." not in moved["name"]:
                moved["namespace"] = space
            return moved
        return schema
    if not isinstance(schema, dict):
        return schema
    out = copy.deepcopy(schema)
    kind = out.get("type")
    if kind in ("record", "enum", "fixed"):
        defined.add(_full(out["name"], out.get("namespace", namespace)))
        for field in out.get("fields", []):
            field["type"] = _with_definitions(field["type"], named, defined, top)
    elif kind == "array":
        out["items"] = _with_definitions(out["items"], named, defined, top)
    elif kind == "map":
        out["values"] = _with_definitions(out["values"], named, defined, top)
    return out


_CONTRACTS: dict[tuple[str, str], codec.EventSchema] = {}


def research_schema(policy: Policy, event_type: str) -> codec.EventSchema:
    """The parsed research contract of an event type under a policy (made once per policy hash;
    the codec learns it, so this process decodes what it writes)."""
    key = (policy.digest, event_type)
    found = _CONTRACTS.get(key)
    if found is None:
        identified = codec.schema(event_type).definition
        found = codec.load_schema(derive(identified, policy))
        codec.add_writer(found)
        _CONTRACTS[key] = found
    return found


def research_schemas(policy: Policy) -> dict[str, codec.EventSchema]:
    """The research contract of every event type the policy names; PolicyError for the first
    that cannot be made (the worker checks this at start)."""
    return {name: research_schema(policy, name) for name in sorted(policy.actions)}


def file_name(policy: Policy, event_type: str) -> str:
    """Where a contract is published: ``<policy>.<type>.avsc`` (schemas/research/ for the
    shipped profiles); a policy file's path is reduced to its stem."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", policy.name.rsplit("/", 1)[-1].removesuffix(".yaml"))
    return f"{stem}.{event_type.lower()}.avsc"


def render(contract: Mapping[str, Any]) -> str:
    """A contract as published: its attributes, then one field a line (diffs stay readable)."""
    head = [
        f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},"
        for k, v in contract.items()
        if k != "fields"
    ]
    rows = [f"    {json.dumps(f, ensure_ascii=False)}" for f in contract["fields"]]
    return "{\n" + "\n".join(head) + '\n  "fields": [\n' + ",\n".join(rows) + "\n  ]\n}\n"


def check_published(
    published: Mapping[str, str],
    identified: Mapping[str, Mapping[str, Any]],
    policies: list[Policy],
) -> list[str]:
    """How the published contracts (file name -> text) differ from their derivation from the
    identified schemas (record name -> JSON) under the policies: missing, stale, unknown files
    and contracts that are not valid Avro."""
    expected = {}
    problems = []
    for policy in policies:
        for event_type in sorted(policy.actions):
            if event_type not in identified:
                continue
            try:
                contract = derive(identified[event_type], policy)
                codec.load_schema(contract)
            except Exception as exc:  # PolicyError, or fastavro's several parse errors
                problems.append(f"{policy.name}/{event_type}: no valid research contract ({exc})")
                continue
            expected[file_name(policy, event_type)] = render(contract)
    for name in sorted(set(expected) | set(published)):
        if name not in published:
            problems.append(f"{name}: missing (run `hl7bus schemas research`)")
        elif name not in expected:
            problems.append(f"{name}: derived from no shipped policy (remove it)")
        elif published[name] != expected[name]:
            problems.append(f"{name}: differs from its derivation (run `hl7bus schemas research`)")
    return problems
