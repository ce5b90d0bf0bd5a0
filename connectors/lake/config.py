"""The lake section of the configuration (``lake``): where the MEDS dataset lives, how it is
split and sharded, how records are batched and compacted, and the health endpoints. Subject ids
come from the warehouse's key map (the ``warehouse`` section's database and keys_schema)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.connectors.lake.layout import SPLITS, Layout

# Written with ~ (expanded where it is opened), so the generated reference shows no home folder.
_DEFAULT_PATH = "~/.cache/hl7bus/lake"


class LakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default=_DEFAULT_PATH,
        min_length=1,
        description=(
            "Root of the MEDS dataset (data/, metadata/, and the sink's own _hl7bus/): a local "
            "folder, or a URI pyarrow.fs.FileSystem.from_uri resolves (file:///..., "
            "s3://bucket/prefix, gs://bucket/prefix; credentials as pyarrow takes them). "
            "Created when missing; the sink refuses to start when it is not writable."
        ),
    )
    dataset_name: str = Field(
        "hl7bus", min_length=1, description="dataset_name of metadata/dataset.json."
    )
    group_id: str = Field("hl7bus-lake", description="Kafka consumer group of the lake sink.")
    batch_size: int = Field(
        5000, ge=1, description="Most records written per append file (one per batch)."
    )
    poll_timeout_s: float = Field(
        0.5, gt=0, description="Longest wait for a batch to fill before writing what came."
    )
    compact_interval_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Seconds between compaction passes while append files wait: how stale the shards "
            "may be. A pass rewrites only the shards whose subjects have new rows."
        ),
    )
    shards_per_split: int = Field(
        4,
        ge=1,
        le=10000,
        description=(
            "Shards (data/<split>/<n>.parquet) per split. Fixed for the life of a lake: a "
            "subject's shard follows from it."
        ),
    )
    split_ratios: dict[str, float] = Field(
        default_factory=lambda: {"train": 0.8, "tuning": 0.1, "held_out": 0.1},
        description=(
            "Share of subjects in each split (train, tuning, held_out; they sum to 1). Fixed "
            "for the life of a lake."
        ),
    )
    split_key: str = Field(
        "hl7bus-meds-split",
        min_length=1,
        description=(
            "Key of the keyed hash that places each subject in a split and a shard: the same "
            "key and ratios give the same splits in every run. Fixed for the life of a lake."
        ),
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics, /healthz, /readyz (0.0.0.0 for all)."
    )
    metrics_port: int | None = Field(
        9468, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        # A pathlib.Path is taken as its text; a URI stays as written (a Path would fold s3://).
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("split_ratios")
    @classmethod
    def _ratios(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split {unknown[0]!r} (the splits are {', '.join(SPLITS)})")
        if any(ratio < 0 for ratio in value.values()):
            raise ValueError("a split ratio cannot be negative")
        if abs(sum(value.values()) - 1.0) > 1e-6:
            raise ValueError(f"the split ratios sum to {sum(value.values()):g}, not 1")
        return {split: float(value.get(split, 0.0)) for split in SPLITS}

    def layout(self) -> Layout:
        ratios = self.split_ratios
        return Layout(
            self.split_key.encode(),
            (ratios["train"], ratios["tuning"], ratios["held_out"]),
            self.shards_per_split,
        )
