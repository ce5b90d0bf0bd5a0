"""The effective configuration: one YAML file plus HL7BUS_* environment overrides.

This module and the CLI are the composition root: each component module owns its config
model (pydantic, extra="forbid", a description on every field); this file only assembles them.
Environment variables name a section and a key, split at the first underscore:
HL7BUS_KAFKA_BOOTSTRAP sets kafka.bootstrap, HL7BUS_MLLP_MAX_FRAME_BYTES sets mllp.max_frame_bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hl7bus.connectors.files import FilesConfig
from hl7bus.connectors.kafka_clients import DEFAULT_BOOTSTRAP, KafkaConfig
from hl7bus.connectors.mllp.server import MllpConfig
from hl7bus.connectors.warehouse.duckdb_sink import WarehouseConfig
from hl7bus.ops.local_kafka import LocalKafkaConfig, running_bootstrap
from hl7bus.schemas.codec import SchemasConfig
from hl7bus.schemas.topics import TopicsConfig
from hl7bus.streams.deidentify import DeidConfig
from hl7bus.streams.runtime import WorkerConfig

CONFIG_ENV = "HL7BUS_CONFIG"
_MASK = "********"


class ConfigError(ValueError):
    """A config file, key or value that cannot be used; the message names it and says why."""


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
        data = _read_yaml(path)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of sections "
            f"({', '.join(Settings.model_fields)}), not a {type(data).__name__}"
        )
    return data


def _explain(exc: ValidationError, path: Path | None) -> str:
    source = f"config file {path}" if path else "config"
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        env_name = "HL7BUS_" + "_".join(loc[:2]).upper()
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(loc[:-1]))
            lines.append(f"  {key}: unknown key; allowed here: {allowed}")
            continue
        value = error.get("input")
        shown = "(missing)" if error["type"] == "missing" else repr(_redact(key, value))
        lines.append(f"  {key} = {shown}: {error['msg']} (file key {key} or env {env_name})")
    return "\n".join(lines)


def _allowed_keys(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        if part.isdigit():  # an item of a list of models (mllp.feeds.0)
            continue
        field = model.model_fields.get(part)
        nested = _nested_model(field.annotation) if field else None
        if nested is None:
            return []
        model = nested
    return list(model.model_fields)


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside an annotation: M, M | None, list[M]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


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


def _mask(data: Any, model: Any) -> Any:
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
    if isinstance(default, Path):
        default = str(default).replace(str(Path.home()), "~")
    return "(unset)" if default is None else f"`{default!s}`" if default != "" else '`""`'


def _nested_tables(prefix: str, model: type[BaseModel], seen: set[type[BaseModel]]) -> list[str]:
    """Tables for the keys of nested models (mllp.tls, mllp.feeds[]); set them in the file, or
    as JSON in the environment variable of their section key."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        nested = _nested_model(field.annotation)
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
            lines.append(f"| `{sub_name}` | {_shown_default(sub)} | {description} |")
        lines.append("")
        lines += _nested_tables(key, nested, seen)
    return lines
