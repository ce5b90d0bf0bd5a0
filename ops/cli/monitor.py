"""`hl7bus lag-exporter` (consumer-group lag for Prometheus) and `hl7bus status`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Annotated, Any

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import (
    ConfigOption,
    console,
    err_console,
    fail,
    load_settings,
    topic_catalog,
)
from hl7bus.ops.config import Settings


def lag_exporter(config: ConfigOption = None) -> None:
    """Export every consumer group's lag (records and seconds, per partition) on /metrics.

    It runs apart from the workers and sinks so that it keeps reporting when they are dead."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.kafka_lag import LagProbe
    from hl7bus.ops import logs
    from hl7bus.ops.lag_exporter import LagExporter

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    cfg = settings.lag
    base = {
        **kafka_clients.base_config(settings.kafka, bootstrap),
        **logs.client_logging(settings.log),
    }
    # Its own group id, never committed under: it only reads the timestamps of waiting records.
    reader = {**base, "group.id": "hl7bus-lag-exporter", "enable.auto.commit": False}
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient

    probe = LagProbe(AdminClient(base), Consumer(reader), cfg.groups, cfg.timeout_s)
    exporter = LagExporter(cfg, probe)
    from prometheus_client import REGISTRY

    REGISTRY.register(exporter.collector)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await exporter.run(stop)

    log = logs.configure(settings.log, "lag")
    log.info(
        "measuring consumer-group lag at %s every %g s, /metrics on %s:%d",
        bootstrap,
        cfg.interval_s,
        cfg.metrics_host,
        cfg.metrics_port,
    )
    try:
        asyncio.run(serve())
    except OSError as exc:
        fail(f"lag exporter: {exc.strerror or exc}")
    finally:
        probe.consumer.close()
    log.info("stopped")


# -- status -------------------------------------------------------------------------------------

_PROCESSES = ("mllp", "worker", "warehouse", "lake", "lag")


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the board as JSON.")] = False,
    watch: Annotated[
        float | None,
        typer.Option(help="Redraw every this many seconds until Ctrl-C (rates per feed)."),
    ] = None,
    process: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these processes are expected (mllp, worker, warehouse, lake, lag; repeat "
            "the option). Default: every one whose metrics port is configured."
        ),
    ] = None,
) -> None:
    """Each process up or down, each feed (senders, silence, messages, NAK ratio), records
    per topic and the lag of worker and sink.

    Exits 1 when a process is down, a feed is silent past its threshold
    (mllp.silence_threshold_s) or Kafka does not answer: usable from cron and monitoring."""
    from hl7bus.ops import status as status_mod

    settings = load_settings(config)
    expected = status_mod.endpoints(settings)
    if process:
        unknown = sorted(set(process) - set(_PROCESSES))
        if unknown:
            fail(f"--process {', '.join(unknown)}: expected one of {', '.join(_PROCESSES)}", 2)
        expected = [e for e in expected if e.name in process]
    configured = {c.feed: c.silence_threshold_s for c in settings.mllp.listeners()}
    if not any(e.name == "mllp" for e in expected):
        configured = {}
    before: Any = None
    before_at = 0.0
    while True:
        started = time.monotonic()
        scrapes: dict[str, str | Exception] = {}
        for endpoint in expected:
            try:
                scrapes[endpoint.name] = status_mod.scrape(endpoint)
            except OSError as exc:
                scrapes[endpoint.name] = exc
        board = status_mod.evaluate(expected, scrapes, time.time(), configured)
        board.kafka = _kafka_figures(settings)
        board = status_mod.with_rates(board, before, started - before_at)
        if as_json:
            console.print_json(json.dumps(board.to_dict()))
        else:
            if watch:
                console.clear()
            _render(board, config_mod.bootstrap(settings))
        if not watch:
            raise typer.Exit(1 if board.problems else 0)
        before, before_at = board, started
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            raise typer.Exit(1 if board.problems else 0) from None


def _kafka_figures(settings: Settings) -> dict[str, Any]:
    """Records per catalog topic and the lag of worker and sinks, or the error."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.streams.worker_config import source_topics

    bootstrap = config_mod.bootstrap(settings)
    catalog = topic_catalog(settings)
    names = [spec.name for spec in catalog.specs.values()]
    research = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    try:
        sizes = kafka_clients.topic_sizes(settings.kafka, bootstrap, names)
        lags = {
            f"worker ({settings.worker.app_id})": kafka_clients.group_lag(
                settings.kafka,
                bootstrap,
                settings.worker.app_id,
                [catalog.name(tid) for tid in source_topics(settings.worker.stages)],
            ),
            f"warehouse sink ({settings.warehouse.group_id})": kafka_clients.group_lag(
                settings.kafka, bootstrap, settings.warehouse.group_id, research
            ),
            f"lake sink ({settings.lake.group_id})": kafka_clients.group_lag(
                settings.kafka, bootstrap, settings.lake.group_id, research
            ),
        }
    except Exception as exc:
        return {"bootstrap": bootstrap, "error": f"cannot reach Kafka at {bootstrap}: {exc}"}
    return {"bootstrap": bootstrap, "topics": sizes, "lag": lags}


def _render(board: Any, bootstrap: str) -> None:
    from rich.table import Table

    processes = Table(title="processes")
    for column in ("process", "address", "state"):
        processes.add_column(column)
    for p in board.processes:
        state = "[green]up[/]" if p.up else f"[red]down[/] ({p.error})"
        processes.add_row(p.name, p.address, state)
    console.print(processes)
    feeds = Table(title="feeds")
    for column in ("feed", "listener", "senders", "silent for", "threshold", "received"):
        feeds.add_column(column, justify="left" if column == "feed" else "right")
    feeds.add_column("msg/s", justify="right")
    feeds.add_column("NAK ratio", justify="right")
    for f in board.feeds:
        silent = f"{f.silent_for_s:.0f} s" + (" [red]SILENT[/]" if f.silent else "")
        feeds.add_row(
            f.feed,
            "[green]up[/]" if f.up else "[red]down[/]",
            str(f.senders),
            silent if f.up else "-",
            f"{f.silence_threshold_s:.0f} s",
            str(f.received),
            "-" if f.rate_per_s is None else f"{f.rate_per_s:.1f}",
            "-" if f.nak_ratio is None else f"{f.nak_ratio:.1%}",
        )
    console.print(feeds)
    kafka = Table(title=f"Kafka at {bootstrap}")
    kafka.add_column("topic / consumer")
    kafka.add_column("records / lag", justify="right")
    if "error" in board.kafka:
        kafka.add_row("[red]unreachable[/]", board.kafka["error"])
    else:
        for name, size in board.kafka["topics"].items():
            kafka.add_row(name, "missing (hl7bus topics apply)" if size is None else str(size))
        for group, lag in board.kafka["lag"].items():
            kafka.add_row(f"lag of {group}", str(lag))
    console.print(kafka)
    for problem in board.problems:
        err_console.print(f"[bold red]problem:[/] {problem}")
