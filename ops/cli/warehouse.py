"""`hl7bus warehouse ...`: the warehouse's OMOP vocabulary (loading an OHDSI Athena download),
the report of the codes the sink could not map to a concept, and the data-quality check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.ops.cli.shared import ConfigOption, console, err_console, fail, load_settings

if TYPE_CHECKING:
    from hl7bus.connectors.warehouse.check import Report

warehouse_app = typer.Typer(
    help="The OMOP warehouse: its vocabulary, the codes it could not map, its data quality.",
    no_args_is_help=True,
)
vocab_app = typer.Typer(
    help="The OMOP standardized vocabulary (an OHDSI Athena download).", no_args_is_help=True
)
warehouse_app.add_typer(vocab_app, name="vocab")


class _Target:
    """The configured warehouse database: PostgreSQL when warehouse.url is set, else the DuckDB
    file warehouse.path; the OMOP tables in warehouse.cdm_schema (None: the default schema)."""

    def __init__(self, cfg: WarehouseConfig) -> None:
        self.url = cfg.url
        self.schema = cfg.cdm_schema
        self.path = cfg.path

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url else "duckdb"

    def describe(self) -> str:
        if not self.url:
            return f"DuckDB {self.path}"
        from psycopg.conninfo import conninfo_to_dict

        # Host, port and database only: a URL may carry a password.
        info = conninfo_to_dict(self.url)
        return (
            f"PostgreSQL {info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
        )


@vocab_app.command("load")
def vocab_load(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Unpacked Athena download (CONCEPT.csv, VOCABULARY.csv, ...).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Load the small vocabulary shipped for the demo.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Load an OHDSI Athena vocabulary download into the warehouse, replacing the vocabulary there
    (one transaction: a failed load keeps the previous one). Restart the sink afterwards: it keeps
    the concepts it looked up in memory."""
    import duckdb
    import psycopg

    from hl7bus.connectors.warehouse.vocabulary import (
        Loaded,
        VocabularyError,
        load_vocabulary,
        sample_folder,
    )

    if (folder is None) == (not sample):
        fail("give the folder of an Athena download, or --sample (not both)", code=2)
    source = sample_folder() if sample else folder
    assert source is not None
    target = _Target(load_settings(config).warehouse)
    err_console.print(f"loading {source} into {target.describe()}")
    total = 0

    def done(loaded: Loaded) -> None:
        nonlocal total
        total += loaded.rows
        console.print(f"{loaded.path.name}: {loaded.rows:,} rows in {loaded.seconds:.1f} s")

    with err_console.status("loading...") as status:
        try:
            load_vocabulary(
                source,
                path=target.path,
                url=target.url,
                schema=target.schema,
                started=lambda _, path: status.update(f"loading {path.name}..."),
                done=done,
            )
        except VocabularyError as exc:
            fail(str(exc), code=2)
        except duckdb.IOException as exc:
            fail(
                f"cannot open {target.path} ({type(exc).__name__}); a DuckDB file has one "
                "writer: stop the sink while loading"
            )
        except psycopg.OperationalError as exc:
            fail(f"cannot reach {target.describe()}: {str(exc).strip().splitlines()[0]}")
    console.print(f"vocabulary loaded: {total:,} rows into {target.describe()}")


@warehouse_app.command("unmapped")
def unmapped(
    feed: Annotated[str | None, typer.Option(help="Only this feed.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Codes listed per feed.")] = 20,
    config: ConfigOption = None,
) -> None:
    """The most frequent codes that mapped to no OMOP concept (concept 0), per feed, as the sink
    counted them: what a terminologist should add to the code maps or the vocabulary."""
    import duckdb
    import psycopg
    from rich.table import Table

    from hl7bus.connectors.warehouse.vocabulary import top_unmapped

    target = _Target(load_settings(config).warehouse)
    try:
        if target.url:
            with psycopg.connect(target.url, autocommit=True) as pg:
                rows = top_unmapped(pg, "postgresql", feed, limit, target.schema)
        else:
            if not target.path.is_file():
                fail(f"no warehouse at {target.path} (warehouse.path)")
            db = duckdb.connect(str(target.path), read_only=True)
            try:
                rows = top_unmapped(db, "duckdb", feed, limit, target.schema)
            finally:
                db.close()
    except duckdb.IOException as exc:
        fail(f"cannot open {target.path} ({type(exc).__name__}); is the sink writing to it?")
    except psycopg.OperationalError as exc:
        fail(f"cannot reach {target.describe()}: {str(exc).strip().splitlines()[0]}")
    if not rows:
        console.print("no unmapped codes recorded" + (f" for feed {feed}" if feed else ""))
        return
    table = Table("feed", "system", "code", "count", "last seen (UTC)")
    for row in rows:
        table.add_row(
            row.feed, row.system, row.code, f"{row.count:,}", f"{row.last_seen:%Y-%m-%d %H:%M}"
        )
    console.print(table)


@warehouse_app.command("check")
def check(
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Data-quality rules in the spirit of the OHDSI Data Quality Dashboard (required columns,
    foreign keys, concepts, facts before birth or 60 days after death, facts outside observation
    periods) and the rows per table and feed. Exit code 1 when a rule failed, 2 when the
    warehouse cannot be read. On DuckDB, stop the sink first: a DuckDB file has one writer."""
    import json

    import duckdb
    import psycopg

    from hl7bus.connectors.warehouse import check as dq
    from hl7bus.connectors.warehouse.duckdb_engine import DuckDBEngine
    from hl7bus.connectors.warehouse.engine import Engine
    from hl7bus.connectors.warehouse.postgres_engine import PostgresEngine

    cfg = load_settings(config).warehouse
    target = _Target(cfg)
    engine: Engine
    try:
        if target.url:
            engine = PostgresEngine(target.url, cfg.cdm_schema, cfg.keys_schema)
        else:
            if not target.path.is_file():
                fail(f"no warehouse at {target.path} (warehouse.path)", code=2)
            engine = DuckDBEngine(target.path, cfg.cdm_schema, cfg.keys_schema, read_only=True)
    except duckdb.IOException as exc:
        fail(f"cannot open {target.path} ({type(exc).__name__}); is the sink writing to it?", 2)
    except psycopg.OperationalError as exc:
        fail(f"cannot reach {target.describe()}: {str(exc).strip().splitlines()[0]}", code=2)
    try:
        report = dq.run(engine)
    except (duckdb.CatalogException, psycopg.errors.UndefinedTable) as exc:
        # The type only: the message names a table, but keep one rule for database messages.
        fail(
            f"{target.describe()} is not a warehouse the sink made ({type(exc).__name__}); "
            "start `hl7bus sink warehouse` on it once",
            code=2,
        )
    finally:
        engine.close()
    if as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_check(report, target.describe())
    if not report.passed:
        raise typer.Exit(1)


def _print_check(report: Report, where: str) -> None:
    from rich.table import Table

    summary = report.to_json()["rules"]
    rules = Table("rule", "checks", "failed", "violations", "pending", title=f"checks on {where}")
    for rule, counts in summary.items():
        if "skipped" in counts:
            rules.add_row(rule, "-", "-", "-", "-")
            continue
        failed = f"[red]{counts['failed']}[/]" if counts["failed"] else "0"
        rules.add_row(
            rule,
            str(counts["checks"]),
            failed,
            f"{counts['violations']:,}",
            f"{counts['pending']:,}",
        )
    console.print(rules)
    for rule, counts in summary.items():
        if "skipped" in counts:
            console.print(f"{rule}: skipped ({counts['skipped']})")
    detail = [f for f in report.findings if f.violations or f.pending]
    if detail:
        table = Table("rule", "column", "violations", "pending", title="findings")
        for finding in detail:
            table.add_row(
                finding.rule,
                f"{finding.table}.{finding.column}",
                f"[red]{finding.violations:,}[/]" if finding.violations else "0",
                f"{finding.pending:,}",
            )
        console.print(table)
    feeds = sorted(report.feed_rows)
    rows = Table("table", "rows", *(f"feed {f}" if f else "no feed" for f in feeds), title="rows")
    for name, count in report.rows.items():
        rows.add_row(name, f"{count:,}", *(f"{report.feed_rows[f].get(name, 0):,}" for f in feeds))
    console.print(rows)
    console.print(
        "passed"
        if report.passed
        else "[bold red]failed[/]: "
        + ", ".join(sorted({f.rule for f in report.findings if not f.passed}))
    )
