"""The key ring: configured pseudonymization keys (inline or from files) -> a
:class:`Pseudonymizer`, which makes pseudonyms and per-patient date offsets from the active key.

Whoever holds a key can link pseudonyms back to patients: errors name the key id and the
setting, never key material.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr

from hl7bus.streams.deid.config import DeidConfig
from hl7bus.streams.deid.errors import KeyConfigError, NoKeyError

#: The shortest key accepted, in bytes.
MIN_KEY_BYTES = 16


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
            raise KeyConfigError(f"deid: no key with id {key_id!r} is configured")
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


def _secret(value: SecretStr | None, path: Path | None, key_id: str, setting: str) -> bytes | None:
    """The key given inline (``value``) or in a file (``path``); None when neither is set."""
    if value is not None:
        secret = value.get_secret_value().encode("utf-8")
    elif path is not None:
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise KeyConfigError(
                f"{setting}: cannot read key {key_id!r} from {path}: {reason}"
            ) from None
    else:
        return None
    if len(secret) < MIN_KEY_BYTES:
        raise KeyConfigError(
            f"{setting}: key {key_id!r} is {len(secret)} bytes; it must be at least "
            f"{MIN_KEY_BYTES} bytes"
        )
    return secret


def load_key(cfg: DeidConfig, sink: str | None = None) -> Pseudonymizer:
    """The configured key ring, its active key being key_id (or the sink's key).

    Raises :class:`NoKeyError` when no key is configured at all, :class:`KeyConfigError` for
    any other unusable key setting."""
    keys: dict[str, bytes] = {}
    setting = "deid.key (HL7BUS_DEID_KEY)" if cfg.key is not None else "deid.key_file"
    main = _secret(cfg.key, cfg.key_file, cfg.key_id, setting)
    if main is not None:
        keys[cfg.key_id] = main
    for key_id, value in cfg.keys.items():
        keys[key_id] = _secret(value, None, key_id, f"deid.keys.{key_id}") or b""
    for key_id, path in cfg.key_files.items():
        if key_id in keys:
            raise KeyConfigError(f"deid: key {key_id!r} is configured twice")
        keys[key_id] = _secret(None, path, key_id, f"deid.key_files.{key_id}") or b""
    active = cfg.sink_keys.get(sink, cfg.key_id) if sink is not None else cfg.key_id
    if active not in keys:
        if not keys:
            raise NoKeyError(
                "deid: no pseudonymization key; set HL7BUS_DEID_KEY or deid.key_file "
                "(generate one with: python -c 'import secrets; print(secrets.token_hex(32))')"
            )
        if sink in cfg.sink_keys:
            raise KeyConfigError(f"deid.sink_keys.{sink}: no key with id {active!r}")
        raise KeyConfigError(f"deid: the active key id {active!r} has no key configured")
    for sink_name, key_id in cfg.sink_keys.items():
        if key_id not in keys:
            raise KeyConfigError(f"deid.sink_keys.{sink_name}: no key with id {key_id!r}")
    return Pseudonymizer(keys[active], active, {k: v for k, v in keys.items() if k != active})
