"""Consumer-group lag measured from outside the consumers, with the admin API.

Committed offsets (``list_consumer_group_offsets``) against end offsets (``list_offsets``,
latest): the figures stay true while a group's members are dead, which is when they matter
(a worker's own lag metrics die with it; faust's go with the process). Lag in seconds is the
age of the oldest record the group has not committed: the Kafka timestamp of the record at
its committed offset, fetched once per (partition, offset) and remembered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # what confluent_kafka.admin re-exports

__all__ = ["GroupLag", "LagProbe", "PartitionLag", "Snapshot"]

#: An offset librdkafka reports when the group committed none for the partition.
_NO_OFFSET = -1001


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here; lag counts from the start
    end: int
    lag: int
    lag_seconds: float


@dataclass(frozen=True)
class GroupLag:
    group: str
    members: int
    state: str
    partitions: list[PartitionLag]


@dataclass(frozen=True)
class Snapshot:
    """One measurement of every group the probe watches."""

    taken_at: float  # unix time
    groups: list[GroupLag] = field(default_factory=list)


class LagProbe:
    """Measures the lag of the consumer groups whose id matches ``pattern``.

    ``admin`` and ``consumer`` are long-lived clients of the caller's config; ``consumer`` has
    a group id of its own that it never commits under and only reads record timestamps.
    """

    def __init__(
        self, admin: AdminClient, consumer: Consumer, pattern: str, timeout: float = 10.0
    ) -> None:
        self.admin = admin
        self.consumer = consumer
        self.pattern = re.compile(pattern)
        self.timeout = timeout
        self._stamps: dict[tuple[str, int, int], float] = {}  # (topic, partition, offset)

    def measure(self) -> Snapshot:
        """Raises KafkaException (or a timeout) when the brokers do not answer."""
        now = time.time()
        groups = self._groups()
        if not groups:
            return Snapshot(now)
        described = self.admin.describe_consumer_groups(groups, request_timeout=self.timeout)
        committed: dict[str, list[Any]] = {}
        for group in groups:
            futures = self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
            )
            result = futures[group].result(timeout=self.timeout)
            committed[group] = list(result.topic_partitions or ())
        wanted = {(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
        latest = self._offsets(wanted, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        unset = {
            (tp.topic, tp.partition)
            for tps in committed.values()
            for tp in tps
            if tp.offset == _NO_OFFSET
        }
        earliest = (
            self._offsets(unset, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
            if unset
            else {}
        )
        self._forget(committed)
        out = []
        for group in groups:
            description = described[group].result(timeout=self.timeout)
            partitions = []
            for tp in sorted(committed[group], key=lambda tp: (tp.topic, tp.partition)):
                key = (tp.topic, tp.partition)
                if key not in latest:
                    continue  # a deleted topic the group still has offsets of
                end = latest[key]
                start = tp.offset if tp.offset != _NO_OFFSET else earliest.get(key, 0)
                lag = max(0, end - start)
                age = 0.0
                if lag > 0:
                    stamp = self._stamp(tp.topic, tp.partition, start)
                    age = max(0.0, now - stamp) if stamp is not None else 0.0
                partitions.append(
                    PartitionLag(
                        tp.topic,
                        tp.partition,
                        tp.offset if tp.offset != _NO_OFFSET else None,
                        end,
                        lag,
                        age,
                    )
                )
            out.append(
                GroupLag(
                    group,
                    len(description.members),
                    str(getattr(description.state, "name", description.state)).lower(),
                    partitions,
                )
            )
        return Snapshot(now, out)

    def _groups(self) -> list[str]:
        listed = self.admin.list_consumer_groups(request_timeout=self.timeout).result(
            timeout=self.timeout
        )
        return sorted(g.group_id for g in listed.valid if self.pattern.fullmatch(g.group_id))

    def _offsets(self, partitions: Iterable[tuple[str, int]], spec: OffsetSpec) -> dict[Any, int]:
        request = {TopicPartition(topic, p): spec for topic, p in partitions}
        if not request:
            return {}
        futures = self.admin.list_offsets(request, request_timeout=self.timeout)
        found = {}
        for tp, future in futures.items():
            try:
                found[tp.topic, tp.partition] = int(future.result(timeout=self.timeout).offset)
            except KafkaException:
                continue  # the topic is gone, or its leader is moving: left out this round
        return found

    def _stamp(self, topic: str, partition: int, offset: int) -> float | None:
        """Unix time of the record at ``offset`` (None: nothing readable there yet)."""
        key = (topic, partition, offset)
        if key in self._stamps:
            return self._stamps[key]
        self.consumer.assign([TopicPartition(topic, partition, offset)])
        try:
            record = self.consumer.poll(self.timeout)
        finally:
            self.consumer.unassign()
        if record is None or record.error() is not None:
            return None
        kind, stamp_ms = record.timestamp()
        if kind == 0 or stamp_ms <= 0:  # TIMESTAMP_NOT_AVAILABLE
            return None
        # A compacted or deleted offset yields the next record: still the oldest one waiting.
        self._stamps[key] = stamp_ms / 1000
        return self._stamps[key]

    def _forget(self, committed: dict[str, list[Any]]) -> None:
        """Keep only the stamps of offsets still committed (the cache stays bounded)."""
        live = {(tp.topic, tp.partition, tp.offset) for tps in committed.values() for tp in tps}
        for key in [k for k in self._stamps if k not in live]:
            del self._stamps[key]
