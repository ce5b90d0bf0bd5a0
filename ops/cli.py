"""The `hl7bus` command line. With ops/config.py, the composition root of the bus.

Commands import their components inside the command body: `hl7bus --help` stays fast and a
command never pays for faust or DuckDB unless it runs them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from hl7bus.ops import config as config_mod
from hl7bus.ops.config import ConfigError, Settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="hl7bus",
    help=(
        "hl7bus: HL7 v2 over MLLP onto Apache Kafka as typed Avro events, de-identified for "
        "research and AI.\n\nConfig: --config FILE (or HL7BUS_CONFIG) plus HL7BUS_<SECTION>_<KEY> "
        "environment overrides, e.g. HL7BUS_KAFKA_BOOTSTRAP=broker:9092. "
        "See `hl7bus config show`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="Run a local single-node Kafka broker (KRaft) for development and demos."
)
topics_app = typer.Typer(help="The topic catalog (ops/topics.yaml).")
config_app = typer.Typer(help="Inspect the effective configuration.")
mllp_app = typer.Typer(help="The MLLP listener that hospital interface engines send to.")
sink_app = typer.Typer(help="Sinks that write research events out of Kafka.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(config_app, name="config")
app.add_typer(mllp_app, name="mllp")
app.add_typer(sink_app, name="sink")

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
    except ConfigError as exc:
        fail(str(exc), code=2)


# -- kafka --------------------------------------------------------------------------------------


@kafka_app.command("up")
def kafka_up(config: ConfigOption = None) -> None:
    """Start the local broker (downloads the Kafka jars with Maven once), print its address."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    try:
        with console.status("starting the local Kafka broker..."):
            info = local_kafka.up(settings.broker)
    except local_kafka.LocalKafkaError as exc:
        fail(str(exc))
    for note in info.notes:
        console.print(f"note: {note}")
    state = "was already running" if info.already_running else "is up"
    console.print(
        f"Kafka {info.version} {state} at [bold]{info.bootstrap}[/] "
        f"(pid {info.pid}, log {info.log_file})"
    )
    console.print("Other hl7bus commands on this machine find it by themselves.")


@kafka_app.command("jars")
def kafka_jars(config: ConfigOption = None) -> None:
    """Resolve the pinned Kafka jars with Maven into the cache (done by `up` when needed)."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    try:
        with console.status("resolving the Kafka jars with Maven..."):
            libs = local_kafka.ensure_jars(settings.broker)
    except local_kafka.LocalKafkaError as exc:
        fail(str(exc))
    console.print(f"Kafka {local_kafka.kafka_version()} jars: {libs}")


@kafka_app.command("status")
def kafka_status(config: ConfigOption = None) -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    status = local_kafka.status(settings.broker)
    if status is None:
        console.print("the local Kafka broker is not running (start it: hl7bus kafka up)")
        raise typer.Exit(1)
    broker = status.broker
    if not status.answering:
        console.print(
            f"Kafka {broker.version} runs (pid {broker.pid}) at {broker.bootstrap} but does not "
            f"answer: {status.error}; log: {broker.log_file}"
        )
        raise typer.Exit(1)
    console.print(
        f"Kafka {broker.version} at {broker.bootstrap} (pid {broker.pid}, up "
        f"{status.uptime_s:.0f}s, {len(status.topics or ())} topics, data {broker.data_dir})"
    )


@kafka_app.command("down")
def kafka_down(config: ConfigOption = None) -> None:
    """Stop the local broker; its data stays for the next `kafka up`."""
    from hl7bus.ops import local_kafka

    settings = load_settings(config)
    if local_kafka.down(settings.broker):
        console.print("the local Kafka broker stopped")
    else:
        console.print("the local Kafka broker was not running")


# -- topics -------------------------------------------------------------------------------------


@topics_app.command("apply")
def topics_apply(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be created and what drifted.")
    ] = False,
) -> None:
    """Create the catalog topics that are missing and report drift. Never deletes anything."""
    from hl7bus.ops import kafka_clients, topics

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    admin = kafka_clients.admin_client(settings.kafka, bootstrap)
    catalog = topics.TopicCatalog.load(settings.topics)
    try:
        if dry_run:
            plans = topics.plan(admin, catalog)
        else:
            plans = topics.apply(admin, catalog, settings.topics.replication_factor)
    except Exception as exc:
        fail(f"cannot reach Kafka at {bootstrap}: {exc}")
    for p in plans:
        verb = {"create": "would create" if dry_run else "created", "ok": "ok", "drift": "DRIFT"}
        console.print(f"{verb[p.action]:>12}  {p.spec.name}  ({p.spec.partitions} partitions)")
        for line in p.drift:
            console.print(f"{'':>14}{line}")
    if any(p.action == "drift" for p in plans):
        console.print("drifted topics are left as they are; change them by hand or in the catalog")


# -- config -------------------------------------------------------------------------------------


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


# -- mllp ---------------------------------------------------------------------------------------


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        fail(f"--listen {value!r}: expected HOST:PORT, e.g. 0.0.0.0:2575")
    return host or "0.0.0.0", int(port)


@mllp_app.command("serve")
def mllp_serve(
    config: ConfigOption = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to listen on (default: mllp.host/mllp.port).")
    ] = None,
    feed: Annotated[str | None, typer.Option(help="Feed name (default: mllp.feed).")] = None,
) -> None:
    """Receive HL7 over MLLP; ACK each message only after Kafka has stored it in hl7.raw."""
    settings = load_settings(config)
    overrides: dict[str, Any] = {}
    if listen:
        overrides["host"], overrides["port"] = _host_port(listen)
    if feed:
        overrides["feed"] = feed
    mllp_cfg = settings.mllp.model_validate({**settings.mllp.model_dump(), **overrides})
    asyncio.run(_serve_mllp(settings, mllp_cfg))


async def _serve_mllp(settings: Settings, mllp_cfg: Any) -> None:
    from hl7bus.connectors.mllp.server import MllpListener, Route
    from hl7bus.ops import kafka_clients, topics
    from hl7bus.ops.health import start_http

    bootstrap = config_mod.bootstrap(settings)
    catalog = topics.TopicCatalog.load(settings.topics)
    producer = kafka_clients.AsyncProducer(kafka_clients.producer_config(settings.kafka, bootstrap))
    listener = MllpListener(
        mllp_cfg, producer, Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
    )
    await listener.start()
    runner = None
    if mllp_cfg.metrics_port is not None:

        async def ready() -> bool:
            return await asyncio.to_thread(producer.cluster_reachable)

        runner = await start_http(mllp_cfg.host, mllp_cfg.metrics_port, ready)
    err_console.print(
        f"listening for MLLP on {mllp_cfg.host}:{listener.port} (feed {mllp_cfg.feed}), "
        f"storing to {catalog.name(topics.RAW)} at {bootstrap}"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    err_console.print("stopping: finishing in-flight messages")
    await listener.stop()
    if runner is not None:
        await runner.cleanup()
    producer.close()


# -- send ---------------------------------------------------------------------------------------


@app.command("send")
def send(
    paths: Annotated[
        list[Path], typer.Argument(help="HL7 files or directories (batch files are split).")
    ],
    host: Annotated[str, typer.Option(help="Listener host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listener port.")] = 2575,
    window: Annotated[
        int, typer.Option(help="Unacknowledged messages allowed per connection (pipelining).")
    ] = 1,
    connections: Annotated[int, typer.Option(help="Parallel connections.")] = 1,
    rate: Annotated[
        float | None, typer.Option(help="Messages per second overall (default: as fast as ACKs).")
    ] = None,
    ack_timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 30.0,
) -> None:
    """Send HL7 messages over MLLP and summarize the ACKs. Exit 1 unless every ACK is AA/CA."""
    from hl7bus.ops.sending import read_messages, send_with_progress

    try:
        messages = read_messages(paths)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if not messages:
        fail("no messages found in the given paths")
    summary = send_with_progress(
        console, host, port, messages, window, connections, rate, ack_timeout
    )
    if not summary.ok:
        raise typer.Exit(1)


# -- worker and sinks ---------------------------------------------------------------------------


@app.command("worker")
def worker(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option(help="faust log level.")] = "warn",
) -> None:
    """Run the stream processors: parse hl7.raw into events, de-identify them to research.*."""
    from hl7bus.ops import topics
    from hl7bus.streams import deidentify, runtime

    settings = load_settings(config)
    try:
        policy = deidentify.Policy.load(settings.deid.policy)
        key = deidentify.load_key(settings.deid)
    except (deidentify.PolicyError, OSError) as exc:
        fail(str(exc), code=2)
    catalog = topics.TopicCatalog.load(settings.topics)
    faust_app = runtime.build_app(
        settings.worker,
        config_mod.bootstrap(settings),
        catalog,
        policy,
        key,
        settings.deid.leak_check,
    )
    sys.argv = [sys.argv[0]]  # faust's Worker parses argv itself
    runtime.run(faust_app, loglevel)


@sink_app.command("warehouse")
def sink_warehouse(config: ConfigOption = None) -> None:
    """Write research events into the OMOP-shaped warehouse (DuckDB by default)."""
    from hl7bus.connectors.warehouse.duckdb_sink import run_sink
    from hl7bus.ops import kafka_clients, topics

    settings = load_settings(config)
    catalog = topics.TopicCatalog.load(settings.topics)
    consumer_cfg = kafka_clients.consumer_config(
        settings.kafka, config_mod.bootstrap(settings), settings.warehouse.group_id
    )
    names = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print(f"writing {', '.join(names)} into {settings.warehouse.path}")
    run_sink(settings.warehouse, consumer_cfg, names, stop)


# -- demo ---------------------------------------------------------------------------------------


@app.command("demo")
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
