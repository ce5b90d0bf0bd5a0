"""`hl7bus demo`: the whole bus on embedded defaults against the sample feed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.ops.cli.shared import ConfigOption, console, load_settings


def demo(
    config: ConfigOption = None,
    feed_file: Annotated[
        Path | None, typer.Option("--feed", help="HL7 file to send (default: bundled sample).")
    ] = None,
) -> None:
    """Run the whole bus on embedded defaults against the sample feed and report what happened."""
    from hl7bus.ops.demo_run import run_demo

    settings = load_settings(config)
    raise typer.Exit(run_demo(settings, console, feed_file))
