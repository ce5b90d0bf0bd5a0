"""`hl7bus warehouse ...`: the warehouse's OMOP vocabulary (loading an OHDSI Athena download) and
the report of the codes the sink could not map to a concept."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.ops.cli.shared import ConfigOption, console, err_console, fail, load_settings

warehouse_app = typer.Typer(
    help="The OMOP warehouse: its vocabulary and the codes it could not map.",
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
