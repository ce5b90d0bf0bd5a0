"""The engine: one identified event -> its research form under a policy (pure; no I/O).

Each field the policy names gets its action; every other field is absent, as in the research
contract (:mod:`.contract`) the form is encoded with. Fails closed: an error
while applying an action, or a source identifier found in the output, raises
:class:`~hl7bus.streams.deid.errors.DeidError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from hl7bus.streams.deid.contract import kept
from hl7bus.streams.deid.errors import DeidError
from hl7bus.streams.deid.fields import CARRIER, ENGINE_FIELDS, field_kinds, phi_classes
from hl7bus.streams.deid.generalize import age90, kr_postal3, shift_date, truncate_date, zip3
from hl7bus.streams.deid.keys import Pseudonymizer
from hl7bus.streams.deid.leaks import check_leaks, collect, normalized_value
from hl7bus.streams.deid.policy import Policy
from hl7bus.streams.scrub import Identifiers, Kind, scrub_text


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
    """The research form of one event: only the fields of its research contract (those the
    policy names, and the engine's own), each with its action.

    ``account`` (offline review) receives one :class:`Step` per named field; ``counts`` gets
    (action, PHI class) -> number of non-null values acted on, for the audit metrics.
    """
    plan = _plan(policy, event_type)
    job = _Job(event_type, record, policy, pseudonymize)
    get = record.get
    # The research contract's fields only, in its order, as the source has them: the kept ones
    # are done; the acted ones are replaced below (a null stays null); the engine's own are
    # set below or null.
    out: dict[str, Any] = dict(zip(plan.fields, map(get, plan.fields), strict=True))
    for name in plan.engine:
        out[name] = None
    haystack: list[str] = []
    released: set[str] = set()  # quasi values the policy releases on purpose (limited: city)
    tally: dict[tuple[str, str], int] = {} if counts is None else counts
    # Kept and dropped fields go by group (one per action and PHI class), for the counts and the
    # leak search: this is the per-event hot loop of the research stage.
    for label, names, search, quasi in plan.groups:
        values = list(map(get, names))
        present = len(values) - values.count(None)
        if not present:
            continue
        tally[label] = tally.get(label, 0) + present
        if search == "text":
            texts = [v for v in values if v.__class__ is str]
            haystack += texts
            if quasi:
                released.update(map(normalized_value, texts))
        elif search == "nested":
            collect(values, haystack, released if quasi else None)
    for name, action, label, searched, quasi in plan.acted:
        value = get(name)
        if value is None:
            continue
        result = out[name] = job.apply(name, action, value)
        tally[label] = tally.get(label, 0) + 1
        if searched and result is not None:
            collect((result,), haystack, released if quasi else None)
    if job.pseudonymized and "pseudonym_key_id" in out:
        out["pseudonym_key_id"] = pseudonymize.key_id
    if "deid_policy" in out:
        out["deid_policy"] = policy.digest
    if account is not None:
        account.extend(Step(n, phi, a, get(n), out.get(n)) for n, a, phi in plan.rows)
    # Required fields of the schema (ids, times) must be named; a policy that drops one has no
    # research contract (contract.derive refuses it), caught by the caller.
    if leak_check:
        check_leaks(
            event_type, record, haystack, job.identifiers(required=False), frozenset(released)
        )
    return out


#: Fields of one event type that share an action (keep or drop) and a PHI class: (action, PHI
#: class) for the audit counts, the field names, what their values add to the leak search, and
#: whether they are quasi-identifiers. The search is "text" (string fields), "nested" (arrays
#: and other types, searched for strings inside) or "" (nothing: dropped, our own ids, numbers
#: and instants, which hold no text).
_Group = tuple[tuple[str, str], tuple[str, ...], str, bool]


@dataclass(frozen=True)
class _Plan:
    fields: tuple[str, ...]  # the research contract's fields, in schema order
    engine: tuple[str, ...]  # those the engine sets (ENGINE_FIELDS)
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
    phi = phi_classes(event_type)
    rows = tuple((n, a, phi[n]) for n, a in actions.items() if n not in ENGINE_FIELDS)

    def searched(name: str, action: str) -> bool:
        # Our own hashes are left out of the leak search: a short identifier can occur in a
        # hex digest by chance and would block events for nothing.
        return action not in ("pseudonymize", "drop") and name != "event_id"

    kinds = field_kinds(event_type)

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
        ((action, cls), tuple(names), how, cls == "quasi")
        for (action, cls, how), names in grouped.items()
    )
    fields = tuple(name for name in kinds if kept(name, actions))
    engine = tuple(name for name in fields if name in ENGINE_FIELDS)
    plan = _Plan(fields, engine, rows, groups, tuple(acted))
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[(id(policy), event_type)] = (policy, plan)
    return plan


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
        self._offset: timedelta | None = None

    def offset(self) -> timedelta:
        """The patient's date shift (made once per event: its date fields and texts share it)."""
        if self._offset is None:
            subject = self.record.get("patient_key") or f"event:{self.record.get('event_id')}"
            low, high = self.policy.date_shift
            self._offset = timedelta(days=self.key.shift_days(str(subject), low, high))
        return self._offset

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
            return shift_date(value, self.offset())
        if action.startswith("truncate_date:"):
            return truncate_date(value, action.partition(":")[2])
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
        return age90(birth_year, when)

    def _scrub(self, text: str) -> str:
        ids = self.identifiers(required=True)
        extra = _own_identifiers(self.event_type, self.record)
        if extra:
            ids = extra if ids is None else ids | extra
        shift: Callable[[date], date] | None
        if self.policy.free_text_dates == "shift":
            offset = self.offset()

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
    phi = phi_classes(event_type)
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
