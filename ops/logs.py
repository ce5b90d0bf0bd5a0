"""The log output of the long-running processes: text for a terminal, or one JSON object a line
for a log pipeline (`log.format`).

What is logged is each component's business (a line for each thing that matters: start, stop,
a refused connection, records sent to the DLQ with their reason code); this module only
formats. Neither format ever prints a traceback or an exception's text: either may quote a
message, and logs never hold patient data (docs/architecture.md, Privacy). A record's
exception shows as its type only.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class LogConfig(BaseModel):
    """The `log` section."""

    model_config = ConfigDict(extra="forbid")

    format: LogFormat = Field(
        "text",
        description="text (one readable line per record) or json (one JSON object per line: "
        "time, level, logger, component, message, and exc_type when an exception is attached).",
    )
    level: LogLevel = Field(
        "info",
        description="Lowest level logged by the listener, sinks, file source and lag exporter "
        "(the worker takes its own --loglevel).",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``component`` names the process (mllp, worker, ...)."""

    def __init__(self, component: str = "hl7bus") -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "component": self.component,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger: message``; an attached exception shows as its type only."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        plain = copy.copy(record)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        line = super().format(plain)
        if record.exc_info and record.exc_info[0] is not None:
            line += f" ({record.exc_info[0].__name__})"
        return line


def dict_config(cfg: LogConfig, component: str, level: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: one stderr handler in the configured format."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter, "component": component}
        if cfg.format == "json"
        else {"()": TextFormatter}
    )
    lowest = (level or cfg.level).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hl7bus": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "hl7bus",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": lowest, "handlers": ["stderr"]},
    }


def configure(cfg: LogConfig, component: str) -> logging.Logger:
    """Set up the process's logging; returns its logger for start and stop lines."""
    logging.config.dictConfig(dict_config(cfg, component))
    return logging.getLogger(f"hl7bus.{component}")


def client_logging(cfg: LogConfig) -> dict[str, Any]:
    """librdkafka settings that route its log lines through Python logging in JSON mode (by
    default librdkafka writes its own lines to stderr, which would break a JSON log)."""
    if cfg.format != "json":
        return {}
    return {"logger": logging.getLogger("hl7bus.librdkafka")}
