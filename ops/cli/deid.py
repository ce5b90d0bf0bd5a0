"""`hl7bus deid`: review a de-identification policy offline, field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as markup_escape

from hl7bus.ops.cli.shared import (
    ConfigOption,
    console,
    err_console,
    fail,
    load_settings,
)


def deid_files(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="HL7 files (batch files and concatenations are split).",
            exists=True,
            dir_okay=False,
        ),
    ],
    policy_ref: Annotated[
        str | None,
        typer.Option(
            "--policy",
            "-p",
            help="Profile name (kr-pseudonym, safe-harbor, limited) or policy file "
            "(default: deid.policy of the config).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of tables.")] = False,
    sink: Annotated[str | None, typer.Option(help="Use this sink's key (deid.sink_keys).")] = None,
    config: ConfigOption = None,
) -> None:
    """Review a policy offline: each event's research form beside a field-by-field account of
    the actions (field, PHI class, action, before -> after). The account shows IDENTIFIED
    values: for a privacy officer, on test data, never to be stored or shared."""
    import secrets
    from zoneinfo import ZoneInfo

    from hl7bus.hl7v2 import Hl7ParseError
    from hl7bus.streams import deid
    from hl7bus.streams.deid import review as deid_review

    settings = load_settings(config)
    try:
        policy = deid.Policy.load(policy_ref or settings.deid.policy)
    except (deid.PolicyError, OSError) as exc:
        fail(str(exc), code=2)
    try:
        key = deid.load_key(settings.deid, sink=sink)
    except deid.NoKeyError:
        # No key configured: an ephemeral one, so the review runs; pseudonyms and date shifts
        # then differ from the live worker's.
        key = deid.Pseudonymizer(secrets.token_bytes(32), "ephemeral")
        err_console.print("[yellow]no deid key configured: using an ephemeral key[/]")
    except deid.KeyConfigError as exc:
        fail(str(exc), code=2)
    zone = ZoneInfo(settings.worker.timezone)
    reviewed: list[Any] = []
    for file in files:
        try:
            reviewed += deid_review.review(file.read_bytes(), policy, key, zone)
        except (OSError, Hl7ParseError) as exc:
            fail(f"{markup_escape(str(file))}: {getattr(exc, 'reason', None) or exc}")
    if as_json:
        out = deid_review.as_json(reviewed, policy, key)
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
        return
    _print_review(reviewed, policy, key)


def _print_review(reviewed: list[Any], policy: Any, key: Any) -> None:
    from rich.table import Table

    from hl7bus.streams.deid import review as deid_review

    console.print(f"[bold reverse red] {deid_review.WARNING} [/]")
    console.print(
        f"policy [bold]{markup_escape(policy.name)}[/] ({markup_escape(policy.source)}), "
        f"hash {policy.digest}, key id {markup_escape(key.key_id)}"
    )

    def show(value: Any) -> str:
        if value is None:
            return ""
        text = json.dumps(deid_review.jsonable(value), ensure_ascii=False)
        text = text[1:-1] if text.startswith('"') else text
        return markup_escape(text if len(text) <= 120 else text[:117] + "...")

    for r in reviewed:
        outcome = (
            "[green]research[/]"
            if r.research is not None
            else f"[red]DLQ {markup_escape(r.error or '')}[/]: {markup_escape(r.reason or '')}"
        )
        table = Table(
            title=f"message {r.message}: {r.event_type} -> {outcome}", title_justify="left"
        )
        table.add_column("field", no_wrap=True, overflow="fold")
        table.add_column("PHI", no_wrap=True)
        table.add_column("action", no_wrap=True, min_width=len("generalize:kr_postal3"))
        table.add_column("before (identified)", overflow="fold")
        table.add_column("after (research)", overflow="fold")
        for s in r.steps:
            table.add_row(s.field, s.phi, markup_escape(s.action), show(s.before), show(s.after))
        console.print(table)
