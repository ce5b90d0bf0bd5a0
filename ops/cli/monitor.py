"""`hl7bus lag-exporter` (consumer-group lag for Prometheus) and `hl7bus status`."""

from __future__ import annotations

import asyncio
import signal

from hl7bus.ops import config as config_mod
from hl7bus.ops.cli.shared import ConfigOption, err_console, fail, load_settings


def lag_exporter(config: ConfigOption = None) -> None:
    """Export every consumer group's lag (records and seconds, per partition) on /metrics.

    It runs apart from the workers and sinks so that it keeps reporting when they are dead."""
    from hl7bus.connectors import kafka_clients
    from hl7bus.connectors.kafka_lag import LagProbe
    from hl7bus.ops.lag_exporter import LagExporter

    settings = load_settings(config)
    bootstrap = config_mod.bootstrap(settings)
    cfg = settings.lag
    base = kafka_clients.base_config(settings.kafka, bootstrap)
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

    err_console.print(
        f"measuring consumer-group lag at {bootstrap} every {cfg.interval_s:g} s, "
        f"/metrics on {cfg.metrics_host}:{cfg.metrics_port}"
    )
    try:
        asyncio.run(serve())
    except OSError as exc:
        fail(f"lag exporter: {exc.strerror or exc}")
    finally:
        probe.consumer.close()
