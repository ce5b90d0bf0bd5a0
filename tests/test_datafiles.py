"""The data files (topic catalog, routing table) are checked against their models; an error
names the file, the entry and the key, and lists the allowed keys for an unknown one."""

from __future__ import annotations

from pathlib import Path

import pytest

from hl7bus.schemas import datafile
from hl7bus.schemas.datafile import DataFileError
from hl7bus.schemas.topics import TopicCatalog, TopicsConfig
from hl7bus.streams.mapping import Routing, default_routing

TOPIC_KEYS = "name, partitions, doc, phi, config"


def catalog_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "topics.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        TopicCatalog.load(TopicsConfig(catalog=path))
    return path, str(caught.value)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "name: hl7.raw\n    partitions: 6\n    retention: 7d\n",
            f"topics.raw.retention: unknown key; allowed here: {TOPIC_KEYS}",
        ),
        ("name: hl7.raw\n", "topics.raw.partitions = (missing): Field required"),
        (
            "name: hl7.raw\n    partitions: six\n",
            "topics.raw.partitions = 'six': Input should be a valid integer, unable to parse "
            "string as an integer",
        ),
        (
            "name: hl7.raw\n    partitions: 6\n    config: [cleanup.policy]\n",
            "topics.raw.config = ['cleanup.policy']: Input should be a valid dictionary",
        ),
    ],
)
def test_topic_catalog_errors_name_the_topic_and_key(
    tmp_path: Path, entry: str, problem: str
) -> None:
    path, message = catalog_error(tmp_path, "topics:\n  raw:\n    " + entry)
    assert message == f"topic catalog {path}: 1 problem(s)\n  {problem}"


def test_topic_catalog_top_level(tmp_path: Path) -> None:
    path, message = catalog_error(tmp_path, "topic:\n  raw: {name: hl7.raw, partitions: 6}\n")
    assert message == (
        f"topic catalog {path}: 2 problem(s)\n"
        "  topics = (missing): Field required\n"
        "  topic: unknown key; allowed here: topics"
    )
    path, message = catalog_error(tmp_path, "- raw\n")
    assert (
        message
        == f"topic catalog {path}: the top level must be a mapping of keys (topics), not a list"
    )


def test_topic_config_values_are_text(tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    path.write_text(
        "topics:\n  raw:\n    name: hl7.raw\n    partitions: 2\n    config: {retention.ms: 1000}\n",
        encoding="utf-8",
    )
    spec = TopicCatalog.load(TopicsConfig(catalog=path, prefix="p.")).specs["raw"]
    assert (spec.name, spec.partitions, spec.doc, spec.phi) == ("p.hl7.raw", 2, "", True)
    assert spec.config == {"retention.ms": "1000", "min.insync.replicas": "1"}


def routing_error(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = tmp_path / "routing.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as caught:
        datafile.load_yaml(Routing, path, f"routing table {path}")
    return path, str(caught.value)


ROUTING_TAIL = "encounter_actions: {A01: admit}\nimmunization_messages: [VXU]\n"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "messages: {ADT^A01: [patient]}\n" + ROUTING_TAIL + "mappers: [patient]\n",
            [
                "mappers: unknown key; allowed here: messages, encounter_actions, "
                "immunization_messages"
            ],
        ),
        (ROUTING_TAIL, ["messages = (missing): Field required"]),
        (
            "messages: {ADT^A01: patient, ORU^R01: [orders, {observations: 1}]}\n" + ROUTING_TAIL,
            [
                "messages.ADT^A01 = 'patient': Input should be a valid list",
                "messages.ORU^R01.1 = {'observations': 1}: Input should be a valid string",
            ],
        ),
    ],
)
def test_routing_errors_name_the_message_type_and_key(
    tmp_path: Path, text: str, problems: list[str]
) -> None:
    path, message = routing_error(tmp_path, text)
    lines = [f"routing table {path}: {len(problems)} problem(s)", *(f"  {p}" for p in problems)]
    assert message == "\n".join(lines)


def test_packaged_routing_loads() -> None:
    routing = default_routing()
    assert routing.mappers_for("ADT^A01") == routing.messages["ADT^A01"]
    assert routing.mappers_for("MDM^T02") == ["documents"]  # a bare MSH-9.1 covers its triggers
    assert "VXU" in routing.immunization_messages


def test_allowed_keys_walk_lists_dicts_and_optionals() -> None:
    from pydantic import BaseModel

    class Leaf(BaseModel):
        a: int
        b: int

    class Root(BaseModel):
        many: list[Leaf]
        named: dict[str, Leaf]
        maybe: Leaf | None = None
        plain: dict[str, int]

    assert datafile.allowed_keys(Root, []) == ["many", "named", "maybe", "plain"]
    for loc in (["many", "0"], ["named", "x"], ["maybe"]):
        assert datafile.allowed_keys(Root, loc) == ["a", "b"]
    assert datafile.allowed_keys(Root, ["plain", "x"]) == []
    assert datafile.allowed_keys(Root, ["nothing"]) == []


@pytest.mark.parametrize("command", [["topics", "apply", "--dry-run"], ["status"], ["worker"]])
def test_cli_stops_on_a_bad_catalog_with_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None, command: list[str]
) -> None:
    from typer.testing import CliRunner

    from hl7bus.ops.cli import app

    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  raw: {name: hl7.raw, partitions: 6, retention: 7d}\n", "utf-8")
    monkeypatch.setenv("HL7BUS_TOPICS_CATALOG", str(path))
    monkeypatch.setenv("HL7BUS_DEID_KEY", "k" * 64)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "topics.raw.retention: unknown key" in result.output
    assert "Traceback" not in result.output
