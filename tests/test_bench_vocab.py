"""`hl7bus bench vocab`: the JSON shape with a tiny vocabulary (timings are not checked), and
that its synthetic download is one the loader takes and the lookup maps in full."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hl7bus.connectors.warehouse.vocabulary.athena import FILES, find_problem
from hl7bus.ops.cli import app
from hl7bus.ops.cli.bench import bench_module

bench = bench_module("vocab")


def test_synthetic_download_is_well_formed(tmp_path: Path) -> None:
    rows = bench.write_synthetic(tmp_path, 2000)
    assert set(rows) == set(FILES.values())
    assert rows["CONCEPT.csv"] == 2000 and rows["CONCEPT_RELATIONSHIP.csv"] == 5000
    for table, name in FILES.items():
        assert find_problem(tmp_path / name, table) is None, name


def test_bench_vocab_json_shape() -> None:
    args = ["bench", "vocab", "--concepts", "2000", "--distinct", "20", "--seconds", "0.1"]
    result = CliRunner().invoke(app, [*args, "--rounds", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "vocab"
    assert data["command"].startswith("hl7bus bench vocab --concepts 2000 --distinct 20")
    [duckdb] = data["engines"]
    assert duckdb["engine"] == "duckdb"
    assert duckdb["distinct_codes"] == duckdb["mapped"] == 20
    assert duckdb["warm_ns_per_call"] > 0 and duckdb["peer_dict_get_ns_per_call"] > 0
    assert duckdb["preload"]["concepts"] == 2000
    assert duckdb["load"]["rows_per_s"] > 0
