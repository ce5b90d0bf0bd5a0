"""`hl7bus dlq list|show|resubmit|purge` and `hl7bus replay` (docs/operations.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import (
    ConfigOption,
    console,
    err_console,
    fail,
    load_catalog,
    load_settings,
)
from hl7bus.ops.config import Settings

if TYPE_CHECKING:
    from hl7bus.ops.dlq import Dlq, Entry, Filter

dlq_app = typer.Typer(
    help="The dead-letter queue (hl7.dlq): list, show, resubmit, purge.", no_args_is_help=True
)

FeedOption = Annotated[str | None, typer.Option(help="Only records of this feed.")]
StageOption = Annotated[
    str | None,
    typer.Option(help="Only this stage: receiving, parsing, normalizing, deidentifying, sinking."),
]
ReasonOption = Annotated[str | None, typer.Option(help="Only this reason code.")]
SinceOption = Annotated[
    str | None, typer.Option(help="Only records that reached the DLQ at or after this ISO time.")
]
UntilOption = Annotated[
    str | None, typer.Option(help="Only records that reached the DLQ at or before this ISO time.")
]
IdsArgument = Annotated[
    list[str] | None, typer.Argument(help="Record ids (PARTITION:OFFSET); none: all that match.")
]
ExecuteOption = Annotated[
    bool, typer.Option("--execute", help="Do it; without it, only say what would be done.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per record.")]


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: expected an ISO time, e.g. 2026-12-04T10:00:00+09:00", code=2)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _open(config: Any) -> tuple[Settings, Dlq]:
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops.dlq import Dlq

    settings = load_settings(config)
    catalog = load_catalog(settings)
    bootstrap = config_mod.bootstrap(settings)
    try:
        kafka_clients.check_connection(settings.kafka, bootstrap)
    except kafka_clients.KafkaUnreachable as exc:
        fail(str(exc))
    return settings, Dlq(settings.kafka, bootstrap, catalog, settings.dlq)


def _filter(
    ids: list[str] | None,
    feed: str | None,
    stage: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    include_done: bool,
) -> Filter:
    from hl7bus.ops.dlq import Filter, parse_id

    try:
        chosen = frozenset(parse_id(i) for i in ids or [])
    except ValueError as exc:
        fail(str(exc), code=2)
    return Filter(
        feed,
        stage,
        reason,
        _time(since, "--since"),
        _time(until, "--until"),
        chosen,
        include_done,
    )


def _entries(dlq: Dlq, keep: Filter) -> list[Entry]:
    from hl7bus.ops.dlq import DlqError

    try:
        return dlq.entries(keep)
    except (DlqError, TimeoutError) as exc:
        fail(str(exc))


@dlq_app.command("list")
def dlq_list(
    ids: IdsArgument = None,
    feed: FeedOption = None,
    stage: StageOption = None,
    reason: ReasonOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also records already resubmitted or purged.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List DLQ records (codes, names and sizes; never content). Open ones unless --all."""
    _, dlq = _open(config)
    found = _entries(dlq, _filter(ids, feed, stage, reason, since, until, all_))
    if as_json:
        for entry in found:
            console.print_json(json.dumps(entry.summary()))
        return
    from rich.table import Table

    table = Table("id", "time (UTC)", "stage", "reason", "feed", "kind", "bytes", "status")
    for entry in found:
        s = entry.summary()
        table.add_row(
            s["id"],
            entry.time.strftime("%Y-%m-%d %H:%M:%S"),
            s["stage"],
            s["reason"],
            s["feed"] or "-",
            s["kind"],
            str(s["size_bytes"]),
            s["status"],
        )
    console.print(table)
    console.print(f"{len(found)} record(s)")


@dlq_app.command("show")
def dlq_show(
    record_id: Annotated[str, typer.Argument(help="PARTITION:OFFSET (or OFFSET in partition 0).")],
    reveal: Annotated[
        bool,
        typer.Option(
            "--reveal",
            help="Show patient data too; writes an audit line (who, when, which record) to "
            "dlq.audit_log first.",
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Show one DLQ record: headers, and the value with patient data redacted by default."""
    from hl7bus.ops.dlq import DlqError, audit, operator, parse_id, shown

    settings, dlq = _open(config)
    try:
        wanted = parse_id(record_id)
    except ValueError as exc:
        fail(str(exc), code=2)
    if reveal and settings.dlq.audit_log is None:
        fail("--reveal needs an audit log: set dlq.audit_log (env HL7BUS_DLQ_AUDIT_LOG)", code=2)
    try:
        entry = dlq.one(wanted)
    except (DlqError, TimeoutError) as exc:
        fail(str(exc))
    if reveal:
        assert settings.dlq.audit_log is not None
        try:
            audit(settings.dlq.audit_log, operator(), "reveal", [entry], dlq.topic)
        except OSError as exc:
            fail(f"cannot write the audit log {settings.dlq.audit_log}: {exc.strerror}")
    console.print_json(json.dumps(shown(entry, reveal)))


@dlq_app.command("resubmit")
def dlq_resubmit(
    ids: IdsArgument = None,
    feed: FeedOption = None,
    stage: StageOption = None,
    reason: ReasonOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    execute: ExecuteOption = False,
    config: ConfigOption = None,
) -> None:
    """Send open DLQ records back before the stage that failed, marked as replays.

    Each is marked done once Kafka acknowledged its new record. A dry run unless --execute."""
    from hl7bus.ops.dlq import DlqError, NotResubmittable, Plan, operator, plan_resubmit

    settings, dlq = _open(config)
    found = _entries(dlq, _filter(ids, feed, stage, reason, since, until, False))
    plans: list[Plan] = []
    refused = 0
    deid_settings = _deid_loader(settings)
    for entry in found:
        try:
            plan = plan_resubmit(entry, dlq.catalog, settings.mllp, deid_settings)
        except NotResubmittable as exc:
            refused += 1
            err_console.print(f"{entry.id} ({entry.stage}/{entry.reason}): not resubmitted: {exc}")
            continue
        plans.append(plan)
        console.print(f"{entry.id} ({entry.stage}/{entry.reason}) -> {plan.topic}")
    if not execute:
        console.print(f"dry run: {len(plans)} record(s) would be resubmitted; add --execute")
    else:
        try:
            acked = dlq.resubmit(plans, operator())
        except (DlqError, TimeoutError) as exc:
            fail(str(exc))
        console.print(f"{len(acked)} record(s) resubmitted and marked done")
    if refused:
        raise typer.Exit(3)


def _deid_loader(settings: Settings) -> Any:
    """De-identification settings, loaded only when a record needs them (deidentifying)."""
    cache: list[Any] = []

    def load() -> Any:
        if not cache:
            from hl7bus.streams import deid
            from hl7bus.streams.steps import DeidSettings

            try:
                policy = deid.Policy.load(settings.deid.policy)
                key = deid.load_key(settings.deid)
            except (deid.PolicyError, deid.KeyConfigError, OSError) as exc:
                fail(str(exc), code=2)
            cache.append(DeidSettings(policy, key, settings.deid.leak_check))
        return cache[0]

    return load


@dlq_app.command("purge")
def dlq_purge(
    ids: IdsArgument = None,
    feed: FeedOption = None,
    stage: StageOption = None,
    reason: ReasonOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    execute: ExecuteOption = False,
    config: ConfigOption = None,
) -> None:
    """Mark open DLQ records purged, then delete each partition's head of done records.

    Kafka cannot delete one record: the purged ones leave `dlq list`, and the records before
    the first open one of a partition are deleted for good. A dry run unless --execute."""
    from hl7bus.ops.dlq import DlqError, operator

    _, dlq = _open(config)
    found = _entries(dlq, _filter(ids, feed, stage, reason, since, until, False))
    for entry in found:
        console.print(f"{entry.id} ({entry.stage}/{entry.reason})")
    if not execute:
        console.print(f"dry run: {len(found)} record(s) would be purged; add --execute")
        return
    try:
        cut = dlq.purge(found, operator())
    except (DlqError, TimeoutError) as exc:
        fail(str(exc))
    deleted = ", ".join(f"partition {p} before offset {o}" for p, o in sorted(cut.items()))
    console.print(f"{len(found)} record(s) purged; deleted: {deleted or 'nothing yet'}")


def replay(
    feed: Annotated[str, typer.Option(help="The feed whose messages are replayed.")],
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="Start: an ISO time (hl7.raw record time; no zone: UTC), an OFFSET (in every "
            "partition) or PARTITION:OFFSET.",
        ),
    ],
    to: Annotated[
        str | None, typer.Option(help="End, included, in the same forms; default: the end now.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be replayed.")
    ] = False,
    show_diff: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Report which stored events (hl7.events) the current maps would change; "
            "writes nothing.",
        ),
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Re-run a range of hl7.raw through the pipeline.

    Copies marked as replays, taken as new by the worker (no dedupe), never ACKed to a sender;
    the sinks upsert the events again."""
    from zoneinfo import ZoneInfo

    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import replay as replay_mod
    from hl7bus.schemas.datafile import DataFileError
    from hl7bus.streams.terminology import Terminology

    try:
        start = replay_mod.Bound.parse(from_, "--from")
        end = replay_mod.Bound.parse(to, "--to") if to is not None else None
    except ValueError as exc:
        fail(str(exc), code=2)
    settings = load_settings(config)
    catalog = load_catalog(settings)
    bootstrap = config_mod.bootstrap(settings)
    cfg = settings.dlq
    try:
        kafka_clients.check_connection(settings.kafka, bootstrap)
        chosen = replay_mod.select(
            settings.kafka, bootstrap, catalog, cfg.group_id, feed, start, end, cfg.timeout_s
        )
    except (kafka_clients.KafkaUnreachable, replay_mod.ReplayError, TimeoutError) as exc:
        fail(str(exc))
    counts = {
        "feed": feed,
        "chosen": len(chosen.records),
        "skipped_replays": chosen.skipped_replays,
        "other_feeds": chosen.other_feeds,
        "undecodable": chosen.undecodable,
    }
    if show_diff:
        try:
            stored = replay_mod.stored_events(
                settings.kafka, bootstrap, catalog, cfg.group_id, start.time, cfg.timeout_s
            )
            terms = Terminology.load(settings.worker.code_maps)
        except (replay_mod.ReplayError, TimeoutError, DataFileError, OSError) as exc:
            fail(str(exc))
        changes = replay_mod.diff(chosen.records, stored, ZoneInfo(settings.worker.timezone), terms)
        _print_diff(changes, counts, as_json)
        return
    if dry_run:
        _print(counts | {"replayed": 0, "dry_run": True}, as_json)
        return
    try:
        sent = replay_mod.send(settings.kafka, bootstrap, catalog, chosen.records, cfg.timeout_s)
    except replay_mod.ReplayError as exc:
        fail(str(exc))
    _print(counts | {"replayed": sent, "dry_run": False}, as_json)


def _print(counts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(counts))
        return
    verb = "would replay" if counts["dry_run"] else "replayed"
    n = counts["chosen"] if counts["dry_run"] else counts["replayed"]
    console.print(
        f"feed {counts['feed']}: {verb} {n} message(s) "
        f"(skipped: {counts['skipped_replays']} replays, {counts['other_feeds']} of other "
        f"feeds, {counts['undecodable']} undecodable)"
    )


def _print_diff(changes: Any, counts: dict[str, Any], as_json: bool) -> None:
    from collections import Counter

    totals = Counter(c.status for c in changes)
    if as_json:
        for c in changes:
            console.print_json(
                json.dumps(
                    {
                        "event_id": c.event_id,
                        "type": c.event_type,
                        "status": c.status,
                        "fields": list(c.fields),
                        "source": c.source,
                    }
                )
            )
        console.print_json(json.dumps(counts | {"totals": dict(totals)}))
        return
    for c in changes:
        if c.status == "same":
            continue
        what = ", ".join(c.fields)
        console.print(
            f"{c.status:8} {c.event_type or '-':12} {c.event_id or '-'} {what} (raw {c.source})"
        )
    console.print(
        f"feed {counts['feed']}: {counts['chosen']} message(s), events "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals.items()))
    )
