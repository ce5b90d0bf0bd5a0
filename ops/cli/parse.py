"""`hl7bus parse`: HL7 v2 messages as a rich tree, JSON or one value per message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as markup_escape

from hl7bus.ops.cli.shared import console, err_console, fail


def parse_files(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="HL7 files; batch files (FHS/BHS) and concatenated messages are split.",
            exists=True,
            dir_okay=False,
        ),
    ],
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="JSON: a list of messages, each a list of segments, each a list of fields "
            "(a field with delimiters is a list of repetitions of components, decoded).",
        ),
    ] = False,
    path: Annotated[
        str | None,
        typer.Option(
            "--path",
            help="Print only the decoded value at this path, one line per message "
            "(e.g. PID-3, MSH-9.2, OBX[2]-5.1); an empty line where there is none.",
        ),
    ] = None,
    validate: Annotated[
        str | None,
        typer.Option(
            "--validate",
            metavar="strict|tolerant",
            help="Also check each message against its HL7 version with hl7apy; findings go "
            "to stderr and any error makes the exit code 1.",
        ),
    ] = None,
) -> None:
    """Print HL7 v2 messages as a tree of segments, numbered fields and components."""
    from hl7bus.hl7v2 import Hl7ParseError, parse_batch, segment_offset
    from hl7bus.hl7v2.validate import LEVELS

    if validate is not None and validate not in LEVELS:
        fail(f"--validate {validate!r}: expected one of {', '.join(LEVELS)}", code=2)
    if path is not None:
        from hl7bus.hl7v2 import parse_path

        try:
            parse_path(path)
        except ValueError:
            fail(f"--path {path!r} is not an HL7 path (e.g. PID-3, MSH-9.2, OBX[2]-5.1)", code=2)
    failed = False
    everything: list[Any] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            err_console.print(
                f"[bold red]error:[/] {markup_escape(str(file))}: {exc.strerror or exc}"
            )
            failed = True
            continue
        try:
            messages = parse_batch(data)
        except Hl7ParseError as exc:
            where = []
            if exc.segment_index is not None:
                where.append(f"segment {exc.segment_index}")
            if exc.field is not None:
                where.append(f"field {exc.field}")
            offset = exc.offset
            if offset is None and exc.segment_index is not None:
                offset = segment_offset(data, exc.segment_index)
            if offset is not None and "byte offset" not in exc.reason:
                where.append(f"byte offset {offset}")
            at = f" at {', '.join(where)}" if where else ""
            err_console.print(f"[bold red]error:[/] {markup_escape(str(file))}: {exc.reason}{at}")
            failed = True
            continue
        if not messages:
            err_console.print(f"[bold red]error:[/] {markup_escape(str(file))}: no HL7 messages")
            failed = True
            continue
        for n, msg in enumerate(messages, 1):
            if path is not None:
                typer.echo(msg.get(path) or "")
            elif as_json:
                everything.append(msg.to_lists())
            else:
                title = f"{file} #{n}" if len(messages) > 1 else str(file)
                console.print(_message_tree(msg, title))
            if validate is not None:
                failed |= _print_findings(msg, validate, f"{file} #{n}")
    if as_json and path is None:
        typer.echo(json.dumps(everything, ensure_ascii=False))
    if failed:
        raise typer.Exit(1)


def _message_tree(msg: Any, title: str) -> Any:
    """A rich Tree: segments, then non-empty fields as SEG-n, composite fields
    split into repetitions and components (values decoded, markup-escaped)."""
    from rich.tree import Tree

    label = f"[bold]{markup_escape(title)}[/]  {markup_escape(msg.message_type or '?')}"
    tree = Tree(f"{label}  (v{markup_escape(msg.version or '?')}, {len(msg)} segments)")
    counts: dict[str, int] = {}
    for index, (seg, fields) in enumerate(zip(msg.segments(), msg.to_lists(), strict=True)):
        name = seg.name
        counts[name] = counts.get(name, 0) + 1
        occ = f"[{counts[name]}]" if counts[name] > 1 else ""
        branch = tree.add(f"[dim]{index:>3}[/] [bold cyan]{name}{occ}[/]")
        for n, field in enumerate(fields[1:], 1):
            ref = f"{name}-{n}"
            if isinstance(field, str):
                if field:
                    branch.add(f"[green]{ref}[/]  {markup_escape(field)}")
                continue
            node = branch.add(f"[green]{ref}[/]")
            for r, rep in enumerate(field, 1):
                parent = node.add(f"[green]{ref}[{r}][/]") if len(field) > 1 else node
                base = f"{ref}[{r}]" if len(field) > 1 else ref
                for c, comp in enumerate(rep, 1):
                    if isinstance(comp, str):
                        if comp:
                            parent.add(f"[green]{base}.{c}[/]  {markup_escape(comp)}")
                        continue
                    for s, sub in enumerate(comp, 1):
                        if sub:
                            parent.add(f"[green]{base}.{c}.{s}[/]  {markup_escape(sub)}")
    return tree


def _print_findings(msg: Any, level: str, where: str) -> bool:
    """Print the hl7apy findings of one message to stderr; True when any is an error."""
    from hl7bus.hl7v2 import validate

    findings = validate(msg, level)  # type: ignore[arg-type]
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        text = markup_escape(f"{where}: {f.location}: {f.problem}")
        err_console.print(f"[{colour}]{f.severity}[/]: {text}")
    return any(f.severity == "error" for f in findings)
