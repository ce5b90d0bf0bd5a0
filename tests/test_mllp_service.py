"""The MLLP service on the real broker: many connections, pipelining, per-feed policies (charset,
ACK mode, allowed networks), an EUC-KR round trip, graceful shutdown.

`serving()` is also used by the TLS and health tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kafka_helpers import apply_catalog, read_topic
from polling import wait_until_async
from samples import feed, first

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import Route
from hl7bus.connectors.kafka_clients import AsyncProducer, KafkaConfig
from hl7bus.connectors.mllp.client import send_many, send_messages
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.connectors.mllp.listener import MllpListener
from hl7bus.connectors.mllp.metrics import REFUSED
from hl7bus.connectors.mllp.service import MllpService
from hl7bus.hl7v2 import parse
from hl7bus.ops.health import start_http
from hl7bus.schemas import codec, topics

pytestmark = pytest.mark.kafka


@dataclass
class Served:
    service: MllpService
    catalog: topics.TopicCatalog
    bootstrap: str

    def port(self, feed_name: str | None = None) -> int:
        if feed_name is None:
            return self.service.listeners[0].port
        return self.service.listener(feed_name).port

    def topic(self, topic_id: str) -> str:
        return self.catalog.name(topic_id)


@contextlib.asynccontextmanager
async def serving(
    bootstrap: str,
    prefix: str,
    mllp: dict[str, Any],
    producer: AsyncProducer | None = None,
) -> AsyncIterator[Served]:
    """A running MllpService (ports 0, metrics off unless asked) on topics named by `prefix`."""
    catalog = await asyncio.to_thread(apply_catalog, bootstrap, prefix)
    own = producer is None
    if producer is None:
        producer = AsyncProducer(kafka_clients.producer_config(KafkaConfig(), bootstrap))
    cfg = MllpConfig.model_validate({"port": 0, "metrics_port": None, **mllp})
    service = MllpService(
        cfg,
        producer,
        Route(catalog.name(topics.RAW), catalog.name(topics.DLQ)),
        start_http=start_http,
    )
    await service.start()
    try:
        yield Served(service, catalog, bootstrap)
    finally:
        await service.stop()
        if own:
            producer.close()


def numbered(count: int, tag: str) -> list[bytes]:
    """`count` sample messages with distinct control ids TAG000000, TAG000001, ..."""
    source = feed()
    out = []
    for i in range(count):
        message = parse(source[i % len(source)].to_er7())
        message.set("MSH-10", f"{tag}{i:06d}")
        out.append(message.to_bytes())
    return out


def stored_ids(bootstrap: str, topic: str, expected: int) -> list[str]:
    records = read_topic(bootstrap, topic, expected=expected)
    return [codec.decode(r.value() or b"")[1]["control_id"] for r in records]


def test_fifty_concurrent_connections(kafka_bootstrap: str, unique_name: str) -> None:
    messages = numbered(200, "C")

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"feed": "conc"}) as bus:
            results = await send_many(
                "127.0.0.1", bus.port(), messages, connections=50, ack_timeout=20
            )
            return bus, results

    bus, results = asyncio.run(main())
    assert [r.code for r in results] == ["AA"] * 200
    assert all(r.accepted for r in results)
    ids = stored_ids(kafka_bootstrap, bus.topic(topics.RAW), 200)
    assert sorted(ids) == sorted(f"C{i:06d}" for i in range(200))


def test_pipelining_window_20_acks_in_order(kafka_bootstrap: str, unique_name: str) -> None:
    messages = numbered(120, "P")

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"feed": "pipe"}) as bus:
            listener = bus.service.listeners[0]
            peak = 0
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, listener.in_flight)
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            results = await send_messages("127.0.0.1", bus.port(), messages, window=20)
            done.set()
            await watcher
            return bus, results, peak

    bus, results, peak = asyncio.run(main())
    # The client checks each ACK's MSA-2 against the MSH-10 sent at that position: any
    # reordering would show up as "ack mismatch" errors.
    assert [r.error for r in results] == [None] * 120
    assert [r.code for r in results] == ["AA"] * 120
    assert peak > 1, "the listener never had two messages of the connection in flight"
    assert len(stored_ids(kafka_bootstrap, bus.topic(topics.RAW), 120)) == 120


@pytest.mark.parametrize(
    ("networks", "allowed"),
    [(["10.0.0.0/8"], False), (["10.0.0.0/8", "127.0.0.0/8"], True)],
)
def test_allowed_networks(
    kafka_bootstrap: str,
    unique_name: str,
    networks: list[str],
    allowed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed_name = f"net{int(allowed)}"
    before = REFUSED.labels(feed_name, "network")._value.get()
    message = first("ADT^A01").to_bytes()

    async def main() -> Any:
        mllp = {"feed": feed_name, "allowed_networks": networks}
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            return await send_messages("127.0.0.1", bus.port(), [message], ack_timeout=5)

    with caplog.at_level(logging.WARNING, logger="hl7bus.connectors.mllp.listener"):
        [result] = asyncio.run(main())
    refused = REFUSED.labels(feed_name, "network")._value.get() - before
    if allowed:
        assert result.code == "AA"
        assert refused == 0
        return
    assert result.code is None and result.error is not None
    assert result.error.startswith(("connection closed", "not sent")), result.error
    assert refused == 1
    [line] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert line == f"mllp feed {feed_name}: refused a connection from 127.0.0.1"


def _korean_message(msh18: str, control_id: str) -> str:
    message = parse(first("ADT^A01").to_er7())
    message.set("MSH-18", msh18)
    message.set("MSH-10", control_id)
    message.set("PID-5.1", "홍")
    message.set("PID-5.2", "길동똠")  # 똠 is outside KS X 1001's 2,350 syllables: cp949 only
    return message.to_er7()


def test_euc_kr_round_trip(kafka_bootstrap: str, unique_name: str) -> None:
    sent = _korean_message("KS X 1001", "KR000001").encode("cp949")
    assert "홍".encode("cp949") in sent

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"feed": "korea"}) as bus:
            return bus, await send_messages("127.0.0.1", bus.port(), [sent])

    bus, [result] = asyncio.run(main())
    assert result.code == "AA", result
    assert result.ack is not None
    ack = parse(result.ack.decode("cp949"))  # the ACK is cp949 too, and says so
    assert ack.get("MSH-18") == "KS X 1001"
    assert ack.get("MSA-2") == "KR000001"
    [record] = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=1)
    envelope = codec.decode(record.value() or b"")[1]
    assert envelope["raw"] == sent  # byte for byte
    assert envelope["charset"] == "cp949"
    assert parse(envelope["raw"]).get("PID-5.2") == "길동똠"


def test_per_feed_charset_and_ack_mode(kafka_bootstrap: str, unique_name: str) -> None:
    """Two feeds in one process: one overrides a lying MSH-18, one forces enhanced ACKs."""
    # Claims Latin-1 but carries cp949 bytes: the "liar" feed decodes with its override.
    lying = _korean_message("8859/1", "LIE00001").encode("cp949")
    plain = numbered(1, "ENH")[0]
    mllp = {
        "feeds": [
            {"feed": "liar", "port": 0, "charset": "KS X 1001"},
            {"feed": "enh", "port": 0, "ack_mode": "enhanced"},
        ]
    }

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            assert bus.port("liar") != bus.port("enh")
            liar = await send_messages("127.0.0.1", bus.port("liar"), [lying])
            enh = await send_messages("127.0.0.1", bus.port("enh"), [plain])
            return bus, liar, enh

    bus, [liar], [enh] = asyncio.run(main())
    assert liar.code == "AA"
    assert enh.code == "CA"  # no MSH-15/16 in the message, enhanced by feed policy
    records = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=2)
    by_feed = {env["feed"]: env for env in (codec.decode(r.value() or b"")[1] for r in records)}
    assert by_feed["liar"]["charset"] == "cp949"
    assert by_feed["liar"]["raw"] == lying
    assert by_feed["enh"]["charset"] == "utf-8"


class SlowProducer(AsyncProducer):
    """Holds every send for `delay` seconds first: a message is surely in flight meanwhile."""

    def __init__(self, config: dict[str, Any], delay: float) -> None:
        super().__init__(config)
        self.delay = delay

    def submit(self, *args: Any, **kwargs: Any) -> None:
        # Every write (send() too) goes through submit.
        asyncio.get_running_loop().call_later(
            self.delay, lambda: super(SlowProducer, self).submit(*args, **kwargs)
        )


def test_graceful_shutdown_finishes_in_flight(kafka_bootstrap: str, unique_name: str) -> None:
    messages = numbered(3, "G")
    producer = SlowProducer(kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap), 1.0)

    async def main() -> Any:
        catalog = await asyncio.to_thread(apply_catalog, kafka_bootstrap, unique_name)
        cfg = MllpConfig(port=0, feed="grace", metrics_port=None)
        listener = MllpListener(
            cfg, producer, Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
        )
        await listener.start()
        port = listener.port
        sending = asyncio.create_task(
            send_messages("127.0.0.1", port, messages, window=3, ack_timeout=20)
        )
        await wait_until_async(lambda: listener.in_flight >= 3, "three messages in flight")
        await listener.stop()  # all three are still waiting for Kafka here
        results = await sending
        late = await send_messages("127.0.0.1", port, messages[:1], ack_timeout=5)
        return catalog, results, late

    try:
        catalog, results, late = asyncio.run(main())
    finally:
        producer.close()
    assert [r.code for r in results] == ["AA"] * 3
    assert late[0].error is not None and late[0].error.startswith("connection refused")
    ids = stored_ids(kafka_bootstrap, catalog.name(topics.RAW), 3)
    assert sorted(ids) == ["G000000", "G000001", "G000002"]
