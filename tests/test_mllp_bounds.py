"""Resource bounds of the MLLP listener on the real broker: the idle timeout, and the in-flight
bound across connections and feeds (backpressure instead of buffering when Kafka is slow)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kafka_helpers import read_topic
from prometheus_client import REGISTRY
from samples import first
from test_mllp_service import SlowProducer, numbered, serving

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import AsyncProducer, KafkaConfig
from hl7bus.connectors.mllp.client import send_many, send_messages
from hl7bus.connectors.mllp.framer import Frame, Framer, encode_frame
from hl7bus.hl7v2 import parse
from hl7bus.schemas import codec, topics

pytestmark = pytest.mark.kafka


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _closed(feed: str, reason: str) -> float:
    return _sample("hl7bus_mllp_closed_connections_total", feed=feed, reason=reason)


# -- idle timeout --------------------------------------------------------------------------------


def test_idle_connection_is_closed_and_counted(kafka_bootstrap: str, unique_name: str) -> None:
    """A silent connection is closed after idle_timeout_s and counted; an unfinished frame on an
    idle connection is kept in hl7.dlq (truncated); a busy connection is left alone."""
    partial = first("ADT^A01").to_bytes()[:80]
    mllp = {"feed": "idle", "idle_timeout_s": 0.5}

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            before = _closed("idle", "idle")
            port = bus.port()
            silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
            stuck_r, stuck_w = await asyncio.open_connection("127.0.0.1", port)
            stuck_w.write(b"\x0b" + partial)  # a frame that never ends
            await stuck_w.drain()
            # Busy: one message every 0.2 s for 1.2 s, on one connection, well past 0.5 s.
            busy = await send_many(
                "127.0.0.1", port, numbered(6, "BUSY"), connections=1, rate=5.0, ack_timeout=10
            )
            silent_eof = await asyncio.wait_for(silent_r.read(), 10)
            stuck_eof = await asyncio.wait_for(stuck_r.read(), 10)
            for w in (silent_w, stuck_w):
                w.close()
            return bus, busy, silent_eof, stuck_eof, _closed("idle", "idle") - before

    bus, busy, silent_eof, stuck_eof, idle_closed = asyncio.run(main())
    assert [r.code for r in busy] == ["AA"] * 6  # no idle cut between messages 0.2 s apart
    assert (silent_eof, stuck_eof) == (b"", b"")  # closed by the listener, no ACK for a fragment
    assert idle_closed == 2
    [record] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
    headers = dict(record.headers() or [])
    assert headers["hl7bus.reason"] == b"truncated"
    assert codec.decode(record.value() or b"")[1]["raw"] == partial


def test_waiting_for_kafka_is_not_idle(kafka_bootstrap: str, unique_name: str) -> None:
    """A send-and-wait sender whose ACK takes longer than idle_timeout_s (slow Kafka) is not idle:
    it gets its ACK, on the same connection."""
    producer = SlowProducer(kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap), 1.2)

    async def main() -> Any:
        async with serving(
            kafka_bootstrap, unique_name, {"feed": "slowack", "idle_timeout_s": 0.3}, producer
        ) as bus:
            before = _closed("slowack", "idle")
            results = await send_messages(
                "127.0.0.1", bus.port(), numbered(2, "SLOW"), window=1, ack_timeout=10
            )
            return results, _closed("slowack", "idle") - before

    try:
        results, idle_closed = asyncio.run(main())
    finally:
        producer.close()
    assert [r.code for r in results] == ["AA", "AA"]
    assert [r.error for r in results] == [None, None]
    assert idle_closed == 0


# -- the overall in-flight bound -----------------------------------------------------------------


class GatedProducer(AsyncProducer):
    """Holds every send until the gate opens: Kafka as slow as it gets."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.gate = asyncio.Event()
        self._held: set[asyncio.Future[Any]] = set()

    def submit(self, *args: Any, **kwargs: Any) -> None:
        # Every write (send() too) goes through submit: hold it until the gate opens.
        if self.gate.is_set():
            super().submit(*args, **kwargs)
            return
        held = asyncio.ensure_future(self.gate.wait())
        held.add_done_callback(lambda _: super(GatedProducer, self).submit(*args, **kwargs))
        self._held.add(held)


def test_in_flight_bound_holds_while_senders_flood(kafka_bootstrap: str, unique_name: str) -> None:
    """max_in_flight_total across two feeds and four connections: with Kafka held, senders flood
    ~8 MB; the listener admits exactly the bound, the in-flight gauges never exceed it, and it
    stops reading (what it has read stays a few chunks per connection beyond the admitted
    messages). Released, every message gets its AA, in order."""
    bound = 40
    per_connection = 1000
    feeds = ["flood-a", "flood-b"]
    mllp = {
        "max_in_flight_total": bound,
        "max_in_flight": 1000,  # per connection: only the total binds
        "feeds": [{"feed": name, "port": 0} for name in feeds],
    }
    body = first("ORU^R01")
    filler = "NTE|1||" + "x" * 1400 + "\r"

    def messages(tag: str) -> list[bytes]:
        out = []
        for i in range(per_connection):
            body.set("MSH-10", f"{tag}{i:05d}")
            out.append(body.to_bytes() + filler.encode())
        return out

    streams = {f"F{c}": messages(f"F{c}") for c in range(4)}
    total_bytes = sum(len(m) for ms in streams.values() for m in ms)
    frame_bytes = max(len(m) for ms in streams.values() for m in ms) + 3
    producer = GatedProducer(kafka_clients.producer_config(KafkaConfig(), kafka_bootstrap))

    async def read_acks(reader: asyncio.StreamReader, count: int) -> list[tuple[str, str]]:
        framer, out = Framer(), list[tuple[str, str]]()
        while len(out) < count:
            chunk = await reader.read(65536)
            if not chunk:
                break
            for event in framer.feed(chunk):
                assert isinstance(event, Frame)
                ack = parse(event.payload)
                out.append((ack.get("MSA-1") or "", ack.get("MSA-2") or ""))
        return out

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp, producer) as bus:
            listeners = bus.service.listeners
            peak = {"in_flight": 0, "gauge": 0.0}
            watching = True

            async def watch() -> None:
                while watching:
                    peak["in_flight"] = max(
                        peak["in_flight"], sum(item.in_flight for item in listeners)
                    )
                    gauge = sum(_sample("hl7bus_mllp_in_flight", feed=name) for name in feeds)
                    peak["gauge"] = max(peak["gauge"], gauge)
                    await asyncio.sleep(0)

            watcher = asyncio.create_task(watch())
            conns = []
            for i, (tag, msgs) in enumerate(streams.items()):
                reader, writer = await asyncio.open_connection("127.0.0.1", bus.port(feeds[i % 2]))
                writer.write(b"".join(encode_frame(m) for m in msgs))  # all at once: a flood
                conns.append((tag, reader, writer))
            ack_tasks = [asyncio.create_task(read_acks(r, per_connection)) for _, r, _ in conns]

            # Held: wait until the bound is reached and reading has stopped for a while.
            deadline = time.monotonic() + 30
            last, stable_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                read = sum(item.read_bytes for item in listeners)
                if read != last:
                    last, stable_since = read, time.monotonic()
                elif time.monotonic() - stable_since > 1.0:
                    break
                await asyncio.sleep(0.05)
            held = {
                "in_flight": sum(item.in_flight for item in listeners),
                "read_bytes": sum(item.read_bytes for item in listeners),
                "received": sum(_sample("hl7bus_mllp_messages_total", feed=name) for name in feeds),
            }
            producer.gate.set()
            acks = await asyncio.wait_for(asyncio.gather(*ack_tasks), 120)
            watching = False
            await watcher
            for _, _, writer in conns:
                writer.close()
            return bus, held, peak, acks

    before = sum(_sample("hl7bus_mllp_messages_total", feed=name) for name in feeds)
    try:
        bus, held, peak, acks = asyncio.run(main())
    finally:
        producer.close()

    assert held["in_flight"] == bound
    # Received (framed) while held: the admitted ones plus what one read chunk per connection
    # held; they wait for a slot, unread bytes stay in the socket.
    assert bound <= held["received"] - before <= bound + 4 * (64 * 1024 // frame_bytes + 1)
    assert peak["in_flight"] <= bound
    assert peak["gauge"] <= bound
    # Memory: what the listener read while held is the admitted messages plus at most one read
    # chunk per connection (64 KiB, partly framed) -- not the senders' 8 MB. (asyncio's own
    # stream buffer is bounded too: it pauses the socket at twice the 64 KiB limit.)
    assert held["read_bytes"] <= bound * frame_bytes + 4 * 64 * 1024, held
    assert held["read_bytes"] < total_bytes / 10
    for (tag, msgs), got in zip(streams.items(), acks, strict=True):
        assert got == [("AA", f"{tag}{i:05d}") for i in range(len(msgs))]
    stored = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=4 * per_connection)
    assert len(stored) == 4 * per_connection
