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
topics_app = typer.Typer(help="The topic catalog (schemas/topics.yaml).")
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


def load_catalog(settings: Settings) -> Any:
    """The topic catalog, with the value codec set up for it (single-object or registry)."""
    from hl7bus.schemas import codec, topics

    catalog = topics.TopicCatalog.load(settings.topics)
    codec.configure(settings.schemas, {tid: spec.name for tid, spec in catalog.specs.items()})
    return catalog


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
def apply_topics(
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be created and what drifted.")
    ] = False,
) -> None:
    """Create the catalog topics that are missing and report drift. Never deletes anything."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import topics_apply
    from hl7bus.schemas import topics

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    admin = kafka_clients.admin_client(settings.kafka, bootstrap)
    catalog = topics.TopicCatalog.load(settings.topics)
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
        str | None,
        typer.Option(help="HOST:PORT to listen on (default: mllp.host/mllp.port); one feed only."),
    ] = None,
    feed: Annotated[
        str | None,
        typer.Option(help="Feed name (default: mllp.feed); with mllp.feeds, serve only this feed."),
    ] = None,
) -> None:
    """Receive HL7 over MLLP on every configured feed; ACK each message only after Kafka has
    stored it in hl7.raw."""
    settings = load_settings(config)
    host, port = _host_port(listen) if listen else (None, None)
    try:
        mllp_cfg = settings.mllp.narrowed(feed, host, port)
    except ValueError as exc:
        fail(str(exc), code=2)
    asyncio.run(_serve_mllp(settings, mllp_cfg))


async def _serve_mllp(settings: Settings, mllp_cfg: Any) -> None:
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.mllp.server import MllpService, Route, settle_gc
    from hl7bus.ops import health
    from hl7bus.schemas import topics

    bootstrap = config_mod.bootstrap(settings)
    catalog = load_catalog(settings)
    producer = kafka_clients.AsyncProducer(kafka_clients.producer_config(settings.kafka, bootstrap))
    service = MllpService(
        mllp_cfg,
        producer,
        Route(catalog.name(topics.RAW), catalog.name(topics.DLQ)),
        start_http=health.start_http,
    )
    try:
        await service.start()
    except OSError as exc:
        producer.close(5)
        fail(str(exc.strerror or exc))
    settle_gc()
    for line in service.describe():
        err_console.print(f"listening for MLLP, {line}")
    where = f", /metrics on port {service.http_port}" if service.http_port else ""
    err_console.print(f"storing to {catalog.name(topics.RAW)} at {bootstrap}{where}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    err_console.print("stopping: finishing in-flight messages")
    await service.stop()
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
    tls: Annotated[
        bool, typer.Option("--tls", help="Connect with TLS (implied by --ca and --cert).")
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option(
            help="CA file to verify the listener with (default: system CAs).", dir_okay=False
        ),
    ] = None,
    cert: Annotated[
        Path | None,
        typer.Option(help="Client certificate (PEM) for mutual TLS.", dir_okay=False),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            help="Private key of --cert (PEM; default: in the --cert file).", dir_okay=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (no progress bar).")
    ] = False,
) -> None:
    """Send HL7 messages over MLLP and summarize the ACKs. Exit 1 unless every ACK is AA/CA."""
    import ssl

    from hl7bus.connectors.mllp.client import client_ssl_context
    from hl7bus.connectors.mllp.sending import read_messages, send_and_report

    try:
        messages = read_messages(paths)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if not messages:
        fail("no messages found in the given paths")
    context = None
    if tls or ca or cert or key:
        try:
            context = client_ssl_context(ca=ca, cert=cert, key=key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            fail(f"TLS (--ca/--cert/--key): {getattr(exc, 'reason', None) or exc}", code=2)
    report = send_and_report(
        console,
        host,
        port,
        messages,
        window=window,
        connections=connections,
        rate=rate,
        ack_timeout=ack_timeout,
        ssl=context,
        progress=not as_json,
        table=not as_json,
    )
    if as_json:
        print(json.dumps(report.to_dict()))
    if not report.summary.ok:
        raise typer.Exit(1)


# -- ingest -------------------------------------------------------------------------------------


@app.command("ingest")
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="HL7 files or directories (batch files are split; resumable)."),
    ] = None,
    config: ConfigOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Poll files.drop_dir for new files until Ctrl-C.")
    ] = False,
    feed: Annotated[str | None, typer.Option(help="Feed name (default: files.feed).")] = None,
    pattern: Annotated[
        str | None, typer.Option(help="File name glob in directories (default: files.pattern).")
    ] = None,
) -> None:
    """Ingest HL7 message and batch files into hl7.raw. Exit 1 unless all of it reached hl7.raw.

    A file is done (moved to files.done_dir when set) only when Kafka confirmed every message;
    an interrupted run resumes at the first unconfirmed message.
    """
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.envelope import Route
    from hl7bus.ops.ingest import run_ingest, run_watch
    from hl7bus.schemas import topics

    settings = load_settings(config)
    overrides = {k: v for k, v in (("feed", feed), ("pattern", pattern)) if v is not None}
    try:
        files_cfg = settings.files.model_validate({**settings.files.model_dump(), **overrides})
    except ValueError as exc:
        fail(str(exc), code=2)
    catalog = load_catalog(settings)
    route = Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
    producer_cfg = kafka_clients.producer_config(settings.kafka, config_mod.bootstrap(settings))
    if watch:
        if paths:
            fail("--watch polls files.drop_dir; give no paths with it", code=2)
        if files_cfg.drop_dir is None:
            fail("--watch needs files.drop_dir (HL7BUS_FILES_DROP_DIR)", code=2)
        summary = run_watch(files_cfg, producer_cfg, route, err_console)
        raise typer.Exit(0 if summary.count("failed") == 0 else 1)
    if not paths:
        fail("give files or directories to ingest, or --watch", code=2)
    from hl7bus.connectors.files.source import FileSource

    try:
        files = FileSource.expand_paths(paths, files_cfg.pattern)
    except FileNotFoundError as exc:
        fail(str(exc))
    if not files:
        fail(f"no files matching {files_cfg.pattern} in the given paths")
    summary = run_ingest(files_cfg, producer_cfg, route, files, console)
    if not summary.ok:
        raise typer.Exit(1)


# -- schemas ------------------------------------------------------------------------------------

schemas_app = typer.Typer(help="The Avro event contracts (schemas/*.avsc).")
app.add_typer(schemas_app, name="schemas")


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


# -- worker and sinks ---------------------------------------------------------------------------


@app.command("worker")
def worker(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option(help="faust log level.")] = "warn",
) -> None:
    """Run the stream processors: parse hl7.raw into events, de-identify them to research.*.

    Both stages run in one pass by default.

    With worker.stages set to deidentify only, it de-identifies hl7.events alone.

    Use it to re-make the research topics under a new policy (with its own worker.app_id)."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.ops import health
    from hl7bus.schemas import topics
    from hl7bus.streams import deidentify, runtime

    settings = load_settings(config)
    try:
        policy = deidentify.Policy.load(settings.deid.policy)
        key = deidentify.load_key(settings.deid)
    except (deidentify.PolicyError, OSError) as exc:
        fail(str(exc), code=2)
    catalog = load_catalog(settings)
    runtime.declare_changelog(
        kafka_clients.admin_client(settings.kafka, config_mod.bootstrap(settings)),
        settings.worker.app_id,
        catalog.specs[topics.RAW].partitions,
        settings.topics.replication_factor,
    )
    faust_app = runtime.build_app(
        settings.worker,
        config_mod.bootstrap(settings),
        catalog,
        policy,
        key,
        settings.deid.leak_check,
        serve_health=health.serve,
    )
    sys.argv = [sys.argv[0]]  # faust's Worker parses argv itself
    runtime.run(faust_app, loglevel)


@sink_app.command("warehouse")
def sink_warehouse(config: ConfigOption = None) -> None:
    """Write research events into the OMOP-shaped warehouse (DuckDB by default)."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.warehouse.duckdb_sink import run_sink

    settings = load_settings(config)
    catalog = load_catalog(settings)
    consumer_cfg = kafka_clients.consumer_config(
        settings.kafka, config_mod.bootstrap(settings), settings.warehouse.group_id
    )
    names = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    err_console.print(f"writing {', '.join(names)} into {settings.warehouse.path}")
    run_sink(settings.warehouse, consumer_cfg, names, stop)


# -- status -------------------------------------------------------------------------------------


@app.command("status")
def status(config: ConfigOption = None) -> None:
    """Records per catalog topic and how far the worker and the warehouse sink lag behind."""
    from rich.table import Table

    from hl7bus.connectors import kafka_clients
    from hl7bus.schemas import topics
    from hl7bus.streams.runtime import source_topics

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    catalog = topics.TopicCatalog.load(settings.topics)
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
        }
    except Exception as exc:
        fail(f"cannot reach Kafka at {bootstrap}: {exc}")
    table = Table(title=f"hl7bus at {bootstrap}")
    table.add_column("topic / consumer")
    table.add_column("records / lag", justify="right")
    for name, size in sizes.items():
        table.add_row(name, "missing (hl7bus topics apply)" if size is None else str(size))
    for group, lag in lags.items():
        table.add_row(f"lag of {group}", str(lag))
    console.print(table)


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


# -- parse --------------------------------------------------------------------------------------


@app.command("parse")
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
            err_console.print(f"[bold red]error:[/] {_esc(str(file))}: {exc.strerror or exc}")
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
            err_console.print(f"[bold red]error:[/] {_esc(str(file))}: {exc.reason}{at}")
            failed = True
            continue
        if not messages:
            err_console.print(f"[bold red]error:[/] {_esc(str(file))}: no HL7 messages")
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


def _esc(text: str) -> str:
    from rich.markup import escape as markup_escape

    return markup_escape(text)


def _message_tree(msg: Any, title: str) -> Any:
    """A rich Tree: segments, then non-empty fields as SEG-n, composite fields
    split into repetitions and components (values decoded, markup-escaped)."""
    from rich.markup import escape as markup_escape
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
    from rich.markup import escape as markup_escape

    from hl7bus.hl7v2 import validate

    findings = validate(msg, level)  # type: ignore[arg-type]
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        text = markup_escape(f"{where}: {f.location}: {f.problem}")
        err_console.print(f"[{colour}]{f.severity}[/]: {text}")
    return any(f.severity == "error" for f in findings)


# -- deid ---------------------------------------------------------------------------------------


@app.command("deid")
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
    from hl7bus.streams import deid_review, deidentify

    settings = load_settings(config)
    try:
        policy = deidentify.Policy.load(policy_ref or settings.deid.policy)
    except (deidentify.PolicyError, OSError) as exc:
        fail(str(exc), code=2)
    try:
        key = deidentify.load_key(settings.deid, sink=sink)
    except deidentify.PolicyError:
        # No key configured: an ephemeral one, so the review runs; pseudonyms and date shifts
        # then differ from the live worker's.
        key = deidentify.Pseudonymizer(secrets.token_bytes(32), "ephemeral")
        err_console.print("[yellow]no deid key configured: using an ephemeral key[/]")
    except OSError as exc:
        fail(f"deid key: {exc}", code=2)
    zone = ZoneInfo(settings.worker.timezone)
    reviewed: list[Any] = []
    for file in files:
        try:
            reviewed += deid_review.review(file.read_bytes(), policy, key, zone)
        except (OSError, Hl7ParseError) as exc:
            fail(f"{_esc(str(file))}: {getattr(exc, 'reason', None) or exc}")
    if as_json:
        out = deid_review.as_json(reviewed, policy, key)
        typer.echo(json.dumps(out, ensure_ascii=False, indent=1))
        return
    _print_review(reviewed, policy, key)


def _print_review(reviewed: list[Any], policy: Any, key: Any) -> None:
    from rich.markup import escape as markup_escape
    from rich.table import Table

    from hl7bus.streams import deid_review

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


# -- bench --------------------------------------------------------------------------------------
# One sub-app for all benchmarks (bench/<name>.py, run from a source checkout); each prints
# JSON with its figure and a named peer's figure from the same run (DESIGN §8, BENCHMARKS.md).

bench_app = typer.Typer(
    help="Benchmarks (JSON on stdout, each against a named peer in the same run)."
)
app.add_typer(bench_app, name="bench")


def _bench_module(name: str) -> Any:
    """Import bench/<name>.py: the benchmarks live next to the package folders in a source
    checkout (editable install) and are not part of the installed package."""
    import importlib

    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / f"{name}.py").is_file():
        fail(f"benchmark {name!r} not found: run it from a source checkout (bench/{name}.py)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"bench.{name}")


@bench_app.command("parse")
def bench_parse(
    messages: Annotated[
        int, typer.Option(min=1, help="17-segment ORU^R01 messages in the corpus.")
    ] = 200,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="Time budget per contender (at least one pass).")
    ] = 2.0,
    hl7apy_messages: Annotated[
        int, typer.Option(min=1, help="Messages for hl7apy, which is slow.")
    ] = 20,
    rounds: Annotated[
        int, typer.Option(min=1, help="Interleaved rounds sharing each time budget.")
    ] = 5,
    profile: Annotated[
        bool, typer.Option("--profile", help="Print a cProfile of hl7bus's walk instead.")
    ] = False,
) -> None:
    """Parse + read the fields an event mapper reads, and every field: hl7bus vs python-hl7 vs
    hl7apy vs bare str.split (the floor)."""
    bench = _bench_module("parse")
    if profile:
        typer.echo(bench.profile(messages))
        return
    with err_console.status("benchmarking parse (hl7bus, python-hl7, hl7apy, str.split)..."):
        result = bench.run(messages, seconds, hl7apy_messages, rounds)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("mllp")
def bench_mllp(
    messages: Annotated[
        int, typer.Option(min=1, help="~2 KB ORU^R01 messages per step and contender.")
    ] = 3000,
    connections: Annotated[
        str, typer.Option(help="Comma-separated connection counts, one step each.")
    ] = "1,8,32",
    window: Annotated[int, typer.Option(min=1, help="Unacknowledged messages per connection.")] = 1,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Offered messages/s of the latency-under-load step.")
    ] = 1000.0,
    rate_seconds: Annotated[
        float, typer.Option(min=0.5, help="Duration of the offered-rate step.")
    ] = 5.0,
    profile: Annotated[
        bool, typer.Option("--profile", help="Add a cProfile of the listener (Kafka, widest).")
    ] = False,
    linger_ms: Annotated[
        int | None,
        typer.Option(min=0, help="The listener's kafka.linger_ms (default: the config default)."),
    ] = None,
) -> None:
    """MLLP listener throughput and ACK latency: producing to a real broker (acks=all) vs the
    same listener ACKing without Kafka. Starts its own broker."""
    try:
        counts = [int(part) for part in connections.split(",") if part.strip()]
    except ValueError:
        fail(f"--connections {connections!r}: expected numbers like 1,8,32", code=2)
    if not counts or min(counts) < 1:
        fail(f"--connections {connections!r}: expected numbers like 1,8,32", code=2)
    bench = _bench_module("mllp")
    with err_console.status("benchmarking the MLLP listener (starts a Kafka broker)..."):
        result = bench.run(
            messages,
            counts,
            window=window,
            rate=rate,
            rate_seconds=rate_seconds,
            profile=profile,
            linger_ms=linger_ms,
        )
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("deid")
def bench_deid(
    messages: Annotated[
        int, typer.Option(min=1, help="ORU^R01 messages with a free-text NTE in the corpus.")
    ] = 100,
    seconds: Annotated[
        float, typer.Option(min=0.0, help="Time budget per contender and round.")
    ] = 1.0,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds.")] = 3,
    policy_ref: Annotated[
        str, typer.Option("--policy", help="Profile or policy file.")
    ] = "kr-pseudonym",
) -> None:
    """De-identification (every event of a message, to research form) vs parse+normalize of the
    same messages, events/s per core; target: deid at most 50 % of parse+normalize time."""
    bench = _bench_module("deid")
    with err_console.status("benchmarking deid vs parse+normalize..."):
        result = bench.run(messages, seconds, rounds, policy_ref)
    typer.echo(json.dumps(result, indent=2))


@bench_app.command("stream")
def bench_stream(
    messages: Annotated[
        int, typer.Option(min=100, help="ORU^R01 messages (10 OBX each) per contender and round.")
    ] = 3000,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (forward, parse).")] = 3,
    profile: Annotated[
        bool, typer.Option("--profile", help="Add a cProfile of one more parse worker run.")
    ] = False,
) -> None:
    """Events/s of parse+normalize in one worker through a real broker vs the bare
    consume->produce loop of the same runtime. Starts its own broker."""
    bench = _bench_module("stream")
    with err_console.status("benchmarking the stream worker (starts a Kafka broker)..."):
        result = bench.run(messages, rounds, profile=profile)
    profile_text = result.pop("profile", None)
    if profile_text:
        err_console.print(profile_text, markup=False)
    typer.echo(json.dumps(result, indent=2))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
