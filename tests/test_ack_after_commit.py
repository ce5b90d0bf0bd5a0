"""ACK after commit: with the broker killed mid-stream the sender never gets AA for a message
Kafka does not hold; after the restart every message that got AA is in hl7.raw."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kafka_helpers import apply_catalog, read_topic
from samples import feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import Route
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.mllp.client import AckResult, send_messages
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.connectors.mllp.listener import MllpListener
from hl7bus.ops import local_kafka
from hl7bus.ops.processes import free_port
from hl7bus.schemas import codec, topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 300
KILL_AFTER = 60


def _messages() -> list[bytes]:
    out = []
    source = feed()
    for i in range(TOTAL):
        message = source[i % len(source)]
        message.set("MSH-10", f"AAC{i:06d}")
        out.append(message.to_bytes())
    return out


def test_broker_killed_mid_stream(tmp_path: Path) -> None:
    # A broker of this test's own, on a fixed port so clients find it again after the restart.
    cfg = local_kafka.LocalKafkaConfig(
        port=free_port(), data_root=tmp_path, name="aac", start_timeout_s=90
    )
    broker = local_kafka.up(cfg)
    try:
        results, outage = asyncio.run(_run(cfg, broker.bootstrap))
        received = read_topic(broker.bootstrap, "aac.hl7.raw", expected=TOTAL, timeout=60)
    finally:
        local_kafka.down(cfg)

    codes = [r.code for r in results]
    accepted = {r.control_id for r in results if r.code == "AA"}
    assert outage, "the broker was never killed"
    assert "AR" in codes, "no message was rejected while the broker was down"
    assert len(accepted) > KILL_AFTER, "the listener did not recover after the restart"
    assert set(codes) <= {"AA", "AR", None}, codes
    stored = {codec.decode(r.value() or b"")[1]["control_id"] for r in received}
    missing = accepted - stored
    assert not missing, f"{len(missing)} messages were ACKed AA but are not in hl7.raw"


async def _run(
    cfg: local_kafka.LocalKafkaConfig, bootstrap: str
) -> tuple[list[AckResult], list[str]]:
    catalog = apply_catalog(bootstrap, "aac")
    producer = kafka_clients.AsyncProducer(
        kafka_clients.producer_config(KafkaConfig(delivery_timeout_ms=3000), bootstrap)
    )
    listener = MllpListener(
        MllpConfig(port=0, feed="aac", metrics_port=None),
        producer,
        Route(catalog.name(topics.RAW), catalog.name(topics.DLQ)),
    )
    await listener.start()
    acked = 0
    killed = asyncio.Event()
    outage: list[str] = []

    def on_ack(result: AckResult) -> None:
        nonlocal acked
        acked += 1
        if acked == KILL_AFTER:
            killed.set()

    async def chaos() -> None:
        await killed.wait()
        await asyncio.to_thread(local_kafka.kill, cfg)
        outage.append("killed")
        await asyncio.sleep(5)  # several delivery timeouts long
        await asyncio.to_thread(local_kafka.up, cfg)
        outage.append("restarted")

    chaos_task = asyncio.create_task(chaos())
    try:
        results = await send_messages(
            "127.0.0.1", listener.port, _messages(), window=4, ack_timeout=30, on_ack=on_ack
        )
        await chaos_task
    finally:
        await listener.stop()
        producer.close()
    return results, outage
