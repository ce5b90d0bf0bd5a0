"""Policies: a shipped profile or a YAML file -> a checked :class:`Policy` (event type -> field
-> action), refused at load when it names unknown things or an action a field cannot take."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hl7bus.schemas import codec, datafile
from hl7bus.schemas.datafile import DataFileError
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
FreeTextDates = Literal["shift", "remove", "keep"]
#: Fields removed, never hashed (a keyed hash of an RRN is still an identifier under PIPA
#: guidance; a plain hash is reversible by enumeration).
NEVER_HASHED = re.compile(r"national_id|ssn|rrn|insurance|policy_number|member_number")


class DateShift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_days: int = Field(-365, description="Earliest shift in days (inclusive).")
    max_days: int = Field(-1, description="Latest shift in days (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> DateShift:
        if self.min_days > self.max_days:
            raise ValueError("date_shift min_days is above max_days")
        return self


class PolicyFile(BaseModel):
    """A policy file as written: which action each named field gets, per event type."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="The policy's name (default: its file or profile).")
    description: str = Field("", description="What the policy is for.")
    events: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Event type -> field -> action; a field not named is dropped.",
    )
    date_shift: DateShift = Field(
        default_factory=DateShift,
        description="The range of the per-patient date offset (shift_date and free text).",
    )
    free_text_dates: FreeTextDates = Field(
        "shift", description="What scrubbing does with dates in free text."
    )


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
            file: Path | Traversable = _profile_file(name)
            source = name
        else:
            file = Path(ref)
            if not file.exists():
                known = ", ".join(PROFILES)
                raise PolicyError(f"deid.policy: {ref} is neither a profile ({known}) nor a file")
            source = str(file)
        try:
            data = datafile.read_yaml(PolicyFile, file, f"policy {source}")
        except DataFileError as exc:
            raise PolicyError(str(exc)) from None
        return cls.from_data(data, source)

    @classmethod
    def from_data(cls, data: Mapping[str, Any], source: str = "data") -> Policy:
        try:
            parsed = datafile.validate(PolicyFile, data, f"policy {source}")
        except DataFileError as exc:
            raise PolicyError(str(exc)) from None
        name = parsed.name or source
        actions = parsed.events
        low, high = parsed.date_shift.min_days, parsed.date_shift.max_days
        text_dates = parsed.free_text_dates
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


def _profile_file(name: str) -> Traversable:
    return resources.files("hl7bus.streams").joinpath(f"policies/{name}.yaml")


def profile_text(name: str) -> str:
    return _profile_file(name).read_text("utf-8")


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
