"""`hl7bus ingest`: HL7 files into hl7.raw (the runner is ops/ingest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import (
    ConfigOption,
    console,
    err_console,
    fail,
    load_catalog,
    load_settings,
)


def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="HL7 files or directories (batch files are split; resumable)."),
    ] = None,
    config: ConfigOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Poll files.drop_dir for new files until Ctrl-C.")
    ] = False,
    feed: Annotated[str | None, typer.Option(help="Feed name (default: files.feed).")] = None,
    pattern: Annotated[
        str | None, typer.Option(help="File name glob in directories (default: files.pattern).")
    ] = None,
) -> None:
    """Ingest HL7 message and batch files into hl7.raw. Exit 1 unless all of it reached hl7.raw.

    A file is done (moved to files.done_dir when set) only when Kafka confirmed every message;
    an interrupted run resumes at the first unconfirmed message.
    """
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.envelope import Route
    from hl7bus.ops.ingest import run_ingest, run_watch
    from hl7bus.schemas import topics

    settings = load_settings(config)
    overrides = {k: v for k, v in (("feed", feed), ("pattern", pattern)) if v is not None}
    try:
        files_cfg = settings.files.model_validate({**settings.files.model_dump(), **overrides})
    except ValueError as exc:
        fail(str(exc), code=2)
    catalog = load_catalog(settings)
    route = Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
    producer_cfg = kafka_clients.producer_config(settings.kafka, config_mod.bootstrap(settings))
    if watch:
        if paths:
            fail("--watch polls files.drop_dir; give no paths with it", code=2)
        if files_cfg.drop_dir is None:
            fail("--watch needs files.drop_dir (HL7BUS_FILES_DROP_DIR)", code=2)
        summary = run_watch(files_cfg, producer_cfg, route, err_console)
        raise typer.Exit(0 if summary.count("failed") == 0 else 1)
    if not paths:
        fail("give files or directories to ingest, or --watch", code=2)
    from hl7bus.connectors.files.source import FileSource

    try:
        files = FileSource.expand_paths(paths, files_cfg.pattern)
    except FileNotFoundError as exc:
        fail(str(exc))
    if not files:
        fail(f"no files matching {files_cfg.pattern} in the given paths")
    summary = run_ingest(files_cfg, producer_cfg, route, files, console)
    if not summary.ok:
        raise typer.Exit(1)
