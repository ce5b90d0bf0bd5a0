"""ops/grafana/hl7bus.json against Grafana's published JSON schemas (tests/grafana/README.md):
the dashboard, every query (Prometheus dataquery) and every panel's options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path(__file__).resolve().parent / "grafana"
DASHBOARD = ROOT / "ops" / "grafana" / "hl7bus.json"


def _schema(name: str, definition: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text("utf-8"))
    if definition is not None:  # validate against one definition, the others still resolvable
        schema = {**schema, "$ref": f"#/definitions/{definition}"}
    return schema


def _validate(instance: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_matches_grafanas_schema() -> None:
    assert _validate(dashboard(), _schema("dashboard")) == []


def test_the_schema_catches_a_broken_dashboard() -> None:
    broken = dashboard()
    broken["panels"][1]["gridPos"]["w"] = "wide"
    del broken["templating"]
    errors = _validate(broken, _schema("dashboard"))
    assert any("templating" in e for e in errors), errors
    assert errors


@pytest.mark.parametrize("panel", panels(), ids=lambda p: str(p["title"]))
def test_every_query_and_panel_option_matches_its_schema(panel: dict[str, Any]) -> None:
    query = _schema("prometheus")
    for target in panel["targets"]:
        assert _validate(target, query) == [], target["refId"]
    assert _validate(panel["options"], _schema(panel["type"], "Options")) == []
    assert panel["targets"], "a panel without a query shows nothing"


def test_panel_ids_and_ref_ids_are_unique() -> None:
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
