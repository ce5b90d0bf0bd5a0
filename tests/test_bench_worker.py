"""`hl7bus bench deid` and `hl7bus bench stream` as the worker's throughput is measured with
them (BENCHMARKS.md, worker): the JSON shape of bench deid with tiny counts (timings are not
checked), its profile, and what bench stream refuses before it starts a broker."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hl7bus.ops.cli import app
from hl7bus.ops.cli.bench import bench_module

stream = bench_module("stream")


def test_bench_deid_reports_the_fused_step_with_and_without_identified_output() -> None:
    args = ["bench", "deid", "--messages", "2", "--seconds", "0", "--rounds", "1", "--profile"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    per_core = data["per_core"]
    assert per_core["parse_normalize_deidentify_us_per_message"] > 0
    assert per_core["research_only_us_per_message"] > 0
    assert data["corpus"]["refused_events"] == 0
    assert "parse_step" in result.stderr  # the profile of the fused step


def test_bench_stream_refuses_unknown_contenders_and_a_baseline_that_is_no_checkout(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(app, ["bench", "stream", "--contenders", "parse,nope"])
    assert result.exit_code == 2
    assert "--contenders" in result.output and "research_only" in result.output
    result = CliRunner().invoke(app, ["bench", "stream", "--baseline", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a checkout of hl7bus" in result.output


def test_the_baseline_package_maps_another_checkouts_folders(tmp_path: Path) -> None:
    """The workers of --baseline import `hl7bus` from a folder whose subpackages are the
    other checkout's top-level folders."""
    checkout = Path(stream.__file__).resolve().parent.parent
    folder = stream._package_of(checkout, tmp_path / "baseline")
    for sub in ("hl7v2", "schemas", "streams", "connectors", "ops"):
        assert (folder / "hl7bus" / sub).resolve() == (checkout / sub).resolve()
    assert not (folder / "hl7bus" / "__init__.py").exists()  # a namespace package, as installed
