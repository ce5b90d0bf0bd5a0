"""The MLLP listener against the real broker: ACK after commit, NAKs with DLQ records."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from kafka_helpers import apply_catalog, read_topic
from samples import first

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.envelope import Route
from hl7bus.connectors.kafka_clients import KafkaConfig
from hl7bus.connectors.mllp.client import send_messages
from hl7bus.connectors.mllp.config import MllpConfig
from hl7bus.connectors.mllp.framer import encode_frame
from hl7bus.connectors.mllp.listener import MllpListener
from hl7bus.connectors.mllp.metrics import DLQ_FAILURES
from hl7bus.hl7v2 import parse
from hl7bus.schemas import codec, topics

pytestmark = pytest.mark.kafka


class Bus:
    def __init__(self, listener: MllpListener, catalog: topics.TopicCatalog, bootstrap: str):
        self.listener = listener
        self.catalog = catalog
        self.bootstrap = bootstrap

    def topic(self, topic_id: str) -> str:
        return self.catalog.name(topic_id)


async def start_bus(bootstrap: str, prefix: str, **mllp: Any) -> tuple[Bus, Any]:
    catalog = apply_catalog(bootstrap, prefix)
    producer = kafka_clients.AsyncProducer(kafka_clients.producer_config(KafkaConfig(), bootstrap))
    cfg = MllpConfig(port=0, feed="unit", metrics_port=None, **mllp)
    listener = MllpListener(
        cfg, producer, Route(catalog.name(topics.RAW), catalog.name(topics.DLQ))
    )
    await listener.start()
    return Bus(listener, catalog, bootstrap), producer


def run(
    bootstrap: str, prefix: str, body: Callable[[Bus], Coroutine[Any, Any, Any]], **mllp: Any
) -> Any:
    async def main() -> Any:
        bus, producer = await start_bus(bootstrap, prefix, **mllp)
        try:
            return await body(bus)
        finally:
            await bus.listener.stop()
            producer.close()

    return asyncio.run(main())


def test_aa_only_for_stored_messages(kafka_bootstrap: str, unique_name: str) -> None:
    adt, oru = first("ADT^A01"), first("ORU^R01")

    async def body(bus: Bus) -> Any:
        return await send_messages(
            "127.0.0.1", bus.listener.port, [adt.to_bytes(), oru.to_bytes()], window=2
        )

    results = run(kafka_bootstrap, unique_name, body)
    assert [r.code for r in results] == ["AA", "AA"]
    assert all(r.accepted for r in results)

    records = read_topic(kafka_bootstrap, f"{unique_name}.hl7.raw", expected=2)
    assert len(records) == 2
    by_id = {}
    for record in records:
        event_type, env = codec.decode(record.value() or b"")
        assert event_type == "RawMessage"
        by_id[env["control_id"]] = (record, env)
    record, env = by_id[adt.control_id]
    assert env["raw"] == adt.to_bytes()
    assert env["feed"] == "unit"
    assert env["message_type"] == "ADT^A01"
    assert env["charset"] == "utf-8"
    assert env["peer"].startswith("127.0.0.1:")
    assert record.key() == f"unit|SNUH|{adt.get('PID-3.1')}".encode()
    # Both messages of the same patient? They share a key and so a partition.
    if adt.get("PID-3.1") == oru.get("PID-3.1"):
        assert by_id[oru.control_id][0].partition() == record.partition()


def test_enhanced_mode_gets_ca(kafka_bootstrap: str, unique_name: str) -> None:
    message = first("ADT^A04")
    message.set("MSH-15", "AL")
    message.set("MSH-16", "NE")

    async def body(bus: Bus) -> Any:
        return await send_messages("127.0.0.1", bus.listener.port, [message.to_bytes()])

    [result] = run(kafka_bootstrap, unique_name, body)
    assert result.code == "CA"


def test_undecodable_bytes_get_ae_and_a_dlq_record(kafka_bootstrap: str, unique_name: str) -> None:
    good = first("ADT^A01").to_bytes()
    # Claims UTF-8 but carries an invalid byte: no silent replacement, the bytes go to the DLQ.
    family = (first("ADT^A01").get("PID-5.1") or "").encode()
    bad = good.replace(family, b"\xff" + family, 1)
    garbage = b"\x00\x01 this is not HL7 at all"

    async def body(bus: Bus) -> Any:
        return await send_messages("127.0.0.1", bus.listener.port, [bad, garbage, good])

    results = run(kafka_bootstrap, unique_name, body)
    # Without a readable MSH nothing can be echoed; the minimal ACK still says AE: stored in
    # the DLQ, do not resend these bytes.
    assert [r.code for r in results] == ["AE", "AE", "AA"]
    bad_ack = parse(results[0].ack or b"")
    assert bad_ack.get("MSA-2") == first("ADT^A01").control_id
    assert bad_ack.get("ERR-3.1") == "102"
    assert "offset" in (bad_ack.get("MSA-3") or "")

    dlq = read_topic(kafka_bootstrap, f"{unique_name}.hl7.dlq", expected=2)
    assert len(dlq) == 2
    headers: list[dict[str, object]] = [dict(r.headers() or []) for r in dlq]
    assert sorted(str(h["hl7bus.reason"]) for h in headers) == ["b'charset'", "b'parse'"]
    assert all(h["hl7bus.stage"] == b"receiving" for h in headers)
    stored = sorted(codec.decode(r.value() or b"")[1]["raw"] for r in dlq)
    assert stored == sorted([bad, garbage])  # kept byte for byte
    raw = read_topic(kafka_bootstrap, f"{unique_name}.hl7.raw", expected=1)
    assert len(raw) == 1


def _dlq_headers(record: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {k: bytes(v or b"") for k, v in record.headers() or []}
    return out


@pytest.mark.parametrize("enhanced", [False, True])
def test_oversize_message_gets_ae_and_its_head_in_the_dlq(
    kafka_bootstrap: str, unique_name: str, enhanced: bool
) -> None:
    """AE/CE, not AR: the same bytes would be refused again, so the sender must not resend them
    forever; the head (MSH included) is kept in hl7.dlq with the size, and the stream goes on."""
    small = first("ADT^A01").to_bytes()
    oru = first("ORU^R01")
    if enhanced:
        oru.set("MSH-15", "AL")
    big = oru.to_bytes() + b"NTE|1||" + b"x" * 6000 + b"\r"

    async def body(bus: Bus) -> Any:
        return await send_messages("127.0.0.1", bus.listener.port, [big, small, big])

    results = run(kafka_bootstrap, unique_name, body, max_frame_bytes=4096)
    nak_code = "CE" if enhanced else "AE"
    assert [r.code for r in results] == [nak_code, "AA", nak_code]
    nak = parse(results[0].ack or b"")
    assert nak.get("MSA-2") == oru.control_id
    assert nak.get("ERR-3.1") == "104"
    assert f"{len(big)} bytes" in (nak.get("MSA-3") or "")

    dlq = read_topic(kafka_bootstrap, f"{unique_name}.hl7.dlq", expected=2)
    assert len(dlq) == 2
    for record in dlq:
        headers = _dlq_headers(record)
        assert headers["hl7bus.stage"] == b"receiving"
        assert headers["hl7bus.reason"] == b"oversize"
        assert headers["hl7bus.size_bytes"] == str(len(big)).encode()
        # No values of the message in the headers, only names, codes and sizes
        # (docs/architecture.md, Privacy).
        control_id = (oru.control_id or "").encode()
        for value in headers.values():
            assert control_id not in value
            assert b"xxxx" not in value
        assert record.key() == b"unit"
        _, env = codec.decode(record.value() or b"")
        assert env["raw"] == big[:4096]  # the head the framer kept, byte for byte
        assert env["control_id"] == oru.control_id
        assert env["message_type"] == "ORU^R01"
        assert env["feed"] == "unit"
    raw = read_topic(kafka_bootstrap, f"{unique_name}.hl7.raw", expected=1)
    assert len(raw) == 1


def test_oversize_gets_ar_when_the_dlq_write_fails(kafka_bootstrap: str, unique_name: str) -> None:
    """Nothing stored, so the sender must resend: AR."""
    catalog = apply_catalog(kafka_bootstrap, unique_name)
    producer = kafka_clients.AsyncProducer(
        kafka_clients.producer_config(KafkaConfig(delivery_timeout_ms=3000), kafka_bootstrap)
    )
    oru = first("ORU^R01")
    big = oru.to_bytes() + b"NTE|1||" + b"x" * 6000 + b"\r"
    small = first("ADT^A01").to_bytes()
    # A DLQ topic that does not exist (the broker does not auto-create topics).
    route = Route(catalog.name(topics.RAW), f"{unique_name}.no-such-dlq")

    async def main() -> Any:
        cfg = MllpConfig(port=0, feed="unit", metrics_port=None, max_frame_bytes=4096)
        listener = MllpListener(cfg, producer, route)
        await listener.start()
        before = DLQ_FAILURES.labels("unit", "oversize")._value.get()
        try:
            results = await send_messages(
                "127.0.0.1", listener.port, [small, big, small], ack_timeout=30
            )
        finally:
            await listener.stop()
        return results, DLQ_FAILURES.labels("unit", "oversize")._value.get() - before

    try:
        results, failures = asyncio.run(main())
    finally:
        producer.close()
    assert [r.code for r in results] == ["AA", "AR", "AA"]
    assert parse(results[1].ack or b"").get("MSA-2") == oru.control_id
    assert failures == 1


def test_truncated_frames_go_to_the_dlq_without_an_ack(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """A frame cut by a new start block (reason start_block), and one cut by the end of the
    connection (reason truncated): all their bytes go to hl7.dlq, with the cause in the detail
    header; no ACK for them, so the ACK of the next message is the next ACK the sender reads."""
    adt = first("ADT^A01").to_bytes()
    oru = first("ORU^R01").to_bytes()
    abandoned = oru[: len(oru) // 2]
    unfinished = adt[:100]

    async def body(bus: Bus) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", bus.listener.port)
        writer.write(b"\x0b" + abandoned + encode_frame(oru))
        await writer.drain()
        first_ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 20)
        writer.write(b"\x0b" + unfinished)
        writer.write_eof()  # the sender stops inside a frame
        rest = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        return first_ack, rest

    first_ack, rest = run(kafka_bootstrap, unique_name, body)
    ack = parse(first_ack.strip(b"\x0b\x1c\x0d"))
    assert (ack.get("MSA-1"), ack.get("MSA-2")) == ("AA", first("ORU^R01").control_id)
    assert rest == b""  # nothing for the unfinished frame; the listener closed cleanly

    dlq = read_topic(kafka_bootstrap, f"{unique_name}.hl7.dlq", expected=2)
    assert len(dlq) == 2
    by_raw = {codec.decode(r.value() or b"")[1]["raw"]: _dlq_headers(r) for r in dlq}
    assert set(by_raw) == {abandoned, unfinished}  # kept whole
    assert by_raw[abandoned]["hl7bus.reason"] == b"start_block"
    assert (
        by_raw[abandoned]["hl7bus.detail"]
        == (
            f"frame cut by a new start block after {len(abandoned)} bytes, before its end block"
        ).encode()
    )
    assert by_raw[unfinished]["hl7bus.reason"] == b"truncated"
    assert b"end of stream" in by_raw[unfinished]["hl7bus.detail"]
    for raw, headers in by_raw.items():
        assert headers["hl7bus.stage"] == b"receiving"
        assert headers["hl7bus.size_bytes"] == str(len(raw)).encode()
    assert len(read_topic(kafka_bootstrap, f"{unique_name}.hl7.raw", expected=1)) == 1


def test_python_hl7_mllp_send_interoperates(
    kafka_bootstrap: str, unique_name: str, tmp_path: Any
) -> None:
    """python-hl7's `mllp_send`, a client nobody here wrote, gets an AA for each message."""
    executable = str(Path(sys.executable).parent / "mllp_send")
    messages = [first("ADT^A01"), first("ORU^R01"), first("ADT^A08")]
    path = tmp_path / "batch.hl7"
    # --loose: messages separated by newlines, each starting with MSH|^~\&|
    path.write_bytes(b"\n".join(m.to_bytes() for m in messages))

    async def body(bus: Bus) -> Any:
        proc = await asyncio.create_subprocess_exec(
            executable,
            "--port",
            str(bus.listener.port),
            "--file",
            str(path),
            "--loose",
            "127.0.0.1",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out, err

    code, out, err = run(kafka_bootstrap, unique_name, body)
    assert code == 0, err
    # mllp_send prints each ACK as received, MLLP blocks included.
    frames = [chunk.split(b"\x1c")[0] for chunk in out.split(b"\x0b")[1:]]
    acks = [parse(frame) for frame in frames]
    assert [a.get("MSA-1") for a in acks] == ["AA"] * 3, out
    assert [a.get("MSA-2") for a in acks] == [m.control_id for m in messages]
