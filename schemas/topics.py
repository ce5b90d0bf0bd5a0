"""The topic catalog, declared once in topics.yaml beside the contracts; code names topics by id.

`hl7bus topics apply` (ops/topics_apply.py) creates what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

RAW = "raw"
DLQ = "dlq"
EVENTS = "events"


def research(event_type: str) -> str:
    """Catalog id of the research topic for an event type (Patient -> research.patient)."""
    return f"research.{event_type.lower()}"


class TopicsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(
        "", description="Prepended to every catalog topic name, e.g. 'site1.' (tests use one each)."
    )
    replication_factor: int = Field(
        1, ge=1, description="Replicas per partition when creating topics (3 in production)."
    )
    min_insync_replicas: int = Field(
        1, ge=1, description="min.insync.replicas of created topics (2 in production)."
    )
    catalog: Path | None = Field(
        None, description="Topic catalog file; the packaged schemas/topics.yaml when unset."
    )


@dataclass(frozen=True)
class TopicSpec:
    id: str
    name: str
    partitions: int
    doc: str
    phi: bool
    config: dict[str, str] = field(default_factory=dict)


class TopicCatalog:
    def __init__(self, specs: dict[str, TopicSpec]) -> None:
        self.specs = specs

    @classmethod
    def load(cls, cfg: TopicsConfig) -> TopicCatalog:
        if cfg.catalog is not None:
            text = cfg.catalog.read_text(encoding="utf-8")
        else:
            text = resources.files(__package__).joinpath("topics.yaml").read_text("utf-8")
        raw: dict[str, Any] = yaml.safe_load(text)["topics"]
        specs = {}
        for topic_id, entry in raw.items():
            config = {k: str(v) for k, v in (entry.get("config") or {}).items()}
            config.setdefault("min.insync.replicas", str(cfg.min_insync_replicas))
            specs[topic_id] = TopicSpec(
                id=topic_id,
                name=cfg.prefix + entry["name"],
                partitions=int(entry["partitions"]),
                doc=entry.get("doc", ""),
                phi=bool(entry.get("phi", True)),
                config=config,
            )
        return cls(specs)

    def name(self, topic_id: str) -> str:
        try:
            return self.specs[topic_id].name
        except KeyError:
            raise KeyError(f"topic id {topic_id!r} is not in the catalog") from None
