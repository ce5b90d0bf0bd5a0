"""The log formats (hl7bus.ops.logs): JSON one object a line, text one line a record; neither
prints a traceback or an exception's text, which may quote a message."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from hl7bus.ops.logs import JsonFormatter, LogConfig, TextFormatter, dict_config

SECRET = "Qanarywick^Zelphine"


def _record_with_exception() -> logging.LogRecord:
    try:
        raise ValueError(f"bad field {SECRET}")
    except ValueError:
        info = sys.exc_info()
    return logging.LogRecord(
        "hl7bus.test", logging.ERROR, __file__, 1, "batch failed (%s)", ("ValueError",), info
    )


def test_json_lines_carry_the_fields_and_only_the_exception_type() -> None:
    line = JsonFormatter("mllp").format(_record_with_exception())
    data = json.loads(line)
    assert data["level"] == "error"
    assert data["logger"] == "hl7bus.test"
    assert data["component"] == "mllp"
    assert data["message"] == "batch failed (ValueError)"
    assert data["exc_type"] == "ValueError"
    assert data["time"].endswith("+00:00")
    assert SECRET not in line and "Traceback" not in line
    assert "\n" not in line


def test_text_lines_never_carry_a_traceback() -> None:
    line = TextFormatter().format(_record_with_exception())
    assert line.endswith("hl7bus.test: batch failed (ValueError) (ValueError)")
    assert SECRET not in line and "Traceback" not in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_dict_config_names_the_formatter_and_level(fmt: str) -> None:
    """The processes apply it (tests/test_observability.py runs them with log.format json)."""
    config = dict_config(LogConfig(format=fmt), "worker", "warn")
    assert config["root"] == {"level": "WARN", "handlers": ["stderr"]}
    factory = config["formatters"]["hl7bus"]["()"]
    assert factory is (JsonFormatter if fmt == "json" else TextFormatter)
