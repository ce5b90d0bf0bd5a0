"""`hl7bus bench lake`: the JSON shape on a tiny stream (timings are not checked), and that the
sink's rows and the peer's are the same rows."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hl7bus.ops.cli import app


def test_bench_lake_json_shape() -> None:
    args = ["bench", "lake", "--stays", "3", "--batch-size", "50", "--rounds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["benchmark"] == "lake"
    assert data["command"] == "hl7bus bench lake --stays 3 --batch-size 50 --rounds 2"
    workload = data["workload"]
    assert workload["append_files"] == -(-workload["records"] // 50)  # one per batch
    # Corrections replace rows: the shards hold fewer rows than were appended.
    assert 0 < workload["meds_rows_published"] < workload["meds_rows_appended"]
    assert len(data["sink"]["append_s_rounds"]) == 2
    assert data["sink"]["events_per_s"] > 0 and data["peer_direct_pyarrow"]["events_per_s"] > 0
    assert data["compaction"]["incremental_pass"]["records"] > 0
    assert data["ratio"] > 0 and data["storage_path"]["ratio_to_direct"] > 0
    assert data["targets"]["ratio_min"] == 0.5
