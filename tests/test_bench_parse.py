"""`hl7bus bench parse`: the JSON shape with tiny counts (timings are not checked), and
that the four contenders of the mapper workload read the same values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hl7bus.hl7v2 import parse
from hl7bus.ops.cli import app
from hl7bus.ops.cli.bench import bench_module

# bench/ sits next to the package folders in the checkout; loaded as `hl7bus bench` loads it.
bench = bench_module("parse")

CONTENDERS = {"hl7bus", "python-hl7", "hl7apy", "str.split"}


def test_bench_parse_json_shape() -> None:
    args = ["bench", "parse", "--messages", "3", "--seconds", "0", "--hl7apy-messages", "3"]
    args += ["--rounds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "parse"
    assert data["command"].startswith("hl7bus bench parse --messages 3")
    assert data["machine"]["cores"] >= 1 and data["machine"]["python"]
    assert data["params"]["rounds"] == 2
    assert set(data["workloads"]) == {"mapper", "walk"}
    for workload in data["workloads"].values():
        results = workload["results"]
        assert set(results) == CONTENDERS
        for figures in results.values():
            assert figures["messages_per_s"] > 0 and figures["messages"] >= 1
        assert set(workload["ratios"]) == {f"hl7bus/{n}" for n in CONTENDERS - {"hl7bus"}}
        assert all(r > 0 for r in workload["ratios"].values())
        low, high = workload["ratio_range"]["hl7bus/python-hl7"]
        assert 0 < low <= high
    # The mapper workload: every contender read the same values of the same messages
    # (hl7apy gets as many messages as the others here).
    results = data["workloads"]["mapper"]["results"]
    assert len({figures["values_per_message"] for figures in results.values()}) == 1, results
    # The full walk: python-hl7 reads every field, as hl7bus does (hl7apy exposes only
    # the non-empty ones, and str.split counts MSH-1 differently).
    walk = data["workloads"]["walk"]["results"]
    assert walk["hl7bus"]["values_per_message"] == walk["python-hl7"]["values_per_message"]
    mapper = results["hl7bus"]["values_per_message"]
    assert 80 <= mapper <= 130  # 18 + 8 per OBX, 11 to 13 OBX per message
    assert set(data["targets"]) == {
        "mapper: hl7bus/hl7apy",
        "mapper: hl7bus/python-hl7",
        "mapper: hl7bus/str.split",
        "walk: hl7bus/python-hl7",
    }
    for target in data["targets"].values():
        assert target["met"] == (target["ratio"] >= target["min"])
    assert data["all_targets_met"] == all(t["met"] for t in data["targets"].values())


def test_mapper_readers_agree() -> None:
    """The four readers of workload (a) read the same paths: same values, in the same
    order, on every message of the corpus (empty and absent are both None here: the
    peers give "" where hl7bus gives None)."""
    messages = bench.corpus(200)
    for data in messages[:: 10 if len(messages) > 20 else 1]:
        values = {name: [v or None for v in read(data)] for name, read in bench.READERS.items()}
        ours = values["hl7bus"]
        obx = sum(1 for _ in parse(data).segments("OBX"))
        assert len(ours) == len(bench.HEADER_PATHS) + len(bench.OBX_PATHS) * obx
        for name, theirs in values.items():
            assert theirs == ours, name
    for data in messages:
        ours = bench.read_hl7bus(data)
        assert ours == [v or None for v in bench.read_python_hl7(data)]
        assert ours == [v or None for v in bench.read_str_split(data)]


def test_bench_parse_profile() -> None:
    result = CliRunner().invoke(app, ["bench", "parse", "--profile", "--messages", "2"])
    assert result.exit_code == 0, result.output
    assert "read_hl7bus" in result.stdout and "walk_hl7bus" in result.stdout


def test_bench_needs_the_source_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed wheel has no bench/ folder: `hl7bus bench` says so instead of failing
    on an import."""
    from hl7bus.ops.cli import bench as bench_cli

    installed = tmp_path / "site-packages" / "hl7bus" / "ops" / "cli" / "bench.py"
    monkeypatch.setattr(bench_cli, "__file__", str(installed))
    result = CliRunner().invoke(app, ["bench", "stream"])
    assert result.exit_code == 1
    assert "source checkout" in result.output and "bench/" in result.output
