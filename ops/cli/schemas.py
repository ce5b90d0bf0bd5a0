"""`hl7bus schemas check/docs/research/register`: the Avro event contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hl7bus.ops.cli.shared import ConfigOption, console, err_console, fail

schemas_app = typer.Typer(
    help="The Avro event contracts (schemas/*.avsc) and the research contracts derived from "
    "them (schemas/research/)."
)


@schemas_app.command("check")
def schemas_check(
    schemas_dir: Annotated[
        Path | None,
        typer.Option(
            "--schemas",
            help="Folder of the schemas to check, research contracts in its research/ "
            "(default: the packaged).",
        ),
    ] = None,
    released: Annotated[
        Path | None,
        typer.Option(
            "--released",
            help="Folder of released versions v1/, v2/, ... (default: schemas/released).",
        ),
    ] = None,
) -> None:
    """Check the schemas against their last release, and the research contracts.

    Fails unless every schema reads data written with its last released version, the published
    research contracts are those derived from the schemas and the shipped profiles, and they read
    the research contracts of the last release that published some."""
    from hl7bus.schemas import compat
    from hl7bus.streams.deid import PROFILES, Policy
    from hl7bus.streams.deid.contract import check_published

    root = schemas_dir if schemas_dir else compat.current_dir()
    current = compat.load_dir(root)
    found = compat.latest_release(released)
    if found is None:
        fail("no released schema version to check against", code=2)
    version, published = found
    problems = compat.check(current, published)
    research = compat.load_files(root.joinpath("research"))
    texts = {
        name: root.joinpath("research").joinpath(name).read_text(encoding="utf-8")
        for name in research
    }
    stale = check_published(texts, current, [Policy.load(p) for p in PROFILES])
    research_release = compat.latest_research_release(released)
    if research_release is not None:
        problems += compat.check_research(research, research_release[1])
    for problem in problems:
        err_console.print(f"[red]incompatible[/] {problem}")
    for line in stale:
        err_console.print(f"[red]research contract[/] {line}")
    new = sorted(set(current) - set(published))
    if problems or stale:
        fail(
            f"{len(problems)} incompatible change(s) against released {version}, "
            f"{len(stale)} research contract problem(s)"
        )
    console.print(
        f"schemas compatible with released {version} ({len(published)} record types)"
        + (f"; new since: {', '.join(new)}" if new else "")
    )
    against = (
        f"compatible with released {research_release[0]}"
        if research_release
        else "none released yet"
    )
    console.print(
        f"research contracts derived from the schemas and profiles ({len(research)} for "
        f"{', '.join(PROFILES)}); {against}"
    )


@schemas_app.command("docs")
def schemas_docs(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Markdown file to write ('-' for stdout).")
    ] = Path("docs/events.md"),
) -> None:
    """Write the event catalog (docs/events.md) as Markdown.

    Topic -> event -> field, type, PHI class, what each profile's research contract holds, and
    the registry subjects."""
    from hl7bus.ops import event_catalog

    text = event_catalog.render()
    if str(output) == "-":
        print(text, end="")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")


@schemas_app.command("research")
def schemas_research(
    policies: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="A profile name or policy file (repeatable; default: every shipped profile).",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to write <policy>.<type>.avsc into.")
    ] = Path("schemas/research"),
) -> None:
    """Write the research contracts of policies (one .avsc per policy and event type).

    A research contract is an event type's schema as the policy lets it out: what research
    consumers decode with. The shipped profiles' are committed in schemas/research/."""
    from hl7bus.schemas import codec
    from hl7bus.streams.deid import PROFILES, Policy, PolicyError
    from hl7bus.streams.deid.contract import derive, file_name, render

    output.mkdir(parents=True, exist_ok=True)
    written = 0
    for ref in policies or PROFILES:
        try:
            policy = Policy.load(ref)
            contracts = {t: derive(codec.schema(t).definition, policy) for t in policy.actions}
        except PolicyError as exc:
            fail(str(exc), code=2)
        for event_type, contract in sorted(contracts.items()):
            target = output / file_name(policy, event_type)
            target.write_text(render(contract), encoding="utf-8")
            written += 1
    console.print(f"wrote {written} research contracts into {output}")


@schemas_app.command("register")
def schemas_register(config: ConfigOption = None) -> None:
    """Register each topic's schema under its subject (<topic>-value) in the schema registry.

    hl7.raw, hl7.events (the union of the event records) and the research topics (the
    contracts of deid.policy). A change that cannot read the latest registered version is
    refused with its reasons, and nothing is sent for it."""
    from hl7bus.ops.cli.shared import load_settings, topic_catalog
    from hl7bus.schemas import codec, subjects
    from hl7bus.streams.deid import Policy, PolicyError
    from hl7bus.streams.deid.contract import research_schemas

    settings = load_settings(config)
    if settings.schemas.registry_url is None:
        fail("schemas.registry_url is not set: there is no registry to register with", code=2)
    catalog = topic_catalog(settings)
    try:
        research = research_schemas(Policy.load(settings.deid.policy))
    except PolicyError as exc:
        fail(str(exc), code=2)
    names = {tid: spec.name for tid, spec in catalog.specs.items()}
    try:
        outcomes = subjects.register(
            codec.registry_client(settings.schemas), subjects.contracts(names, research)
        )
    except codec.RegistryError as exc:
        fail(str(exc))
    refused = 0
    for outcome in outcomes:
        if outcome.status == "refused":
            refused += 1
            err_console.print(f"[red]refused[/] {outcome.subject}")
            for reason in outcome.reasons:
                err_console.print(f"  {reason}")
        else:
            console.print(
                f"{outcome.status} {outcome.subject} (version {outcome.version}, "
                f"id {outcome.schema_id})"
            )
    if refused:
        fail(f"{refused} subject(s) refused an incompatible schema")
