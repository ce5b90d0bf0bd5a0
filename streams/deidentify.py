"""deidentify: identified event -> research event, by an allow-list policy (pure; no I/O).

Fails closed: a field the policy does not name is dropped; an unknown action, an unknown field or
a kept direct identifier is a config error at start; any error while applying the policy, or a
direct-identifier value of the source found in the output (the leak check), raises DeidError and
the caller sends nothing to a research topic.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from hl7bus.schemas import codec

ACTIONS = frozenset({"keep", "drop", "pseudonymize"})


class DeidConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: Path | None = Field(
        None, description="Policy YAML file; the packaged streams/policies/default.yaml if unset."
    )
    key: SecretStr | None = Field(
        None,
        description=(
            "Pseudonymization key (HL7BUS_DEID_KEY). Keep it apart from the research data: "
            "whoever holds it can link pseudonyms back to patients."
        ),
    )
    key_file: Path | None = Field(None, description="File holding the key (instead of key).")
    key_id: str = Field(
        "k1", pattern=r"^[A-Za-z0-9_.-]+$", description="Id of the key, stamped on pseudonyms."
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


@dataclass(frozen=True)
class Policy:
    name: str
    actions: dict[str, dict[str, str]]  # event type -> field -> action
    digest: str

    @classmethod
    def load(cls, path: Path | None) -> Policy:
        if path is None:
            text = resources.files(__package__).joinpath("policies/default.yaml").read_text("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        policy = cls(
            name=str(data.get("name", path.stem if path else "default")),
            actions={et: dict(fields or {}) for et, fields in (data.get("events") or {}).items()},
            digest=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        )
        policy.check()
        return policy

    def check(self) -> None:
        """Refuse a policy that names unknown things or keeps a direct identifier."""
        for event_type, fields in self.actions.items():
            try:
                phi = codec.schema(event_type).phi_classes()
            except codec.CodecError as exc:
                raise PolicyError(f"policy {self.name}: {exc}") from None
            for field, action in fields.items():
                where = f"policy {self.name}: {event_type}.{field}"
                if field not in phi:
                    raise PolicyError(f"{where}: no such field in the {event_type} schema")
                if action not in ACTIONS:
                    allowed = ", ".join(sorted(ACTIONS))
                    raise PolicyError(f"{where}: unknown action {action!r} (allowed: {allowed})")
                if action == "keep" and phi[field] == "direct":
                    raise PolicyError(f"{where}: a direct identifier cannot be kept")


@dataclass(frozen=True)
class Pseudonymizer:
    key: bytes
    key_id: str

    def __call__(self, value: str) -> str:
        return hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def load_key(cfg: DeidConfig) -> Pseudonymizer:
    if cfg.key is not None:
        secret = cfg.key.get_secret_value().encode("utf-8")
    elif cfg.key_file is not None:
        secret = cfg.key_file.read_bytes().strip()
    else:
        raise PolicyError(
            "deid: no pseudonymization key; set HL7BUS_DEID_KEY or deid.key_file "
            "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if len(secret) < 16:
        raise PolicyError("deid: the pseudonymization key must be at least 16 bytes")
    return Pseudonymizer(secret, cfg.key_id)


def deidentify(
    event_type: str,
    record: dict[str, Any],
    policy: Policy,
    pseudonymize: Pseudonymizer,
    leak_check: bool = True,
) -> dict[str, Any]:
    """The research form of one event: only fields the policy names, each with its action."""
    actions = policy.actions.get(event_type)
    if actions is None:
        raise DeidError(f"policy {policy.name} has no entry for {event_type}", "no_policy")
    out: dict[str, Any] = dict.fromkeys(record)
    pseudonymized = False
    for field, action in actions.items():
        value = record.get(field)
        if action == "keep":
            out[field] = value
        elif action == "pseudonymize" and value is not None:
            out[field] = pseudonymize(str(value))
            pseudonymized = True
    if pseudonymized and "pseudonym_key_id" in out:
        out["pseudonym_key_id"] = pseudonymize.key_id
    # Non-null required fields of the schema (ids, times) are all "keep" in a valid policy;
    # a policy that drops one makes the event unencodable, caught by the caller as a DeidError.
    if leak_check:
        # Hashes we made (event id, pseudonyms) are left out of the search: a short identifier
        # can occur in a hex digest by chance and would block events for nothing.
        kept = {f: out[f] for f, a in actions.items() if a == "keep" and f != "event_id"}
        check_leaks(event_type, record, kept)
    return out


_NOISE = re.compile(r"[\s\-_.()/]+")


def _normalized(value: str) -> str:
    return _NOISE.sub("", value).casefold()


def check_leaks(event_type: str, source: dict[str, Any], output: dict[str, Any]) -> None:
    """Raise when a direct-identifier value of the source appears in any output text."""
    phi = codec.schema(event_type).phi_classes()
    needles = {
        field: _normalized(str(value))
        for field, value in source.items()
        if phi.get(field) == "direct" and value is not None and len(_normalized(str(value))) >= 2
    }
    haystack = [_normalized(str(v)) for v in output.values() if isinstance(v, str)]
    for field, needle in needles.items():
        if any(needle in text for text in haystack):
            raise DeidError(
                f"leak check: the value of {event_type}.{field} is in the output", "leak"
            )
