"""The dedupe table's changelog topic: created when missing; a concurrent creation is fine."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from hl7bus.streams.worker_config import changelog_topic, declare_changelog


class FakeAdmin:
    """create_topics answers every topic with ``error`` (a KafkaError code), or success."""

    def __init__(self, error: KafkaError | None) -> None:
        self.error = error
        self.created: list[Any] = []

    def list_topics(self, timeout: float) -> Any:
        return SimpleNamespace(topics={})

    def create_topics(self, new: list[Any]) -> dict[str, Any]:
        self.created += new
        return {t.topic: SimpleNamespace(result=self._result) for t in new}

    def _result(self, timeout: float) -> None:
        if self.error is not None:
            raise KafkaException(self.error)


def test_created_meanwhile_is_recognised_by_its_code() -> None:
    admin = FakeAdmin(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS))
    declare_changelog(admin, "app", 6)
    assert [t.topic for t in admin.created] == [changelog_topic("app")]


def test_other_errors_are_raised_whatever_their_text() -> None:
    admin = FakeAdmin(KafkaError(KafkaError.POLICY_VIOLATION, "TOPIC_ALREADY_EXISTS"))
    with pytest.raises(KafkaException):
        declare_changelog(admin, "app", 6)
