"""Policies: a shipped profile or a YAML file -> a checked :class:`Policy` (event type -> field
-> action), refused at load when it names unknown things or an action a field cannot take."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hl7bus.schemas import codec
from hl7bus.streams.deid.errors import PolicyError
from hl7bus.streams.deid.fields import ENGINE_FIELDS, field_kinds

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
#: Fields removed, never hashed (a keyed hash of an RRN is still an identifier under PIPA
#: guidance; a plain hash is reversible by enumeration).
NEVER_HASHED = re.compile(r"national_id|ssn|rrn|insurance|policy_number|member_number")


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
            kinds = field_kinds(event_type)
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
    return resources.files("hl7bus.streams").joinpath(f"policies/{name}.yaml").read_text("utf-8")


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
