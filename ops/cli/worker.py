"""`hl7bus worker` (the stream processors) and `hl7bus sink warehouse`."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import (
    ConfigOption,
    err_console,
    fail,
    load_catalog,
    load_settings,
)

sink_app = typer.Typer(help="Sinks that write research events out of Kafka.")


def worker(
    config: ConfigOption = None,
    loglevel: Annotated[str, typer.Option(help="faust log level.")] = "warn",
) -> None:
    """Run the stream processors: parse hl7.raw into events, de-identify them to research.*.

    Both stages run in one pass by default.

    With worker.stages set to deidentify only, it de-identifies hl7.events alone.

    Use it to re-make the research topics under a new policy (with its own worker.app_id)."""
    from confluent_kafka.admin import AdminClient
    from prometheus_client import REGISTRY

    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.kafka_settings import KafkaSettingsError
    from hl7bus.ops import health, logs
    from hl7bus.schemas import topics
    from hl7bus.schemas.datafile import DataFileError
    from hl7bus.streams import deid, runtime, worker_config
    from hl7bus.streams.deid import metrics as deid_metrics
    from hl7bus.streams.deid.contract import research_schemas
    from hl7bus.streams.terminology import Terminology

    settings = load_settings(config)
    try:
        policy = deid.Policy.load(settings.deid.policy)
        research_schemas(policy)  # a policy with no research contract is refused at start
        key = deid.load_key(settings.deid)
        auth = settings.kafka.client.broker_auth()
        terms = Terminology.load(settings.worker.code_maps)
    except (
        deid.PolicyError,
        deid.KeyConfigError,
        KafkaSettingsError,
        DataFileError,
        OSError,
    ) as exc:
        fail(str(exc), code=2)
    catalog = load_catalog(settings)
    try:
        kafka_clients.check_connection(settings.kafka, config_mod.bootstrap(settings))
    except kafka_clients.KafkaUnreachable as exc:
        fail(str(exc))
    admin = AdminClient(
        {
            **kafka_clients.base_config(settings.kafka, config_mod.bootstrap(settings)),
            **logs.client_logging(settings.log),
        }
    )
    worker_config.declare_changelog(
        admin,
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
        auth=auth,
        terms=terms,
    )
    # The engine does not register its action counts on import; the running worker serves them.
    REGISTRY.register(deid_metrics.ACTIONS_DONE)
    sys.argv = [sys.argv[0]]  # faust's Worker parses argv itself
    runtime.run(faust_app, loglevel, logs.dict_config(settings.log, "worker", loglevel))


@sink_app.command("warehouse")
def sink_warehouse(config: ConfigOption = None) -> None:
    """Write research events into the OMOP CDM v5.4 warehouse (DuckDB, or PostgreSQL with
    warehouse.url)."""
    import asyncio

    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.warehouse.sink import WarehouseSink, keeps_received_at
    from hl7bus.ops import health, logs
    from hl7bus.schemas import topics
    from hl7bus.streams.deid import Policy, PolicyError
    from hl7bus.streams.deid.contract import research_schemas

    settings = load_settings(config)
    catalog = load_catalog(settings)
    contracts = {}
    try:
        # The shipped profiles' contracts are packaged; those of a policy file are derived here
        # so that values written under it decode.
        contracts = research_schemas(Policy.load(settings.deid.policy))
    except PolicyError as exc:
        err_console.print(
            f"[yellow]warning:[/] deid.policy has no research contracts ({exc}); research "
            "values written under it will be skipped as undecodable"
        )
    bootstrap = config_mod.bootstrap(settings)
    try:
        kafka_clients.check_connection(settings.kafka, bootstrap)
    except kafka_clients.KafkaUnreachable as exc:
        fail(str(exc))
    cfg = settings.warehouse
    names = [s.name for s in catalog.specs.values() if s.id.startswith("research.")]
    client_logging = logs.client_logging(settings.log)
    sink = WarehouseSink(
        cfg,
        {
            **kafka_clients.consumer_config(settings.kafka, bootstrap, cfg.group_id),
            **client_logging,
        },
        {**kafka_clients.producer_config(settings.kafka, bootstrap), **client_logging},
        names,
        catalog.name(topics.DLQ),
        start_http=health.start_http,
        # Codes map through the vocabulary loaded in the warehouse database itself
        # (`hl7bus warehouse vocab load`); with none, concept 0 (docs/omop-mapping.md).
        received_at_kept=keeps_received_at(contracts),
    )
    where = "PostgreSQL (warehouse.url)" if cfg.url else str(cfg.path)
    log = logs.configure(settings.log, "warehouse")
    log.info("writing %s into %s", ", ".join(names), where)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await sink.run(stop)

    try:
        asyncio.run(serve())
    except Exception as exc:
        log.error("stopped: %s", _describe(exc))
        fail(f"warehouse sink stopped: {_describe(exc)}")
    log.info("stopped")


def _describe(exc: Exception) -> str:
    """An error for the console: connection and file errors say where; others only their
    type, since a database's message may quote a row (docs/architecture.md, Privacy)."""
    import duckdb
    import psycopg

    if isinstance(exc, OSError | duckdb.IOException | psycopg.OperationalError):
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return type(exc).__name__
