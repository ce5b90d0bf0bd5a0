"""What de-identification raises: a refused event, an unusable policy, an unusable key."""

from __future__ import annotations

from hl7bus.schemas.datafile import DataFileError


class DeidError(Exception):
    """De-identification refused an event. The text names fields and causes, never values."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class PolicyError(DataFileError):
    """A policy that cannot be used; the message names the file, the event type and field."""


class KeyConfigError(ValueError):
    """A pseudonymization key that cannot be used (unreadable, too short, an id with no key).
    The message names the key id and the setting, never key material."""


class NoKeyError(KeyConfigError):
    """No pseudonymization key is configured at all (the offline review then uses an
    ephemeral one; a worker refuses to start)."""
