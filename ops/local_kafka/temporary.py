"""A throwaway broker for a test session or a benchmark run: :func:`temporary_broker`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hl7bus.connectors.paths import default_home
from hl7bus.ops.local_kafka.broker import down, kill, up
from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.ops.local_kafka.errors import LocalKafkaError
from hl7bus.ops.local_kafka.state import BrokerInfo


@contextlib.contextmanager
def temporary_broker(
    data_root: Path,
    name: str = "test",
    *,
    home: Path | None = None,
    heap: str = "512m",
    start_timeout_s: float = 60.0,
    sasl_ssl: bool = False,
) -> Iterator[BrokerInfo]:
    """A broker on free ports with its data under ``data_root``, stopped on exit; with
    ``sasl_ssl``, a SASL_SSL listener too (``BrokerInfo.sasl_ssl``: its address, CA file and
    SCRAM credentials).

    The jars come from the shared cache in ``home`` (default_home() when None), so only the
    first use on a machine pays for Maven.
    """
    cfg = LocalKafkaConfig(
        port=0,
        controller_port=0,
        heap=heap,
        home=home if home is not None else default_home(),
        data_root=data_root,
        name=name,
        start_timeout_s=start_timeout_s,
        sasl_ssl_port=0 if sasl_ssl else None,
    )
    info = up(cfg)
    try:
        yield info
    finally:
        try:
            down(cfg, timeout=15.0)
        except LocalKafkaError:
            kill(cfg)
