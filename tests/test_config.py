"""Config: one YAML file plus HL7BUS_* overrides; errors name the key, the value and the rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from hl7bus.ops import config
from hl7bus.schemas.datafile import DataFileError

pytestmark = pytest.mark.usefixtures("clean_env")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hl7bus.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file() -> None:
    settings = config.load(None)
    assert settings.mllp.port == 2575
    assert settings.topics.replication_factor == 1
    assert settings.worker.timezone == "Asia/Seoul"


def test_file_values_and_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "mllp:\n  port: 3000\n  feed: snuh-adt\nkafka:\n  bootstrap: a:1\n")
    monkeypatch.setenv("HL7BUS_KAFKA_BOOTSTRAP", "b:2")
    monkeypatch.setenv("HL7BUS_MLLP_MAX_FRAME_BYTES", "65536")
    settings = config.load(path)
    assert settings.mllp.port == 3000
    assert settings.mllp.feed == "snuh-adt"
    assert settings.kafka.bootstrap == "b:2"  # the environment wins over the file
    assert settings.mllp.max_frame_bytes == 65536
    assert config.bootstrap(settings) == "b:2"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7BUS_CONFIG", str(write(tmp_path, "mllp:\n  port: 4000\n")))
    assert config.load(None).mllp.port == 4000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mllp:\n  prot: 1\n", ["mllp.prot: unknown key", "allowed here: host, port"]),
        ("mllp:\n  port: abc\n", ["mllp.port = 'abc'", "valid integer", "HL7BUS_MLLP_PORT"]),
        ("mllp:\n  port: 70000\n", ["mllp.port = 70000", "less than or equal to 65535"]),
        ("worker:\n  timezone: Mars/Base\n", ["worker.timezone", "unknown time zone"]),
        (
            "worker:\n  identified_output: false\n  stages: [parse]\n",
            ["worker", "identified_output: false needs both stages"],
        ),
        ("nonsense: 1\n", ["nonsense: unknown key", "allowed here: kafka, broker"]),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("mllp: [1,\n", ["line 2", "column 1"]),
        ("warehouse:\n  url: mysql://h/db\n", ["warehouse.url", "postgresql://"]),
        ("warehouse:\n  cdm_schema: Cdm-1\n", ["warehouse.cdm_schema", "pattern"]),
        (
            "warehouse:\n  load_result_statuses: [F, XX]\n",
            ["warehouse.load_result_statuses", "'XX' is not an OBX-11 status"],
        ),
        (
            "warehouse:\n  load_result_statuses: [F, X]\n",
            ["warehouse", "X are in both load_result_statuses and delete_result_statuses"],
        ),
    ],
)
def test_errors_name_the_key_and_the_rule(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataFileError) as caught:
        config.load(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HL7BUS_MLLP_PORT", "-1")
    with pytest.raises(DataFileError, match="HL7BUS_MLLP_PORT"):
        config.load(None)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="cannot read"):
        config.load(tmp_path / "absent.yaml")


def test_effective_config_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "kafka:\n  bootstrap: k:9\n  client:\n    sasl.password: hunter2\n"
        "    security.protocol: SASL_SSL\n    sasl.mechanism: PLAIN\n    sasl.username: bus\n"
        "warehouse:\n  url: postgresql://sink:s3cret@db:5432/omop\n",
    )
    monkeypatch.setenv("HL7BUS_DEID_KEY", "0123456789abcdef0123")
    shown = config.effective(config.load(path))
    text = repr(shown)
    assert "hunter2" not in text
    assert "0123456789abcdef0123" not in text
    assert shown["kafka"]["client"]["security.protocol"] == "SASL_SSL"
    assert shown["kafka"]["bootstrap"] == "k:9"
    assert shown["deid"]["key"] == "********"
    assert "s3cret" not in text
    assert shown["warehouse"]["url"] == "postgresql://sink:********@db:5432/omop"


def test_config_reference_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/config.md is generated from the models; regenerate with `hl7bus config docs`."""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    committed = (Path(__file__).parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == config.reference_markdown(), "run: hl7bus config docs > docs/config.md"
