"""The one error of the local broker launcher."""

from __future__ import annotations


class LocalKafkaError(RuntimeError):
    """The local broker could not be provisioned, started or stopped; the message says why."""
