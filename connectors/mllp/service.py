"""Every feed of the `mllp` config section in one process: one :class:`MllpListener` per feed,
each on its own port with its own charset policy, ACK mode, size limit, allowed client networks
and TLS settings, all sharing one Kafka producer, one in-flight budget (``max_in_flight_total``)
and one connection limit (``max_connections_total``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hl7bus.connectors.envelope import Route
from hl7bus.connectors.kafka_clients import AsyncProducer
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.connectors.mllp.listener import ConnectionSlots, MllpListener
from hl7bus.connectors.mllp.readiness import KafkaWatch
from hl7bus.connectors.mllp.session import Budget

__all__ = ["MllpService", "StartHttp"]


#: Starts the HTTP endpoints on (host, port) with a readiness check (True, or why not ready);
#: returns the aiohttp runner.
StartHttp = Callable[[str, int, Callable[[], Awaitable[bool | str]]], Awaitable[Any]]


class MllpService:
    """Every feed of the `mllp` section, one shared producer, and the health endpoints."""

    def __init__(
        self,
        cfg: MllpConfig,
        producer: AsyncProducer,
        route: Route,
        *,
        start_http: StartHttp | None = None,
    ) -> None:
        """`start_http`, given by the composition root, serves /metrics, /healthz and /readyz
        on mllp.metrics_port; without it the service has no HTTP endpoints."""
        self.cfg = cfg
        self.producer = producer
        self._start_http = start_http
        self._budget = Budget(cfg.max_in_flight_total)
        self._slots = ConnectionSlots(cfg.max_connections_total)
        self.listeners = [
            MllpListener(item, producer, route, budget=self._budget, slots=self._slots)
            for item in cfg.listeners()
        ]
        self._http: Any = None
        self._kafka = KafkaWatch(producer.cluster_reachable)

    def listener(self, feed: str) -> MllpListener:
        for item in self.listeners:
            if item.feed == feed:
                return item
        raise KeyError(feed)

    @property
    def http_port(self) -> int | None:
        if self._http is None:
            return None
        addresses: Sequence[Any] = self._http.addresses
        return int(addresses[0][1]) if addresses else None

    async def start(self) -> None:
        started: list[MllpListener] = []
        try:
            for item in self.listeners:
                await item.start()
                started.append(item)
        except OSError as exc:
            for item in started:
                await item.stop(0.1)
            raise OSError(
                exc.errno, f"feed {item.feed}: cannot listen on {item.cfg.host}:{item.cfg.port}"
            ) from exc
        if self.cfg.metrics_port is not None and self._start_http is not None:
            # The probe is a metadata request a second: only where someone reads /readyz.
            await self._kafka.start()
            self._http = await self._start_http(self.cfg.host, self.cfg.metrics_port, self.ready)

    async def ready(self) -> bool | str:
        """True when every feed accepts connections and the Kafka cluster answered its last
        probe; else why not. Never waits on Kafka (``readiness.py``)."""
        for item in self.listeners:
            if not item.serving:
                return f"feed {item.feed} is not accepting connections"
        return self._kafka.reason or True

    async def stop(self) -> None:
        grace = self.cfg.shutdown_grace_s
        await self._kafka.stop()
        await asyncio.gather(*(item.stop(grace) for item in self.listeners))
        if self._http is not None:
            await self._http.cleanup()
            self._http = None

    def describe(self) -> list[str]:
        """One line per feed, for the console: where it listens and how."""
        lines = []
        for item in self.listeners:
            cfg = item.cfg
            tls = "plain TCP"
            if cfg.tls is not None:
                tls = "TLS" if cfg.tls.client_cert_mode == "none" else "mutual TLS"
                if cfg.tls.client_cert_mode == "optional":
                    tls += " (client certificate optional)"
            lines.append(f"feed {cfg.feed}: {cfg.host}:{item.port} ({tls})")
        return lines
