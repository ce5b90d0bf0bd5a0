"""deidentify: identified event -> research event, by an allow-list policy (pure; no I/O).

A policy (YAML, :data:`PROFILES` shipped under ``streams/policies/``, or a user file) names, per
event type and field, one action:

=====================  ======================================================================
action                 effect
=====================  ======================================================================
``keep``               the value as it is (refused for ``direct`` and ``free_text`` fields)
``drop``               null (the same as not naming the field)
``pseudonymize``       keyed HMAC-SHA-256 of the value (32 hex digits); the key id goes to
                       ``pseudonym_key_id``. Refused for national ids and insurance numbers
                       (removed, never hashed: PIPA guidance, REFERENCE "Privacy")
``shift_date``         moved by the patient's offset: a whole number of days in the policy's
                       ``date_shift`` range, derived from the key and the patient key, the same
                       for every event of the patient, so intervals are preserved
``truncate_date:year`` Jan 1 of the year (instants at 00:00 UTC; ISO date strings to ``YYYY``)
``truncate_date:month`` the first of the month (``YYYY-MM``)
``generalize:age90``   a birth year: ages of 90 or more at the event are aggregated into one
                       category, the birth year of a 90-year-old (HIPAA 164.514(b)(2)(i)(C))
``generalize:zip3``    a US ZIP code to its first 3 digits; the 3-digit areas of 20,000 people
                       or fewer (:data:`RESTRICTED_ZIP3`) to ``000``; anything else null
``generalize:kr_postal3``  a Korean 5-digit postal code to its first 3 digits (the si/gun/gu
                       district); anything else null
``scrub``              free text through :func:`hl7bus.streams.scrub.scrub_text` with the
                       message's own identifiers, then patterns; dates in it shifted with the
                       patient's offset, replaced or kept (the policy's ``free_text_dates``)
=====================  ======================================================================

Allow-list: a field the policy does not name is null on the research topic (Z-segment content
in Generic events included); a policy that names an unknown event type, field or action, or an
action the field's type cannot take, is a :class:`PolicyError` at start.

Two fields are the engine's own, set whatever the policy says: ``pseudonym_key_id`` (the active
key id, when something was pseudonymized) and ``deid_policy`` (:attr:`Policy.digest`, a hash
of the effective policy, also sent as the ``hl7bus.policy`` header).

**Where free text gets the message's identifiers.** An identified event alone lacks most of
them (an Observation has no patient name). The parse stage computes
:func:`~hl7bus.streams.scrub.identifiers_of` once per message and carries the result in the
``message_identifiers`` field of every event on ``hl7.events`` (the restricted, identified
topic, which holds the raw message's content anyway). That field is ``direct``: a policy can
only drop it, so it never reaches a research topic, and nothing of it goes into a header, a
log or a metric. The same identifiers feed the leak check. An event without the field (written
before the field existed) can still be de-identified unless a non-empty field is to be scrubbed:
then it is refused (``no_identifiers``) and waits in the DLQ for a replay.

Fails closed: any error while applying the policy, or a source identifier found in the output
(the leak check), raises :class:`DeidError`; the caller sends nothing to a research topic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from hl7bus.schemas import codec
from hl7bus.streams.scrub import COMMON_WORDS, LATIN_COMMON_WORDS, Identifiers, Kind, scrub_text

#: Shipped profiles (streams/policies/<name>.yaml); the first is the embedded default.
PROFILES = ("kr-pseudonym", "safe-harbor", "limited")
DEFAULT_PROFILE = PROFILES[0]

#: Actions with their parameters; the metric label is the part before the colon.
ACTIONS = frozenset(
    {
        "keep",
        "drop",
        "pseudonymize",
        "shift_date",
        "truncate_date:year",
        "truncate_date:month",
        "generalize:age90",
        "generalize:zip3",
        "generalize:kr_postal3",
        "scrub",
    }
)
FREE_TEXT_DATES = ("shift", "remove", "keep")
#: Set by the engine, not by the policy (a policy may name them; only "keep" is accepted).
ENGINE_FIELDS = frozenset({"pseudonym_key_id", "deid_policy"})
#: Carried on identified topics for this module; never on research topics.
CARRIER = "message_identifiers"
#: Fields removed, never hashed (a keyed hash of an RRN is still an identifier under PIPA
#: guidance; a plain hash is reversible by enumeration).
NEVER_HASHED = re.compile(r"national_id|ssn|rrn|insurance|policy_number|member_number")

#: 3-digit ZIP areas of 20,000 people or fewer (HHS de-identification guidance, 2000 census):
#: Safe Harbor turns them into 000.
RESTRICTED_ZIP3 = frozenset(
    {"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878"}
    | {"879", "884", "890", "893"}
)

ERRORS = Counter(
    "hl7bus_deid_errors_total",
    "Events the de-identify stage refused (sent to the restricted DLQ), by error code.",
    ["code"],
)
LEAKS = Counter(
    "hl7bus_deid_leaks_total",
    "Events blocked because a source identifier was found in their de-identified form.",
)


class _ActionCounts:
    """hl7bus_deid_actions_total{action, phi}: a plain dict added to per event and read at
    scrape time (a labelled Counter costs a lock per label and event, about 7 per event)."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], int] = {}

    def add(self, counts: Mapping[tuple[str, str], int]) -> None:
        totals = self.totals
        for label, n in counts.items():
            totals[label] = totals.get(label, 0) + n

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "hl7bus_deid_actions",
            "Policy actions applied to non-null field values, by action and the field's PHI class.",
            labels=["action", "phi"],
        )
        for (action, phi), n in sorted(self.totals.items()):
            family.add_metric([action, phi], n)
        yield family


ACTIONS_DONE = _ActionCounts()
REGISTRY.register(ACTIONS_DONE)


class DeidConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = Field(
        None,
        description=(
            "De-identification policy: a shipped profile by name (kr-pseudonym, safe-harbor, "
            "limited) or the path of a policy YAML file; the kr-pseudonym profile if unset."
        ),
    )
    key: SecretStr | None = Field(
        None,
        description=(
            "Pseudonymization key (HL7BUS_DEID_KEY) with the id key_id. Keep it apart from the "
            "research data: whoever holds it can link pseudonyms back to patients."
        ),
    )
    key_file: Path | None = Field(None, description="File holding the key (instead of key).")
    key_id: str = Field(
        "k1",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Id of the active key: the one that makes pseudonyms and date shifts, "
        "stamped on research events as pseudonym_key_id.",
    )
    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "More keys by id, for rotation (the previous key stays configured while consumers "
            "move) and per-sink keys; key_id picks the active one."
        ),
    )
    key_files: dict[str, Path] = Field(
        default_factory=dict, description="More keys by id, each read from a file."
    )
    sink_keys: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Sink name -> key id, so that two sinks get pseudonyms that cannot be linked "
            "(load_key(cfg, sink=...)); sinks not named use key_id."
        ),
    )
    leak_check: bool = Field(
        True, description="Block any event whose output contains a source identifier value."
    )


class DeidError(Exception):
    """De-identification refused an event. The text names fields and causes, never values."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the event type and field."""


# -- policies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    name: str
    actions: dict[str, dict[str, str]]  # event type -> field -> action
    digest: str  # hash of the effective policy (canonical JSON of the parsed file)
    date_shift: tuple[int, int] = (-365, -1)  # inclusive range of days
    free_text_dates: str = "shift"
    source: str = "embedded"  # profile name or file path (for messages)

    @classmethod
    def load(cls, ref: str | Path | None) -> Policy:
        """A shipped profile by name, a policy file by path, or the default profile (None)."""
        if ref is None or str(ref) in PROFILES:
            name = DEFAULT_PROFILE if ref is None else str(ref)
            text = profile_text(name)
            source = name
        else:
            path = Path(ref)
            if not path.exists():
                known = ", ".join(PROFILES)
                raise PolicyError(f"deid.policy: {ref} is neither a profile ({known}) nor a file")
            text = path.read_text(encoding="utf-8")
            source = str(path)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise PolicyError(f"policy {source}: not YAML ({exc})") from None
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: str = "data") -> Policy:
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy {source}: must be a mapping")
        unknown = set(data) - {"name", "description", "events", "date_shift", "free_text_dates"}
        if unknown:
            raise PolicyError(f"policy {source}: unknown key(s) {', '.join(sorted(unknown))}")
        name = str(data.get("name") or source)
        events = data.get("events") or {}
        if not isinstance(events, Mapping):
            raise PolicyError(f"policy {name}: events must map event types to fields")
        actions: dict[str, dict[str, str]] = {}
        for event_type, fields in events.items():
            if not isinstance(fields, Mapping):
                raise PolicyError(f"policy {name}: {event_type} must map fields to actions")
            actions[str(event_type)] = {str(f): str(a) for f, a in fields.items()}
        shift = data.get("date_shift") or {}
        try:
            low, high = int(shift.get("min_days", -365)), int(shift.get("max_days", -1))
        except (AttributeError, TypeError, ValueError):
            raise PolicyError(
                f"policy {name}: date_shift needs integer min_days, max_days"
            ) from None
        if low > high:
            raise PolicyError(f"policy {name}: date_shift min_days is above max_days")
        text_dates = str(data.get("free_text_dates", "shift"))
        if text_dates not in FREE_TEXT_DATES:
            raise PolicyError(
                f"policy {name}: free_text_dates must be one of {', '.join(FREE_TEXT_DATES)}"
            )
        canonical = json.dumps(
            {"name": name, "events": actions, "date_shift": [low, high], "text": text_dates},
            sort_keys=True,
            ensure_ascii=False,
        )
        policy = cls(
            name=name,
            actions=actions,
            digest=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16],
            date_shift=(low, high),
            free_text_dates=text_dates,
            source=source,
        )
        policy.check()
        return policy

    def check(self) -> None:
        """Refuse a policy that names unknown things, keeps a direct identifier or free text,
        hashes a national id, or gives a field an action its type cannot take."""
        for event_type, fields in self.actions.items():
            try:
                schema = codec.schema(event_type)
            except codec.CodecError as exc:
                raise PolicyError(f"policy {self.name}: {exc}") from None
            phi = schema.phi_classes()
            kinds = _field_kinds(event_type)
            for name, action in fields.items():
                where = f"policy {self.name}: {event_type}.{name}"
                if name not in phi:
                    raise PolicyError(f"{where}: no such field in the {event_type} schema")
                if action not in ACTIONS:
                    allowed = ", ".join(sorted(ACTIONS))
                    raise PolicyError(f"{where}: unknown action {action!r} (allowed: {allowed})")
                if name in ENGINE_FIELDS and action != "keep":
                    raise PolicyError(
                        f"{where}: set by the engine; name it with keep or not at all"
                    )
                if action == "keep" and phi[name] == "direct":
                    raise PolicyError(f"{where}: a direct identifier cannot be kept")
                if action == "keep" and phi[name] == "free_text":
                    raise PolicyError(f"{where}: free text cannot be kept as is; scrub it")
                if action == "pseudonymize" and NEVER_HASHED.search(name):
                    raise PolicyError(
                        f"{where}: national and insurance numbers are removed, never hashed"
                    )
                needs = _NEEDS.get(action)
                if needs is not None and kinds[name] not in needs:
                    raise PolicyError(f"{where}: {action} does not apply to a {kinds[name]} field")


def profile_text(name: str) -> str:
    return resources.files(__package__).joinpath(f"policies/{name}.yaml").read_text("utf-8")


@lru_cache(maxsize=64)
def _field_kinds(event_type: str) -> dict[str, str]:
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


_NEEDS: dict[str, frozenset[str]] = {
    "pseudonymize": frozenset({"string"}),
    "shift_date": frozenset({"instant", "date_string"}),
    "truncate_date:year": frozenset({"instant", "date_string"}),
    "truncate_date:month": frozenset({"instant", "date_string"}),
    "generalize:age90": frozenset({"int"}),
    "generalize:zip3": frozenset({"string"}),
    "generalize:kr_postal3": frozenset({"string"}),
    "scrub": frozenset({"string"}),
}


# -- keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pseudonymizer:
    """The active key (``key``, ``key_id``) and the other configured keys (rotation, sinks).

    Pseudonyms are HMAC-SHA-256(key, value), 32 hex digits. Date shifts come from the same key
    with a separate label, so they cannot be computed without it either.
    """

    key: bytes
    key_id: str
    others: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # never the key
        return f"Pseudonymizer(key_id={self.key_id!r}, keys={sorted(self.key_ids())})"

    def __call__(self, value: str) -> str:
        return _hmac_hex(self.key, value)

    def key_ids(self) -> set[str]:
        return {self.key_id, *self.others}

    def with_key(self, key_id: str) -> Pseudonymizer:
        """The same key ring with another active key (rotation, a sink's own key)."""
        if key_id == self.key_id:
            return self
        keys = {self.key_id: self.key, **self.others}
        if key_id not in keys:
            raise PolicyError(f"deid: no key with id {key_id!r} is configured")
        return Pseudonymizer(keys[key_id], key_id, {k: v for k, v in keys.items() if k != key_id})

    def shift_days(self, subject: str, low: int, high: int) -> int:
        """The subject's date offset in [low, high] days: the same for every call."""
        return _shift_days(self.key, subject, low, high)


# Bounded caches: the events of one message (and the messages of one patient) repeat the same
# keys. They hold identifiers in process memory, like the records themselves; never logged.
@lru_cache(maxsize=8192)
def _hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@lru_cache(maxsize=8192)
def _shift_days(key: bytes, subject: str, low: int, high: int) -> int:
    mac = hmac.new(key, b"hl7bus-date-shift\x00" + subject.encode("utf-8"), "sha256")
    return low + int.from_bytes(mac.digest()[:8], "big") % (high - low + 1)


def _secret(value: SecretStr | None, path: Path | None, what: str) -> bytes | None:
    if value is not None:
        secret = value.get_secret_value().encode("utf-8")
    elif path is not None:
        secret = path.read_bytes().strip()
    else:
        return None
    if len(secret) < 16:
        raise PolicyError(f"deid: the key {what} must be at least 16 bytes")
    return secret


def load_key(cfg: DeidConfig, sink: str | None = None) -> Pseudonymizer:
    """The configured key ring, its active key being key_id (or the sink's key)."""
    keys: dict[str, bytes] = {}
    main = _secret(cfg.key, cfg.key_file, cfg.key_id)
    if main is not None:
        keys[cfg.key_id] = main
    for key_id, value in cfg.keys.items():
        keys[key_id] = _secret(value, None, key_id) or b""
    for key_id, path in cfg.key_files.items():
        if key_id in keys:
            raise PolicyError(f"deid: key {key_id!r} is configured twice")
        keys[key_id] = _secret(None, path, key_id) or b""
    active = cfg.sink_keys.get(sink, cfg.key_id) if sink is not None else cfg.key_id
    if active not in keys:
        if not keys:
            raise PolicyError(
                "deid: no pseudonymization key; set HL7BUS_DEID_KEY or deid.key_file "
                "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        raise PolicyError(f"deid: the active key id {active!r} has no key configured")
    for sink_name, key_id in cfg.sink_keys.items():
        if key_id not in keys:
            raise PolicyError(f"deid.sink_keys.{sink_name}: no key with id {key_id!r}")
    return Pseudonymizer(keys[active], active, {k: v for k, v in keys.items() if k != active})


# -- applying a policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One field's action on one event, for the offline review (values: PHI, never logged)."""

    field: str
    phi: str
    action: str
    before: Any
    after: Any


def deidentify(
    event_type: str,
    record: dict[str, Any],
    policy: Policy,
    pseudonymize: Pseudonymizer,
    leak_check: bool = True,
    *,
    account: list[Step] | None = None,
    counts: dict[tuple[str, str], int] | None = None,
) -> dict[str, Any]:
    """The research form of one event: only fields the policy names, each with its action.

    ``account`` (offline review) receives one :class:`Step` per named field; ``counts`` gets
    (action, PHI class) -> number of non-null values acted on, for the audit metrics.
    """
    plan = _plan(policy, event_type)
    job = _Job(event_type, record, policy, pseudonymize)
    out: dict[str, Any] = dict.fromkeys(_field_kinds(event_type))  # schema fields only
    haystack: list[str] = []
    released: set[str] = set()  # quasi values the policy releases on purpose (limited: city)
    tally: dict[tuple[str, str], int] = {} if counts is None else counts
    get = record.get
    # Kept and dropped fields go by group (one per action and PHI class): most of an event's
    # fields are kept as they are, and this is the per-event hot loop of the research stage.
    for group in plan.groups:
        values = [get(name) for name in group.names]
        present = len(values) - values.count(None)
        if not present:
            continue
        tally[group.label] = tally.get(group.label, 0) + present
        if group.keep:
            out.update(zip(group.names, values, strict=True))
            if group.search == "text":
                texts = [v for v in values if v.__class__ is str]
                haystack += texts
                if group.quasi:
                    released.update(map(_normalized_value, texts))
            elif group.search == "nested":
                _collect(values, haystack, released if group.quasi else None)
    for name, action, label, searched, quasi in plan.acted:
        value = get(name)
        if value is None:
            continue
        result = out[name] = job.apply(name, action, value)
        tally[label] = tally.get(label, 0) + 1
        if searched and result is not None:
            _collect((result,), haystack, released if quasi else None)
    if job.pseudonymized and "pseudonym_key_id" in out:
        out["pseudonym_key_id"] = pseudonymize.key_id
    if "deid_policy" in out:
        out["deid_policy"] = policy.digest
    if account is not None:
        account.extend(Step(n, phi, a, get(n), out[n]) for n, a, phi in plan.rows)
    # Required fields of the schema (ids, times) must be named; a policy that drops one makes
    # the event unencodable, caught by the caller.
    if leak_check:
        check_leaks(
            event_type, record, haystack, job.identifiers(required=False), frozenset(released)
        )
    return out


def _collect(values: Iterable[Any], haystack: list[str], released: set[str] | None) -> None:
    """Output strings into the leak search's haystack (nested ones too); released quasi values
    into ``released``."""
    for value in values:
        if isinstance(value, str):
            haystack.append(value)
            if released is not None:
                released.add(_normalized_value(value))
        elif isinstance(value, list | dict):
            _strings(value, haystack)


@dataclass(frozen=True)
class _Group:
    """Fields of one event type that share an action (keep or drop) and a PHI class."""

    label: tuple[str, str]  # (action, PHI class), for the audit counts
    names: tuple[str, ...]
    keep: bool
    # What its output adds to the leak search: "text" (string fields), "nested" (arrays and
    # other types, searched for strings inside), "" (nothing: dropped, our own ids, numbers
    # and instants, which hold no text).
    search: str
    quasi: bool


@dataclass(frozen=True)
class _Plan:
    rows: tuple[tuple[str, str, str], ...]  # every named field: (field, action, PHI class)
    groups: tuple[_Group, ...]  # keep and drop
    acted: tuple[tuple[str, str, tuple[str, str], bool, bool], ...]  # the other actions


_PLANS: dict[tuple[int, str], tuple[Policy, _Plan]] = {}


def _plan(policy: Policy, event_type: str) -> _Plan:
    """The policy's actions for one event type, prepared once (cached per policy object)."""
    cached = _PLANS.get((id(policy), event_type))
    if cached is not None and cached[0] is policy:
        return cached[1]
    actions = policy.actions.get(event_type)
    if actions is None:
        raise DeidError(f"policy {policy.name} has no entry for {event_type}", "no_policy")
    phi = _phi(event_type)
    rows = tuple((n, a, phi[n]) for n, a in actions.items() if n not in ENGINE_FIELDS)

    def searched(name: str, action: str) -> bool:
        # Our own hashes are left out of the leak search: a short identifier can occur in a
        # hex digest by chance and would block events for nothing.
        return action not in ("pseudonymize", "drop") and name != "event_id"

    kinds = _field_kinds(event_type)

    def search(name: str, action: str) -> str:
        if not searched(name, action) or kinds[name] in ("instant", "int"):
            return ""
        return "text" if kinds[name] in ("string", "date_string") else "nested"

    grouped: dict[tuple[str, str, str], list[str]] = {}
    acted = []
    for name, action, cls in rows:
        if action in ("keep", "drop"):
            grouped.setdefault((action, cls, search(name, action)), []).append(name)
        else:
            label = (action.split(":", 1)[0], cls)
            acted.append((name, action, label, searched(name, action), cls == "quasi"))
    groups = tuple(
        _Group((action, cls), tuple(names), action == "keep", how, cls == "quasi")
        for (action, cls, how), names in grouped.items()
    )
    plan = _Plan(rows, groups, tuple(acted))
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[(id(policy), event_type)] = (policy, plan)
    return plan


@lru_cache(maxsize=64)
def _phi(event_type: str) -> dict[str, str]:
    return codec.schema(event_type).phi_classes()


class _Job:
    """One event's de-identification: lazily built identifiers and date offset."""

    def __init__(
        self, event_type: str, record: dict[str, Any], policy: Policy, key: Pseudonymizer
    ) -> None:
        self.event_type = event_type
        self.record = record
        self.policy = policy
        self.key = key
        self.pseudonymized = False
        self._ids: Identifiers | None = None
        self._days: int | None = None

    def days(self) -> int:
        if self._days is None:
            subject = self.record.get("patient_key") or f"event:{self.record.get('event_id')}"
            low, high = self.policy.date_shift
            self._days = self.key.shift_days(str(subject), low, high)
        return self._days

    def identifiers(self, required: bool) -> Identifiers | None:
        if self._ids is None:
            carried = self.record.get(CARRIER)
            if carried is None:
                if required:
                    raise DeidError(
                        f"{self.event_type}: free text to scrub but no {CARRIER} on the event",
                        "no_identifiers",
                    )
                return None
            self._ids = _identifiers(carried)
        return self._ids

    def apply(self, name: str, action: str, value: Any) -> Any:
        """Every action but keep and drop (done by field group in :func:`deidentify`)."""
        if action == "pseudonymize":
            self.pseudonymized = True
            return self.key(str(value))
        if action == "shift_date":
            return _shift(value, timedelta(days=self.days()))
        if action.startswith("truncate_date:"):
            return _truncate(value, action.partition(":")[2])
        if action == "generalize:age90":
            return self._age90(int(value))
        if action == "generalize:zip3":
            return zip3(str(value))
        if action == "generalize:kr_postal3":
            return kr_postal3(str(value))
        if action == "scrub":
            return self._scrub(str(value))
        raise DeidError(f"{self.event_type}.{name}: unknown action", "bad_action")

    def _age90(self, birth_year: int) -> int:
        when = self.record.get("event_time") or self.record.get("received_at")
        if not isinstance(when, datetime):
            raise DeidError(f"{self.event_type}: no event time to judge an age", "no_time")
        return max(birth_year, when.year - 90)

    def _scrub(self, text: str) -> str:
        ids = self.identifiers(required=True)
        extra = _own_identifiers(self.event_type, self.record)
        if extra:
            ids = extra if ids is None else ids | extra
        shift: Callable[[date], date] | None
        if self.policy.free_text_dates == "shift":
            offset = timedelta(days=self.days())

            def shift(d: date) -> date:
                return d + offset

        elif self.policy.free_text_dates == "keep":

            def shift(d: date) -> date:
                return d

        else:
            shift = None
        return scrub_text(text, ids, shift_date=shift).text


@lru_cache(maxsize=1024)
def _identifiers(carried: str) -> Identifiers:
    """The carried identifiers (``KIND<TAB>value`` lines) as a scrubber set (cached: the
    events of one message carry the same string)."""
    pairs = (line.split("\t", 1) for line in carried.split("\n") if "\t" in line)
    return Identifiers(frozenset((Kind(k), v) for k, v in pairs))


# Direct name fields of events, as (family, given) pairs, added to the carried identifiers.
_NAME_PAIRS = (
    ("family_name", "given_name"),
    ("attending_family_name", "attending_given_name"),
    ("ordering_provider_family_name", "ordering_provider_given_name"),
    ("clinician_family_name", "clinician_given_name"),
    ("author_family_name", "author_given_name"),
    ("surgeon_family_name", "surgeon_given_name"),
)


def _own_identifiers(event_type: str, record: dict[str, Any]) -> Identifiers | None:
    """Names and ids in the event's own direct fields (e.g. a document author from TXA, which
    identifiers_of does not read)."""
    pairs, id_fields = _own_fields(event_type)
    names = tuple(
        (str(record.get(f) or ""), str(record.get(g) or ""))
        for f, g in pairs
        if record.get(f) or record.get(g)
    )
    ids = tuple(str(v) for k in id_fields if (v := record.get(k)))
    if not names and not ids:
        return None
    return _own(names, ids)


@lru_cache(maxsize=64)
def _own_fields(event_type: str) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    phi = _phi(event_type)
    pairs = tuple((f, g) for f, g in _NAME_PAIRS if f in phi)
    ids = tuple(
        k
        for k, c in phi.items()
        if c in ("direct", "quasi") and k.endswith(("_id", "number")) and k != CARRIER
    )
    return pairs, ids


@lru_cache(maxsize=4096)
def _own(names: tuple[tuple[str, str], ...], ids: tuple[str, ...]) -> Identifiers:
    return Identifiers.of(names=names, ids=ids)


def _strings(value: Any, into: list[str]) -> None:
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _strings(item, into)
    elif isinstance(value, dict):
        for item in value.values():
            _strings(item, into)


# -- dates and generalization ---------------------------------------------------------------------

_ISO_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")


def _shift(value: Any, offset: timedelta) -> Any:
    if isinstance(value, datetime):
        return value + offset
    m = _ISO_DATE.match(str(value))
    if not m:
        raise DeidError("a date field holds no ISO date", "bad_date")
    year, month, day = m.group(1), m.group(2), m.group(3)
    # Partial dates: shift their middle and keep the precision.
    anchor = date(int(year), int(month or 7), int(day or (15 if month else 1)))
    moved = anchor + offset
    if day:
        return moved.isoformat()
    if month:
        return f"{moved.year:04d}-{moved.month:02d}"
    return f"{moved.year:04d}"


def _truncate(value: Any, to: str) -> Any:
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return datetime(utc.year, 1 if to == "year" else utc.month, 1, tzinfo=UTC)
    m = _ISO_DATE.match(str(value))
    if not m:
        raise DeidError("a date field holds no ISO date", "bad_date")
    if to == "year" or not m.group(2):
        return m.group(1)
    return f"{m.group(1)}-{m.group(2)}"


_US_ZIP = re.compile(r"^\s*(\d{3})\d{2}(?:-?\d{4})?\s*$")
_KR_POSTAL = re.compile(r"^\s*(\d{3})\d{2}\s*$")


def zip3(value: str) -> str | None:
    """A US ZIP (5 or 9 digits) -> its first 3 digits, '000' for restricted areas; else None."""
    m = _US_ZIP.match(value)
    if not m:
        return None
    return "000" if m.group(1) in RESTRICTED_ZIP3 else m.group(1)


def kr_postal3(value: str) -> str | None:
    """A Korean 5-digit postal code (since 2015) -> its first 3 digits; anything else None."""
    m = _KR_POSTAL.match(value)
    return m.group(1) if m else None


# -- leak check -------------------------------------------------------------------------------

_NOISE = re.compile(r"[\s\-_.,()/|^~&\\]+")
_HANGUL = re.compile("[\uac00-\ud7a3\u3400-\u4dbf\u4e00-\u9fff]")


def _normalized(value: str) -> str:
    return _NOISE.sub("", value).casefold()


# Output values recur (codes, units, kept texts): normalized once each. Like the other caches
# here it holds event values in process memory, never logged.
_normalized_value = lru_cache(maxsize=65536)(_normalized)


def _worth_searching(text: str) -> bool:
    """A needle long and specific enough that finding it is a leak, not a coincidence."""
    if _HANGUL.search(text):
        return len(text) >= 3 or (len(text) == 2 and text not in COMMON_WORDS)
    if text.isdigit():
        return len(text) >= 5
    return len(text) >= 4 and text.upper() not in LATIN_COMMON_WORDS


@lru_cache(maxsize=64)
def _direct_fields(event_type: str) -> tuple[str, ...]:
    return tuple(n for n, c in _phi(event_type).items() if c == "direct" and n != CARRIER)


@lru_cache(maxsize=64)
def _nested_direct(event_type: str) -> dict[str, tuple[str, ...]]:
    """Array-of-record fields -> the names of their direct string members."""
    out: dict[str, tuple[str, ...]] = {}
    for f in codec.schema(event_type).definition["fields"]:
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            items = branch.get("items") if isinstance(branch, dict) else None
            if isinstance(items, dict) and items.get("type") == "record":
                out[f["name"]] = tuple(
                    s["name"]
                    for s in items["fields"]
                    if s.get("phi") == "direct"
                    and "string" in str(s["type"])
                    and "array" not in str(s["type"])
                )
    # Named types used again by reference (e.g. merged_from_identifiers: PatientIdentifier).
    for f in codec.schema(event_type).definition["fields"]:
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            items = branch.get("items") if isinstance(branch, dict) else None
            if isinstance(items, str):
                short = items.rsplit(".", 1)[-1]
                for g in codec.schema(event_type).definition["fields"]:
                    for b in g["type"] if isinstance(g["type"], list) else [g["type"]]:
                        inner = b.get("items") if isinstance(b, dict) else None
                        if isinstance(inner, dict) and inner.get("name") == short:
                            out[f["name"]] = out[g["name"]]
    return out


@lru_cache(maxsize=1024)
def _carried_needles(ids: Identifiers) -> tuple[str, ...]:
    out = {_normalized(v) for _, v in ids.needles}
    return tuple(sorted(n for n in out if _worth_searching(n)))


def check_leaks(
    event_type: str,
    source: dict[str, Any],
    output: Iterable[str],
    carried: Identifiers | None = None,
    released: frozenset[str] = frozenset(),
) -> None:
    """Raise when a direct-identifier value of the source event, or a name or identifier of its
    message (``carried``), appears in the output text (normalized for case, spaces, hyphens).

    ``released``: normalized values of quasi-identifiers the policy releases on purpose (the
    limited profile keeps the city, which is also one of the message's address needles)."""
    # The separator is not a noise character, so no needle can match across two fields, and
    # normalizing each text before joining them is the same as normalizing the joined text.
    haystack = "\x00".join(map(_normalized_value, output))
    if not haystack.strip("\x00"):
        return
    nested = _nested_direct(event_type)
    for name in _direct_fields(event_type):
        value = source.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            found = [value]
        elif isinstance(value, list):
            # Records of identifiers: their direct string members (an id, not its type code).
            subs = nested.get(name, ())
            found = [
                item[s] for item in value if isinstance(item, dict) for s in subs if item.get(s)
            ]
        else:
            continue
        for text in found:
            needle = _normalized_value(text)
            if len(needle) >= 2 and needle in haystack:
                raise DeidError(
                    f"leak check: the value of {event_type}.{name} is in the output", "leak"
                )
    if carried:
        for needle in _carried_needles(carried):
            if needle in haystack and needle not in released:
                raise DeidError(
                    f"leak check: a name or identifier of the {event_type}'s message is in "
                    "the output",
                    "leak",
                )


# -- offline review and docs --------------------------------------------------------------------

_LINE = re.compile(r"^    (?P<field>\w+): (?P<action>[\w:]+)\s*(?:#\s*(?P<why>.*))?$")
_EVENT = re.compile(r"^  (?P<event>\w+):\s*(?:#.*)?$")


def profiles_markdown() -> str:
    """docs/deid-profiles.md: each shipped profile, field by field, with its rationale (the
    comment after each action in the YAML)."""
    out = [
        "# De-identification profiles",
        "",
        "Generated from `streams/policies/*.yaml` (the comment after each action is its",
        "rationale); regenerate with `HL7BUS_REGEN_DOCS=1 .venv/bin/pytest "
        "tests/test_deid_profiles.py`.",
        "Review a profile on real messages with `hl7bus deid FILE... --policy NAME`.",
        "Actions are described in `streams/deidentify.py`; a field a profile does not name is",
        "dropped (null on research topics).",
        "",
    ]
    for name in PROFILES:
        policy = Policy.load(name)
        text = profile_text(name)
        head = []
        for line in text.splitlines():
            if not line.startswith("#"):
                break
            head.append(line[1:].strip())
        out += [f"## `{name}`", "", " ".join(h for h in head if h) or "", ""]
        low, high = policy.date_shift
        out += [
            f"Policy hash (stamped on research events as `deid_policy`): `{policy.digest}`. "
            f"Date shift: {low} to {high} days per patient. Dates in free text: "
            f"{policy.free_text_dates}.",
            "",
        ]
        event = None
        for line in text.splitlines():
            m_event = _EVENT.match(line)
            if m_event:
                event = m_event["event"]
                phi = codec.schema(event).phi_classes()
                out += [
                    f"### {name} / {event}",
                    "",
                    "| field | PHI | action | why |",
                    "|---|---|---|---|",
                ]
                continue
            m = _LINE.match(line)
            if m and event:
                why = (m["why"] or "").replace("|", "\\|")
                out.append(f"| `{m['field']}` | {phi[m['field']]} | `{m['action']}` | {why} |")
            elif event and line.strip() == "" and out[-1] != "":
                out.append("")
        if out[-1] != "":
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
