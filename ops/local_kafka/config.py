"""Where and how the local broker runs: :class:`LocalKafkaConfig`, the ``broker`` settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hl7bus.connectors.paths import default_home


class LocalKafkaConfig(BaseModel):
    """Where and how the local broker runs."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="Address the broker listens on and advertises to clients. A concrete "
        "address, not a wildcard, because clients connect to what is advertised.",
    )
    port: int = Field(
        default=9092,
        ge=0,
        le=65535,
        description="Client (PLAINTEXT) port. 0 picks a free port. When the port is taken, "
        "the broker starts on another free port and BrokerInfo.notes says so.",
    )
    controller_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="KRaft controller port. 0 reuses the previous start's port when free, "
        "else picks a free one.",
    )
    sasl_ssl_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of an extra client listener speaking SASL_SSL (SCRAM-SHA-512 over "
        "TLS, with a throwaway CA made in the instance directory), to try the clients' TLS and "
        "SASL settings; 0 picks a free port; null: none. `hl7bus kafka up` prints its settings.",
    )
    heap: str = Field(
        default="512m",
        pattern=r"^[1-9][0-9]*[kKmMgG]?$",
        description="Maximum JVM heap (java -Xmx), e.g. 512m or 1g.",
    )
    home: Path = Field(
        default_factory=default_home,
        description="Cache directory; the resolved jars live in <home>/kafka-<version>/libs.",
    )
    data_root: Path | None = Field(
        default=None,
        description="Directory holding one sub-directory per named broker instance "
        "(data, log, state). Defaults to <home>/broker.",
    )
    name: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="Instance name; each name has its own data directory and state.",
    )
    start_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for a started broker to answer a metadata request.",
    )

    @field_validator("host")
    @classmethod
    def _concrete_host(cls, value: str) -> str:
        if value.strip("[]") in {"", "0.0.0.0", "::"}:
            raise ValueError(
                "must be a concrete address such as 127.0.0.1: it is also the address "
                "advertised to clients, and a wildcard cannot be connected to"
            )
        return value.strip("[]")

    @field_validator("home", "data_root")
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @property
    def instance_dir(self) -> Path:
        root = self.data_root if self.data_root is not None else self.home / "broker"
        return (root / self.name).absolute()
