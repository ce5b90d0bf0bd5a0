"""`hl7bus config show/docs`: the effective configuration and its reference."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import ConfigOption, console, load_settings

config_app = typer.Typer(help="Inspect the effective configuration.")


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """Print the effective config (file + environment + defaults), secrets masked."""
    settings = load_settings(config)
    data = config_mod.effective(settings)
    if as_json:
        console.print_json(json.dumps(data))
    else:
        console.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


@config_app.command("docs")
def config_docs() -> None:
    """Print the config reference as Markdown (the source of docs/config.md)."""
    print(config_mod.reference_markdown(), end="")
