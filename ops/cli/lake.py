"""`hl7bus lake check` and `hl7bus sink lake`: the MEDS lake of the AI teams (docs/ai-sink.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.ops.cli.shared import ConfigOption, console, fail, load_settings

lake_app = typer.Typer(help="The MEDS lake: checking a dataset.", no_args_is_help=True)


@lake_app.command("check")
def check(
    root: Annotated[
        Path | None,
        typer.Argument(
            help="Root folder of the MEDS dataset (default: lake.path).", file_okay=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check a MEDS 0.4 dataset: every file against the meds package's schemas, then the rules
    across files (one shard per subject, rows contiguous and sorted by time, every code in
    codes.parquet, every subject in subject_splits.parquet). Exit code 1 when a rule is broken."""
    from hl7bus.connectors.lake.check import check_lake

    folder = root if root is not None else load_settings(config).lake.path
    report = check_lake(folder)
    for problem in report.problems:
        console.print(f"[red]✗[/] {problem}")
    if not report.ok:
        fail(f"{folder}: {len(report.problems)} problems: not a valid MEDS 0.4 dataset")
    console.print(
        f"[green]✓[/] {folder}: valid MEDS 0.4 dataset: {report.subjects} subjects, "
        f"{report.rows} rows in {report.shards} shards, {report.codes} codes"
    )
