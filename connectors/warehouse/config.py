"""The warehouse section of the configuration (``warehouse``): which database, which schemas,
how records are batched, which result statuses load, and the health endpoints."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A schema name goes into SQL text: plain lower-case identifiers only.
SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]*$"


def _default_path() -> Path:
    return Path.home() / ".cache" / "hl7bus" / "warehouse.duckdb"


class WarehouseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path = Field(
        default_factory=_default_path,
        description="DuckDB database file (the embedded default; unused when url is set).",
    )
    url: str | None = Field(
        None,
        description=(
            "PostgreSQL connection URL (postgresql://user@host:port/db); when set, the "
            "warehouse is that database instead of the DuckDB file."
        ),
    )
    cdm_schema: str | None = Field(
        None,
        pattern=SCHEMA_PATTERN,
        description=(
            "Schema of the OMOP tables (created when missing); null: the engine's default "
            "(DuckDB main, PostgreSQL public). Grant research users this schema only."
        ),
    )
    keys_schema: str = Field(
        "hl7bus_keys",
        pattern=SCHEMA_PATTERN,
        description=(
            "Schema of the key map (pseudonymous source key -> OMOP integer id), kept apart "
            "from the OMOP tables: research users are not granted it."
        ),
    )
    group_id: str = Field(
        "hl7bus-warehouse", description="Kafka consumer group of the warehouse sink."
    )
    batch_size: int = Field(
        5000,
        ge=1,
        description=(
            "Most records written per transaction. A batch costs a few statements per table "
            "however many rows it has, so big batches keep up with a fast stream; a slow one "
            "is written every poll_timeout_s."
        ),
    )
    poll_timeout_s: float = Field(
        # 0.5 s made the sink alone add 0.8 s on average to freshness at 3,600 records/s (a
        # batch waited out the whole timeout, then its write); 0.1 s cut that to 0.23 s for
        # about 0.04 more of a core (more, smaller batches): BENCHMARKS.md, e2e.
        0.1,
        gt=0,
        description=(
            "Longest wait for a batch to fill before writing what came: a record waits up to "
            "this long plus the previous batch's write before its own transaction starts. "
            "Lower is fresher; each batch costs a few statements per table whatever its size, "
            "so much lower spends CPU on small batches."
        ),
    )
    load_result_statuses: list[str] = Field(
        default_factory=lambda: ["F", "C", "A", "U"],
        description=(
            "OBX-11 result statuses that are loaded (C and A replace the earlier row of the "
            "same result). P (preliminary) is not loaded unless listed here; a result without "
            "a status is loaded."
        ),
    )
    delete_result_statuses: list[str] = Field(
        default_factory=lambda: ["D", "W", "X"],
        description="OBX-11 result statuses that delete the row of the same result.",
    )
    retry_initial_s: float = Field(
        0.5,
        gt=0,
        description=(
            "First wait before reconnecting after a database outage (server down, connection "
            "lost, DuckDB file locked, disk full); doubled after each failed attempt."
        ),
    )
    retry_max_s: float = Field(
        15.0, gt=0, description="Longest wait between two reconnection attempts in an outage."
    )
    lock_timeout_s: float | None = Field(
        30.0,
        gt=0,
        description=(
            "PostgreSQL: longest wait for a table lock another session holds before the batch "
            "is given up as an outage (reason locked: paused, retried); null: wait as long as "
            "it takes. Unused on DuckDB, whose file lock is taken at connection."
        ),
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address of /metrics, /healthz, /readyz (0.0.0.0 for all)."
    )
    metrics_port: int | None = Field(
        9466, ge=0, le=65535, description="Port of /metrics, /healthz, /readyz; null: off."
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (the only server engine)")
        return value

    @field_validator("load_result_statuses", "delete_result_statuses")
    @classmethod
    def _statuses(cls, value: list[str]) -> list[str]:
        for status in value:
            if len(status) != 1 or not status.isalpha():
                raise ValueError(f"{status!r} is not an OBX-11 status (one letter, table 0085)")
        return [status.upper() for status in value]

    @model_validator(mode="after")
    def _load_or_delete(self) -> WarehouseConfig:
        both = sorted(set(self.load_result_statuses) & set(self.delete_result_statuses))
        if both:
            raise ValueError(
                f"result statuses {', '.join(both)} are in both load_result_statuses and "
                "delete_result_statuses"
            )
        return self
