"""`hl7bus schemas check/docs`: the Avro event contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.ops.cli.shared import console, err_console, fail

schemas_app = typer.Typer(help="The Avro event contracts (schemas/*.avsc).")


@schemas_app.command("check")
def schemas_check(
    schemas_dir: Annotated[
        Path | None,
        typer.Option("--schemas", help="Folder of the schemas to check (default: the packaged)."),
    ] = None,
    released: Annotated[
        Path | None,
        typer.Option(
            "--released",
            help="Folder of released versions v1/, v2/, ... (default: schemas/released).",
        ),
    ] = None,
) -> None:
    """Fail unless every schema reads data written with its last released version."""
    from hl7bus.schemas import compat

    current = compat.load_dir(schemas_dir) if schemas_dir else compat.load_dir(compat.current_dir())
    found = compat.latest_release(released)
    if found is None:
        fail("no released schema version to check against", code=2)
    version, published = found
    problems = compat.check(current, published)
    for problem in problems:
        err_console.print(f"[red]incompatible[/] {problem}")
    new = sorted(set(current) - set(published))
    if problems:
        fail(f"{len(problems)} incompatible change(s) against released {version}")
    console.print(
        f"schemas compatible with released {version} ({len(published)} record types)"
        + (f"; new since: {', '.join(new)}" if new else "")
    )


@schemas_app.command("docs")
def schemas_docs(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Markdown file to write ('-' for stdout).")
    ] = Path("docs/events.md"),
) -> None:
    """Write the event catalog (topic -> event -> field, type, PHI class, doc) as Markdown."""
    from hl7bus.ops import event_catalog

    text = event_catalog.render()
    if str(output) == "-":
        print(text, end="")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")
