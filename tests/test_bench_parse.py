"""`hl7bus bench parse`: the JSON shape with tiny counts (timings are not checked)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hl7bus.ops.cli import app


def test_bench_parse_json_shape() -> None:
    args = ["bench", "parse", "--messages", "3", "--seconds", "0", "--hl7apy-messages", "1"]
    args += ["--rounds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "parse"
    assert data["machine"]["cores"] >= 1 and data["machine"]["python"]
    results = data["results"]
    assert {"hl7bus", "python-hl7", "hl7apy", "str.split"} <= set(results)
    for figures in results.values():
        assert figures["messages_per_s"] > 0 and figures["messages"] >= 1
    assert results["hl7apy"]["messages"] >= 1
    assert set(data["ratios"]) >= {"hl7bus/python-hl7", "hl7bus/hl7apy"}
    assert all(r > 0 for r in data["ratios"].values())
    assert data["params"]["rounds"] == 2
    low, high = data["ratio_range"]["hl7bus/python-hl7"]
    assert 0 < low <= high
    # Every contender read the same fields of the same 17-segment messages.
    assert results["hl7bus"]["fields_per_message"] == results["python-hl7"]["fields_per_message"]


def test_bench_parse_profile() -> None:
    result = CliRunner().invoke(app, ["bench", "parse", "--profile", "--messages", "2"])
    assert result.exit_code == 0, result.output
    assert "walk_hl7bus" in result.stdout
