"""The effective configuration: one YAML file plus HL7BUS_* environment overrides.

This module and the CLI are the composition root: each component module owns its config
model (pydantic, extra="forbid", a description on every field); this file only assembles them.
Environment variables name a section and a key, split at the first underscore:
HL7BUS_KAFKA_BOOTSTRAP sets kafka.bootstrap, HL7BUS_MLLP_MAX_FRAME_BYTES sets mllp.max_frame_bytes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hl7bus.connectors.files import FilesConfig
from hl7bus.connectors.kafka_clients import DEFAULT_BOOTSTRAP, KafkaConfig
from hl7bus.connectors.lake.config import LakeConfig
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.ops.dlq import DlqConfig
from hl7bus.ops.lag_exporter import LagExporterConfig
from hl7bus.ops.local_kafka import LocalKafkaConfig, running_bootstrap
from hl7bus.ops.logs import LogConfig
from hl7bus.schemas.codec import SchemasConfig
from hl7bus.schemas.datafile import DataFileError, explain, nested_model, read_yaml
from hl7bus.schemas.topics import TopicsConfig
from hl7bus.streams.deid import DeidConfig
from hl7bus.streams.worker_config import WorkerConfig

CONFIG_ENV = "HL7BUS_CONFIG"
_MASK = "********"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HL7BUS_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka clients.")
    broker: LocalKafkaConfig = Field(
        default_factory=LocalKafkaConfig, description="The local broker of `hl7bus kafka up`."
    )
    topics: TopicsConfig = Field(default_factory=TopicsConfig, description="Topic catalog.")
    mllp: MllpConfig = Field(default_factory=MllpConfig, description="The MLLP listener.")
    files: FilesConfig = Field(
        default_factory=FilesConfig, description="The file source (`hl7bus ingest`)."
    )
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Stream processors.")
    deid: DeidConfig = Field(default_factory=DeidConfig, description="De-identification.")
    schemas: SchemasConfig = Field(
        default_factory=SchemasConfig,
        description="Value encoding: Avro single-object (default) or a schema registry.",
    )
    warehouse: WarehouseConfig = Field(
        default_factory=WarehouseConfig, description="The warehouse sink."
    )
    log: LogConfig = Field(
        default_factory=LogConfig, description="Log format and level of the processes."
    )
    lag: LagExporterConfig = Field(
        default_factory=LagExporterConfig,
        description="The lag exporter (`hl7bus lag-exporter`): consumer-group lag for Prometheus.",
    )
    lake: LakeConfig = Field(
        default_factory=LakeConfig, description="The MEDS lake sink (AI training data)."
    )
    dlq: DlqConfig = Field(
        default_factory=DlqConfig,
        description="The DLQ and replay commands (`hl7bus dlq`, `hl7bus replay`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def load(path: Path | None = None) -> Settings:
    """Load the config file (or $HL7BUS_CONFIG, or none) with environment overrides."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(Settings, path, f"config file {path}", keys="sections")
    try:
        return Settings(**data)
    except ValidationError as exc:
        source = f"config file {path}" if path else "config"
        raise DataFileError(explain(exc, Settings, source, hint=_hint, redact=_redact)) from None


def _hint(loc: list[str]) -> str:
    """Where a value can be set: its file key or its environment variable."""
    env_name = "HL7BUS_" + "_".join(loc[:2]).upper()
    return f" (file key {'.'.join(loc)} or env {env_name})"


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in ("password", "secret", "key_value", "token"))


def _redact(key: str, value: Any) -> Any:
    return _MASK if _secret_key(key) else value


def effective(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, secrets masked, bootstrap resolved."""
    data = settings.model_dump(mode="json")
    data["kafka"]["bootstrap"] = bootstrap(settings)
    masked: dict[str, Any] = _mask(data, settings)
    return masked


# The password of a URL (postgresql://user:password@host/db).
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^@]*(@)")


def _mask(data: Any, model: Any) -> Any:
    if isinstance(data, str):
        return _URL_PASSWORD.sub(rf"\g<1>{_MASK}\g<2>", data)
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            sub = getattr(model, k, None) if model is not None else None
            if isinstance(sub, SecretStr) or (_secret_key(str(k)) and v not in (None, "")):
                out[k] = _MASK
            else:
                out[k] = _mask(v, sub if isinstance(sub, BaseModel | dict) else None)
        return out
    return data


def bootstrap(settings: Settings) -> str:
    """Configured bootstrap, else the running local broker's, else the default address."""
    if settings.kafka.bootstrap:
        return settings.kafka.bootstrap
    return running_bootstrap(settings.broker) or DEFAULT_BOOTSTRAP


def reference_markdown() -> str:
    """The config reference (docs/config.md), made from the models so it cannot drift."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `hl7bus config docs`; a test fails when this file drifts. -->",
        "",
        "One YAML file (`--config FILE` or `HL7BUS_CONFIG`) with the sections below; any key "
        "can be overridden by the environment variable shown beside it. Unknown keys are errors.",
        "",
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines += [f"## `{section}`", "", field.description or "", ""]
        lines += ["| key | default | environment | description |", "|---|---|---|---|"]
        for name, sub in model.model_fields.items():
            shown = _shown_default(sub)
            env = f"`HL7BUS_{section.upper()}_{name.upper()}`"
            description = (sub.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {shown} | {env} | {description} |")
        lines.append("")
        lines += _nested_tables(section, model, set())
    return "\n".join(lines)


def _shown_default(field: FieldInfo) -> str:
    if field.is_required():
        return "(required)"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "(below)"
    if isinstance(default, Path):
        default = str(default).replace(str(Path.home()), "~")
    return "(unset)" if default is None else f"`{default!s}`" if default != "" else '`""`'


def _nested_tables(prefix: str, model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    """Tables for the keys of nested models (mllp.tls, mllp.feeds[]); set them in the file, or
    as JSON in the environment variable of their section key."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        nested = nested_model(field.annotation)
        if nested is None or nested in seen:
            continue
        seen.add(nested)
        many = any(get_origin(a) is list for a in (field.annotation, *get_args(field.annotation)))
        key = f"{prefix}.{name}[]" if many else f"{prefix}.{name}"
        doc = (nested.__doc__ or "").strip().splitlines()
        lines += [f"### `{key}`", "", doc[0] if doc else "", ""]
        lines += ["| key | default | description |", "|---|---|---|"]
        for sub_name, sub in nested.model_fields.items():
            description = (sub.description or "").replace("|", "\\|")
            key_name = sub.alias or sub_name  # kafka.client: librdkafka's dotted names
            lines.append(f"| `{key_name}` | {_shown_default(sub)} | {description} |")
        lines.append("")
        lines += _nested_tables(key, nested, seen)
    return lines
