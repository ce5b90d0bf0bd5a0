"""/metrics, /healthz and /readyz of the MLLP service, on the real broker."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from samples import first
from test_mllp_service import numbered, serving

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import AsyncProducer, KafkaConfig
from hl7bus.connectors.mllp.client import send_messages
from hl7bus.hl7v2 import ACK_CODES

pytestmark = pytest.mark.kafka

_SAMPLE = re.compile(r"^(hl7bus_mllp_\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match[2]))
            out.append((match[1], labels, float(match[3])))
    return out


def test_metrics_health_and_ready(kafka_bootstrap: str, unique_name: str) -> None:
    good = numbered(4, "MET")
    bad = b"\x00\x01 this is not HL7 at all"  # AE, and a DLQ record
    mllp = {
        "metrics_port": 0,
        "feeds": [{"feed": "metrics-a", "port": 0}, {"feed": "metrics-b", "port": 0}],
    }

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            port = bus.service.http_port
            assert port
            a = await send_messages("127.0.0.1", bus.port("metrics-a"), [*good, bad])
            b = await send_messages("127.0.0.1", bus.port("metrics-b"), good[:2])
            return (
                [r.code for r in a + b],
                await _get(port, "/healthz"),
                await _get(port, "/readyz"),
                await _get(port, "/metrics"),
            )

    codes, healthz, readyz, (status, text) = asyncio.run(main())
    assert codes == ["AA"] * 4 + ["AE"] + ["AA"] * 2
    assert healthz[0] == 200
    assert readyz == (200, "ready\n")
    assert status == 200
    samples = _samples(text)
    value = {(name, tuple(sorted(labels.items()))): v for name, labels, v in samples}

    def get(name: str, **labels: str) -> float:
        return value.get((name, tuple(sorted(labels.items()))), 0.0)

    assert get("hl7bus_mllp_messages_total", feed="metrics-a") == 5
    assert get("hl7bus_mllp_messages_total", feed="metrics-b") == 2
    assert get("hl7bus_mllp_acks_total", feed="metrics-a", code="AA") == 4
    assert get("hl7bus_mllp_acks_total", feed="metrics-a", code="AE") == 1
    assert get("hl7bus_mllp_acks_total", feed="metrics-b", code="AA") == 2
    assert get("hl7bus_mllp_dlq_total", feed="metrics-a", reason="parse") == 1
    assert get("hl7bus_mllp_ack_latency_seconds_count", feed="metrics-b") == 2
    assert get("hl7bus_mllp_connections", feed="metrics-a") == 0
    assert get("hl7bus_mllp_in_flight", feed="metrics-a") == 0

    # Labels are bounded: feed, code, reason and histogram buckets only, never an id or value.
    codes_seen = set()
    for name, labels, _ in samples:
        assert set(labels) <= {"feed", "code", "reason", "le"}, (name, labels)
        if "code" in labels:
            codes_seen.add(labels["code"])
    assert codes_seen <= ACK_CODES | {"none"}
    for control_id in ("MET000000", "MET000003", first("ADT^A01").get("PID-3.1")):
        assert control_id and control_id not in text


def test_readyz_503_without_a_broker(kafka_bootstrap: str, unique_name: str) -> None:
    # A producer whose cluster does not exist: the listener runs, but it is not ready.
    producer = AsyncProducer(
        kafka_clients.producer_config(KafkaConfig(), "127.0.0.1:1")
        | {"socket.connection.setup.timeout.ms": 1000}
    )

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"metrics_port": 0}, producer) as bus:
            port = bus.service.http_port
            assert port
            return await _get(port, "/healthz"), await _get(port, "/readyz")

    try:
        healthz, readyz = asyncio.run(main())
    finally:
        producer.close(1)
    assert healthz[0] == 200
    assert readyz[0] == 503
