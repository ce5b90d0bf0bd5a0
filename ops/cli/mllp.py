"""`hl7bus mllp serve` (the listener) and `hl7bus send` (the sending client)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import (
    ConfigOption,
    console,
    fail,
    load_catalog,
    load_settings,
)
from hl7bus.ops.config import Settings

mllp_app = typer.Typer(help="The MLLP listener that hospital interface engines send to.")


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
    from hl7bus.connectors.envelope import Route
    from hl7bus.connectors.mllp.service import MllpService
    from hl7bus.ops import health, logs
    from hl7bus.schemas import topics
    from hl7bus.schemas.gc_settings import settle_gc

    log = logs.configure(settings.log, "mllp")
    bootstrap = config_mod.bootstrap(settings)
    catalog = load_catalog(settings)
    producer = kafka_clients.AsyncProducer(
        {
            **kafka_clients.producer_config(settings.kafka, bootstrap),
            **logs.client_logging(settings.log),
        }
    )
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
        log.info("listening for MLLP, %s", line)
    where = f", /metrics on port {service.http_port}" if service.http_port else ""
    log.info("storing to %s at %s%s", catalog.name(topics.RAW), bootstrap, where)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight messages")
    await service.stop()
    producer.close()
    log.info("stopped")


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
