"""`hl7bus topics apply`: create the catalog topics that are missing, report drift; never delete."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from hl7bus.schemas.topics import TopicCatalog, TopicSpec


@dataclass(frozen=True)
class TopicPlan:
    """What `topics apply` found for one topic."""

    spec: TopicSpec
    action: str  # "create" | "ok" | "drift"
    drift: list[str]


def plan(admin: AdminClient, catalog: TopicCatalog, timeout: float = 15.0) -> list[TopicPlan]:
    metadata = admin.list_topics(timeout=timeout)
    present = [s for s in catalog.specs.values() if s.name in metadata.topics]
    configs: dict[str, dict[str, str]] = {}
    if present:
        futures = admin.describe_configs(
            [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in present]
        )
        for resource, fut in futures.items():
            configs[resource.name] = {k: v.value for k, v in fut.result(timeout=timeout).items()}
    plans = []
    for spec in catalog.specs.values():
        if spec.name not in metadata.topics:
            plans.append(TopicPlan(spec, "create", []))
            continue
        drift = []
        have_partitions = len(metadata.topics[spec.name].partitions)
        if have_partitions != spec.partitions:
            drift.append(f"partitions: have {have_partitions}, catalog says {spec.partitions}")
        have = configs.get(spec.name, {})
        for key, want in spec.config.items():
            if have.get(key) != want:
                drift.append(f"{key}: have {have.get(key)}, catalog says {want}")
        plans.append(TopicPlan(spec, "drift" if drift else "ok", drift))
    return plans


def apply(
    admin: AdminClient, catalog: TopicCatalog, replication_factor: int, timeout: float = 30.0
) -> list[TopicPlan]:
    """Create the catalog topics that are missing. Never deletes or alters existing topics."""
    plans = plan(admin, catalog, timeout)
    missing = [p.spec for p in plans if p.action == "create"]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(s.name, s.partitions, replication_factor, config=dict(s.config))
                for s in missing
            ],
            operation_timeout=timeout,
        )
        for fut in futures.values():
            fut.result(timeout=timeout)
        _await_leaders(admin, [s.name for s in missing], timeout)
    return plans


def _await_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Wait until every partition of the new topics has a leader.

    CreateTopics returns before the metadata has spread; a producer or a watermark query in
    that gap fails with UNKNOWN_TOPIC or NOT_LEADER, so `apply` returns only when they work.
    """
    deadline = time.monotonic() + timeout
    while True:
        metadata = admin.list_topics(timeout=timeout)
        ready = all(
            name in metadata.topics
            and metadata.topics[name].partitions
            and all(p.leader >= 0 for p in metadata.topics[name].partitions.values())
            for name in names
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"created topics have no leader after {timeout:.0f}s: {names}")
        time.sleep(0.1)
