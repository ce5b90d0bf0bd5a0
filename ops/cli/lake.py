"""`hl7bus lake check` and `hl7bus sink lake`: the MEDS lake of the AI teams (docs/ai-sink.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from hl7bus.ops.cli.shared import ConfigOption, console, fail, load_settings

lake_app = typer.Typer(help="The MEDS lake: checking a dataset.", no_args_is_help=True)


@lake_app.command("check")
def check(
    root: Annotated[
        str | None,
        typer.Argument(
            help="Root of the MEDS dataset, a folder or a pyarrow filesystem URI "
            "(default: lake.path)."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Check a MEDS 0.4 dataset: every file against the meds package's schemas, then the rules
    across files (one shard per subject, rows contiguous and sorted by time, every code in
    codes.parquet, every subject in subject_splits.parquet). Exit code 1 when a rule is broken."""
    from hl7bus.connectors.lake.check import check_lake
    from hl7bus.connectors.lake.store import redacted

    where = root if root is not None else load_settings(config).lake.path
    report = check_lake(where)
    folder = redacted(where)
    for problem in report.problems:
        console.print(f"[red]✗[/] {problem}")
    if not report.ok:
        fail(f"{folder}: {len(report.problems)} problems: not a valid MEDS 0.4 dataset")
    console.print(
        f"[green]✓[/] {folder}: valid MEDS 0.4 dataset: {report.subjects} subjects, "
        f"{report.rows} rows in {report.shards} shards, {report.codes} codes"
    )


def sink_lake(config: ConfigOption = None) -> None:
    """Keep a MEDS 0.4 dataset on Parquet (lake.path) current from the research topics; subject
    ids are the warehouse's person ids (its key map, in the warehouse section's database)."""
    import asyncio
    import signal

    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.lake.keys import WarehouseKeys
    from hl7bus.connectors.lake.sink import LakeSink
    from hl7bus.connectors.lake.store import LakeError
    from hl7bus.ops import config as config_mod
    from hl7bus.ops import health, logs
    from hl7bus.ops.cli.shared import err_console, load_catalog
    from hl7bus.schemas import topics
    from hl7bus.streams.deid import Policy, PolicyError
    from hl7bus.streams.deid.contract import research_schemas

    settings = load_settings(config)
    catalog = load_catalog(settings)
    try:
        # A policy file's research contracts are derived here so that its values decode.
        research_schemas(Policy.load(settings.deid.policy))
    except PolicyError as exc:
        err_console.print(
            f"[yellow]warning:[/] deid.policy has no research contracts ({exc}); research "
            "values written under it will go to the DLQ as undecodable"
        )
    bootstrap = config_mod.bootstrap(settings)
    cfg = settings.lake
    names = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    client_logging = logs.client_logging(settings.log)
    try:
        sink = LakeSink(
            cfg,
            WarehouseKeys(settings.warehouse),
            {
                **kafka_clients.consumer_config(settings.kafka, bootstrap, cfg.group_id),
                **client_logging,
            },
            {**kafka_clients.producer_config(settings.kafka, bootstrap), **client_logging},
            names,
            catalog.name(topics.DLQ),
            start_http=health.start_http,
        )
        # A lake.path pyarrow cannot resolve, or a lake that is not writable, stops here,
        # before any batch.
        sink.open_lake()
    except (LakeError, OSError) as exc:
        fail(str(exc), code=2)
    log = logs.configure(settings.log, "lake")
    log.info("writing %s into the MEDS lake %s", ", ".join(names), sink.store.url)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sink.run(stop)

    try:
        asyncio.run(serve())
    except Exception as exc:
        # Lake and file errors say where; others only their type (a message may quote data).
        detail = str(exc) if isinstance(exc, LakeError | OSError) else ""
        described = f"{type(exc).__name__}{': ' + detail if detail else ''}"
        log.error("stopped: %s", described)
        fail(f"lake sink stopped: {described}")
    log.info("stopped")
