"""`hl7bus topics apply`: create the catalog's missing topics and report drift."""

from __future__ import annotations

from typing import Annotated

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import ConfigOption, console, fail, load_settings, topic_catalog

topics_app = typer.Typer(help="The topic catalog (schemas/topics.yaml).")


@topics_app.command("apply")
def apply_topics(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be created and what drifted.")
    ] = False,
) -> None:
    """Create the catalog topics that are missing and report drift. Never deletes anything."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import topics_apply

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    catalog = topic_catalog(settings)
    try:
        kafka_clients.check_connection(settings.kafka, bootstrap)
    except kafka_clients.KafkaUnreachable as exc:
        fail(str(exc))
    admin = kafka_clients.admin_client(settings.kafka, bootstrap)
    try:
        if dry_run:
            plans = topics_apply.plan(admin, catalog)
        else:
            plans = topics_apply.apply(admin, catalog, settings.topics.replication_factor)
    except Exception as exc:
        fail(f"cannot reach Kafka at {bootstrap}: {exc}")
    for p in plans:
        verb = {"create": "would create" if dry_run else "created", "ok": "ok", "drift": "DRIFT"}
        console.print(f"{verb[p.action]:>12}  {p.spec.name}  ({p.spec.partitions} partitions)")
        for line in p.drift:
            console.print(f"{'':>14}{line}")
    if any(p.action == "drift" for p in plans):
        console.print("drifted topics are left as they are; change them by hand or in the catalog")
