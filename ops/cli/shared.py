"""What every command shares: the consoles, the --config option, loading the settings and
the topic catalog, and failing with a message and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from hl7bus.ops import config as config_mod
from hl7bus.ops.config import Settings
from hl7bus.schemas.datafile import DataFileError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML config file (default: $HL7BUS_CONFIG, else built-in defaults).",
        exists=True,
        dir_okay=False,
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_settings(path: Path | None) -> Settings:
    try:
        return config_mod.load(path)
    except DataFileError as exc:
        fail(str(exc), code=2)


def topic_catalog(settings: Settings) -> Any:
    """The topic catalog (packaged or topics.catalog); a bad catalog file stops the command."""
    from hl7bus.schemas import topics

    try:
        return topics.TopicCatalog.load(settings.topics)
    except DataFileError as exc:
        fail(str(exc), code=2)


def load_catalog(settings: Settings) -> Any:
    """The topic catalog, with the value codec set up for it (single-object or registry)."""
    from hl7bus.schemas import codec

    catalog = topic_catalog(settings)
    codec.configure(settings.schemas, {tid: spec.name for tid, spec in catalog.specs.items()})
    return catalog
