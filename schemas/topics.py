"""The topic catalog, declared once in topics.yaml beside the contracts; code names topics by id.

`hl7bus topics apply` (ops/topics_apply.py) creates what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from hl7bus.schemas.datafile import load_yaml

RAW = "raw"
DLQ = "dlq"
EVENTS = "events"
DLQ_DONE = "dlq_done"


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


class TopicEntry(BaseModel):
    """One topic of topics.yaml, under its catalog id."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: str = Field(description="The Kafka topic name, before topics.prefix.")
    partitions: int = Field(ge=1, description="Partitions the topic is created with.")
    doc: str = Field("", description="What the topic holds, for the event catalog.")
    phi: bool = Field(True, description="Whether its records carry patient data (restricted).")
    config: dict[str, str] = Field(
        default_factory=dict,
        description="Kafka topic configs (cleanup.policy, retention.ms, ...) it is created with.",
    )


class CatalogFile(BaseModel):
    """topics.yaml: the catalog ids and their topics."""

    model_config = ConfigDict(extra="forbid")

    topics: dict[str, TopicEntry] = Field(description="Catalog id -> the topic.")


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
        """The catalog file (cfg.catalog or the packaged one); DataFileError when it is bad."""
        if cfg.catalog is not None:
            catalog = load_yaml(CatalogFile, cfg.catalog, f"topic catalog {cfg.catalog}")
        else:
            packaged = resources.files(__package__).joinpath("topics.yaml")
            catalog = load_yaml(CatalogFile, packaged, "topic catalog schemas/topics.yaml")
        specs = {}
        for topic_id, entry in catalog.topics.items():
            config = dict(entry.config)
            config.setdefault("min.insync.replicas", str(cfg.min_insync_replicas))
            specs[topic_id] = TopicSpec(
                id=topic_id,
                name=cfg.prefix + entry.name,
                partitions=entry.partitions,
                doc=entry.doc,
                phi=entry.phi,
                config=config,
            )
        return cls(specs)

    def name(self, topic_id: str) -> str:
        try:
            return self.specs[topic_id].name
        except KeyError:
            raise KeyError(f"topic id {topic_id!r} is not in the catalog") from None
