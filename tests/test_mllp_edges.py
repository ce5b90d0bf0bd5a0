"""The listener's edges (issue 15): the MSH checked at the door, charset leniency, /readyz
whatever the broker does, connection limits, batches in one frame. Pure checks first, then the
listener on real sockets and the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kafka_helpers import read_topic, record_headers
from polling import wait_until_async
from prometheus_client import REGISTRY
from samples import first
from test_mllp_service import numbered, serving

from hl7bus.connectors.envelope import build_envelope, missing_header_fields
from hl7bus.connectors.mllp.client import send_messages
from hl7bus.connectors.mllp.framer import encode_frame
from hl7bus.connectors.mllp.readiness import KafkaWatch
from hl7bus.hl7v2 import build_batch_ack, parse, parse_batch
from hl7bus.ops.local_kafka import temporary_broker
from hl7bus.schemas import codec, topics

# The frames of the chaos run: an MSH cut short, no MSH-9, MSH-10 or MSH-12.
CUT_SHORT = b"MSH|^~\\&|APP|FAC\rPID|1||123\r"
NO_VERSION = b"MSH|^~\\&|APP|FAC|||20261204||ADT^A01|NOVER1|P\rPID|1||123\r"
# Declares ASCII, carries UTF-8 (a Korean family name), as public samples do.
ASCII_BUT_UTF8 = (
    "MSH|^~\\&|APP|FAC|||20261204||ADT^A01|UTF1|P|2.5|||||KOR|ASCII\rPID|1||123^^^SNUH||홍^길동\r"
).encode()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- pure: the envelope -------------------------------------------------------------------------


def test_missing_header_fields_names_each_required_field() -> None:
    assert missing_header_fields(parse(CUT_SHORT)) == [9, 10, 12]
    assert missing_header_fields(parse(NO_VERSION)) == [12]
    null_type = b'MSH|^~\\&|A|B|||1||""|ID1|P|2.5\r'
    assert missing_header_fields(parse(null_type)) == [9]  # the HL7 null is no value
    assert missing_header_fields(first("ADT^A01")) == []


def test_envelope_refuses_a_cut_short_msh_only_when_asked() -> None:
    built = build_envelope(CUT_SHORT, feed="f", peer="p", require_header=True)
    assert built.message is None and built.reason == "header"
    assert built.error is not None and built.error.field == 9
    assert built.error.reason == (
        "required field missing: MSH-9 (message type), MSH-10 (message control id), "
        "MSH-12 (version id)"
    )
    assert "patient_key" not in built.record  # never on hl7.raw, so no key either
    # The file source does not ask: its behaviour is unchanged.
    assert build_envelope(CUT_SHORT, feed="f", peer="p").message is not None


def test_lenient_utf8_reads_a_mislabelled_message_as_utf8() -> None:
    strict = build_envelope(ASCII_BUT_UTF8, feed="f", peer="p")
    assert strict.reason == "charset"
    lenient = build_envelope(ASCII_BUT_UTF8, feed="f", peer="p", lenient_utf8=True)
    assert lenient.message is not None and lenient.lenient
    assert lenient.record["charset"] == "utf-8"
    assert lenient.message.get("PID-5.1") == "홍"
    # The configured fallback comes first: it decodes, so leniency is not needed.
    latin = build_envelope(ASCII_BUT_UTF8, feed="f", peer="p", fallback="8859/1", lenient_utf8=True)
    assert latin.record["charset"] == "iso8859-1" and not latin.lenient
    # An override is the operator's word: no leniency behind it.
    forced = build_envelope(ASCII_BUT_UTF8, feed="f", peer="p", charset="ASCII", lenient_utf8=True)
    assert forced.reason == "charset"
    # Bytes that are not UTF-8 either stay refused.
    bad = ASCII_BUT_UTF8.replace("홍".encode(), b"\xff\xfe")
    assert build_envelope(bad, feed="f", peer="p", lenient_utf8=True).reason == "charset"


# -- the listener, on the real broker ------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("answer", ["error", "reject"])
def test_msh_without_required_fields_is_refused_at_the_door(
    kafka_bootstrap: str, unique_name: str, answer: str
) -> None:
    """The chaos run's cut-short MSH got AA and failed later in the worker; now it gets AE (or
    AR by feed config) with ERR-3 101 at the first missing field, and its bytes are in hl7.dlq
    (reason header), while the good message beside it is accepted."""
    good = first("ADT^A01").to_bytes()
    feed = f"hdr-{answer}"
    mllp = {"feed": feed, "header_error_ack": answer}

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            results = await send_messages(
                "127.0.0.1", bus.port(), [CUT_SHORT, NO_VERSION, good], window=3
            )
            return bus, results

    bus, results = asyncio.run(main())
    code = "AE" if answer == "error" else "AR"
    assert [r.code for r in results] == [code, code, "AA"]
    cut, nover = (parse(r.ack or b"") for r in results[:2])
    assert (cut.get("ERR-2"), cut.get("ERR-3.1")) == ("MSH^1^9", "101")
    assert "MSH-10 (message control id)" in (cut.get("MSA-3") or "")
    assert (nover.get("ERR-2"), nover.get("ERR-3.1")) == ("MSH^1^12", "101")
    assert nover.get("MSA-2") == "NOVER1"  # what it had is echoed

    dlq = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=2)
    stored = {codec.decode(r.value() or b"")[1]["raw"]: record_headers(r) for r in dlq}
    assert set(stored) == {CUT_SHORT, NO_VERSION}  # byte for byte
    for headers in stored.values():
        assert headers["hl7bus.reason"] == b"header"
        assert headers["hl7bus.stage"] == b"receiving"
        assert b"123" not in headers["hl7bus.detail"]  # names fields, never values
    raw = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=1)
    assert [codec.decode(r.value() or b"")[1]["raw"] for r in raw] == [good]
    assert _sample("hl7bus_mllp_dlq_total", feed=feed, reason="header") == 2


@pytest.mark.kafka
@pytest.mark.parametrize("lenient", [True, False])
def test_ascii_declared_utf8_message_is_accepted_and_counted(
    kafka_bootstrap: str, unique_name: str, lenient: bool
) -> None:
    """By default a message whose MSH-18 says ASCII but whose bytes are UTF-8 is accepted as
    UTF-8 and counted per feed; a feed with lenient_utf8 false refuses it (AE, hl7.dlq)."""
    feed = f"cs-{str(lenient).lower()}"
    mllp = {"feed": feed, "lenient_utf8": lenient}

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            before = _sample("hl7bus_mllp_charset_mismatch_total", feed=feed)
            results = await send_messages("127.0.0.1", bus.port(), [ASCII_BUT_UTF8])
            after = _sample("hl7bus_mllp_charset_mismatch_total", feed=feed)
            return bus, results, after - before

    bus, results, counted = asyncio.run(main())
    if lenient:
        assert [r.code for r in results] == ["AA"]
        assert counted == 1
        [record] = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=1)
        env = codec.decode(record.value() or b"")[1]
        assert (env["charset"], env["raw"], env["control_id"]) == ("utf-8", ASCII_BUT_UTF8, "UTF1")
    else:
        assert [r.code for r in results] == ["AE"]
        assert counted == 0
        [record] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
        assert record_headers(record)["hl7bus.reason"] == b"charset"


# -- /readyz whatever the broker does -----------------------------------------------------------


def test_kafka_watch_keeps_the_last_verdict_and_says_why() -> None:
    answers = [True]  # what the cluster says now
    asked: set[float] = set()

    def probe(timeout: float) -> bool:
        asked.add(timeout)
        return answers[0]

    async def main() -> list[str | None]:
        watch = KafkaWatch(probe, interval_s=0.01, timeout_s=2.0)
        seen = [watch.reason]
        await watch.start()
        seen.append(watch.reason)
        answers[0] = False
        await wait_until_async(lambda: watch.reason is not None, "a failed probe")
        seen.append(watch.reason)
        answers[0] = True
        await wait_until_async(lambda: watch.reason is None, "a probe that answers again")
        await watch.stop()
        return seen

    before, up, down = asyncio.run(main())
    assert before == "Kafka not checked yet"
    assert up is None
    assert down is not None and down.startswith(
        "Kafka did not answer a metadata request within 2 s"
    )
    assert asked == {2.0}


async def _readyz(port: int) -> tuple[int, str]:
    # The bound under test: the chaos run's probe gave up after 2 s and got nothing for a minute.
    timeout = aiohttp.ClientTimeout(total=1.5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, (await response.text()).strip()


@pytest.mark.kafka
@pytest.mark.slow
def test_readyz_answers_at_once_while_the_broker_is_hung_or_dead(
    tmp_path: Path, unique_name: str
) -> None:
    """A broker of the test's own: frozen (SIGSTOP: connections open, nothing answers), thawed,
    then killed. Every /readyz answers within the bound: 503 with the reason while the broker
    is away, 200 again once it answers."""
    with temporary_broker(tmp_path / "kafka", name="readyz") as broker:

        async def main() -> list[tuple[int, str]]:
            seen: list[tuple[int, str]] = []

            async def until(port: int, status: int, what: str) -> None:
                async def check() -> bool:
                    seen.append(await _readyz(port))
                    return seen[-1][0] == status

                deadline = 60.0
                while not await check():
                    deadline -= 0.2
                    assert deadline > 0, f"/readyz never said {what}: {seen[-3:]}"
                    await asyncio.sleep(0.2)

            async with serving(broker.bootstrap, unique_name, {"metrics_port": 0}) as bus:
                port = bus.service.http_port
                assert port
                await until(port, 200, "ready")
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await until(port, 503, "not ready with the broker frozen")
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                await until(port, 200, "ready after the broker thawed")
                os.kill(broker.pid, signal.SIGKILL)
                await until(port, 503, "not ready with the broker dead")
                for _ in range(5):  # and it keeps answering at once
                    seen.append(await _readyz(port))
            return seen

        seen = asyncio.run(main())
    assert seen[-1][0] == 503
    assert seen[-1][1].startswith("not ready: Kafka did not answer a metadata request")
    assert {status for status, _ in seen} == {200, 503}


# -- connection limits ---------------------------------------------------------------------------


async def _closed_by_listener(reader: asyncio.StreamReader) -> bool:
    """True once the listener has closed (or reset) this connection."""
    try:
        return await asyncio.wait_for(reader.read(), 30) == b""
    except ConnectionError:
        return True


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes) -> str:
    writer.write(encode_frame(message))
    await writer.drain()
    ack = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
    return parse(ack.strip(b"\x0b\x1c\x0d")).get("MSA-1") or ""


def _cut(feed: str) -> float:
    return _sample("hl7bus_mllp_closed_connections_total", feed=feed, reason="frame_timeout")


@pytest.mark.kafka
def test_a_slowloris_frame_is_cut_at_its_deadline(kafka_bootstrap: str, unique_name: str) -> None:
    """A sender trickling a frame byte by byte (never idle) is closed once the frame is overdue,
    counted and its bytes kept in hl7.dlq; a normal sender beside it is served."""
    adt = first("ADT^A01").to_bytes()
    mllp = {"feed": "slow", "frame_timeout_s": 0.5}

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            before = _sample(
                "hl7bus_mllp_closed_connections_total", feed="slow", reason="frame_timeout"
            )
            reader, writer = await asyncio.open_connection("127.0.0.1", bus.port())
            writer.write(b"\x0b" + adt[:20])
            sent = adt[:20]

            async def trickle() -> None:
                for byte in adt[20:]:
                    await asyncio.sleep(0.05)
                    try:
                        writer.write(bytes([byte]))
                        await writer.drain()
                    except ConnectionError:
                        return
                    nonlocal sent
                    sent += bytes([byte])

            trickling = asyncio.create_task(trickle())
            normal = await send_messages("127.0.0.1", bus.port(), numbered(3, "SLOW"))
            closed = await _closed_by_listener(reader)
            trickling.cancel()
            writer.close()
            after = _sample(
                "hl7bus_mllp_closed_connections_total", feed="slow", reason="frame_timeout"
            )
            return bus, normal, closed, after - before, sent

    bus, normal, closed, counted, sent = asyncio.run(main())
    assert [r.code for r in normal] == ["AA"] * 3
    assert closed and counted == 1
    assert len(sent) < len(adt)  # cut before the frame could end
    [record] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
    assert record_headers(record)["hl7bus.reason"] == b"truncated"
    kept = codec.decode(record.value() or b"")[1]["raw"]
    assert kept.startswith(adt[:20]) and sent.startswith(kept)


@pytest.mark.kafka
def test_a_frame_half_received_at_shutdown_is_kept_as_truncated(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """The listener stops while a sender is inside a frame: the connection is closed, counted
    (reason shutdown), and the bytes received so far are in hl7.dlq as truncated rather than
    dropped."""
    adt = first("ADT^A01").to_bytes()

    def shut(feed: str) -> float:
        return _sample("hl7bus_mllp_closed_connections_total", feed=feed, reason="shutdown")

    async def main() -> Any:
        before = shut("halt")
        async with serving(kafka_bootstrap, unique_name, {"feed": "halt"}) as bus:
            reader, writer = await asyncio.open_connection("127.0.0.1", bus.port())
            writer.write(b"\x0b" + adt[:40])
            await writer.drain()
            listener = bus.service.listener("halt")
            await wait_until_async(lambda: listener.read_bytes >= 41, "the listener to read")
        closed = await _closed_by_listener(reader)  # the service has stopped
        writer.close()
        return bus, closed, shut("halt") - before

    bus, closed, counted = asyncio.run(main())
    assert closed and counted == 1
    [record] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
    assert record_headers(record)["hl7bus.reason"] == b"truncated"
    assert codec.decode(record.value() or b"")[1]["raw"] == adt[:40]


@pytest.mark.kafka
def test_connections_are_capped_per_feed_and_in_total(
    kafka_bootstrap: str, unique_name: str
) -> None:
    """max_connections per feed and max_connections_total for the process: one more connection
    is closed at once and counted by reason; open ones are served; a freed slot is reusable."""
    message = first("ADT^A01").to_bytes()
    mllp = {
        "max_connections_total": 3,
        "feeds": [
            {"feed": "cap-a", "port": 0, "max_connections": 2},
            {"feed": "cap-b", "port": 0},
        ],
    }

    def refused(feed: str, reason: str) -> float:
        return _sample("hl7bus_mllp_refused_connections_total", feed=feed, reason=reason)

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, mllp) as bus:
            a, b = bus.port("cap-a"), bus.port("cap-b")
            before = refused("cap-a", "max_connections"), refused("cap-b", "max_connections_total")
            a1 = await asyncio.open_connection("127.0.0.1", a)
            a2 = await asyncio.open_connection("127.0.0.1", a)
            codes = [await _ask(*a1, message), await _ask(*a2, message)]
            a3 = await asyncio.open_connection("127.0.0.1", a)
            a3_closed = await _closed_by_listener(a3[0])  # the feed's third
            b1 = await asyncio.open_connection("127.0.0.1", b)
            codes.append(await _ask(*b1, message))
            b2 = await asyncio.open_connection("127.0.0.1", b)
            b2_closed = await _closed_by_listener(b2[0])  # the process's fourth
            codes.append(await _ask(*a1, message))  # the open ones are still served
            a2[1].close()
            listener = bus.service.listener("cap-a")
            await wait_until_async(lambda: listener._open == 1, "cap-a to see the close")
            a4 = await asyncio.open_connection("127.0.0.1", a)
            codes.append(await _ask(*a4, message))  # the freed slot serves a new connection
            for _, w in (a1, a3, b1, b2, a4):
                w.close()
            after = refused("cap-a", "max_connections"), refused("cap-b", "max_connections_total")
            return codes, a3_closed, b2_closed, (after[0] - before[0], after[1] - before[1])

    codes, a3_closed, b2_closed, counted = asyncio.run(main())
    assert codes == ["AA"] * 5
    assert a3_closed and b2_closed
    assert counted == (1, 1)


# -- batches in one frame, a stray start block ---------------------------------------------------

_MSG = "MSH|^~\\&|SND|SF|RCV|RF|20261204||ADT^A01|{id}|P|{version}\rPID|1||{id}^^^SNUH\r"


def _batch(*ids: str, bts: int | None = None) -> bytes:
    messages = "".join(
        _MSG.format(id=i, version="" if i.startswith("NOVER") else "2.5") for i in ids
    )
    count = len(ids) if bts is None else bts
    return (
        "FHS|^~\\&|SND|SF|RCV|RF|20261204||||FILE7\r"
        "BHS|^~\\&|SND|SF|RCV|RF|20261204||||BATCH7\r"
        f"{messages}BTS|{count}\rFTS|1\r"
    ).encode()


def test_batch_ack_is_a_response_batch_our_splitter_reads_back() -> None:
    acks = [b"MSH|^~\\&|RCV|RF|SND|SF|1||ACK|A1|P|2.5\rMSA|AA|B1\r"]
    response = build_batch_ack(_batch("B1"), acks, control_id="OURS1")
    lines = response.split(b"\r")
    assert lines[0].split(b"|")[2:6] == [b"RCV", b"RF", b"SND", b"SF"]  # sender and receiver swap
    assert lines[1].split(b"|")[10:12] == [b"OURS1", b"BATCH7"]  # BHS-12 echoes BHS-11
    assert lines[-3:] == [b"BTS|1", b"FTS|1", b""]
    assert [m.get("MSA-2") for m in parse_batch(response)] == ["B1"]


async def _frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    return [
        (await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)).strip(b"\x0b\x1c\x0d")
        for _ in range(count)
    ]


@pytest.mark.kafka
@pytest.mark.parametrize("mode", ["batch", "each"])
def test_a_batch_in_one_frame_is_split_stored_and_acknowledged(
    kafka_bootstrap: str, unique_name: str, mode: str
) -> None:
    """FHS/BHS ... BTS/FTS in one frame: each message durably in hl7.raw on its own (a bad one in
    hl7.dlq), then one response batch (batch) or one ACK frame per message (each), and the next
    frame's ACK after them."""
    batch = _batch("B1", "NOVER2", "B3")
    after = first("ADT^A01")

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"feed": "bat", "batch_ack": mode}) as bus:
            reader, writer = await asyncio.open_connection("127.0.0.1", bus.port())
            writer.write(encode_frame(batch) + encode_frame(after.to_bytes()))
            await writer.drain()
            frames = await _frames(reader, 2 if mode == "batch" else 4)
            writer.close()
            return bus, frames

    bus, frames = asyncio.run(main())
    acks = parse_batch(frames[0]) if mode == "batch" else [parse(f) for f in frames[:3]]
    assert [(a.get("MSA-1"), a.get("MSA-2")) for a in acks] == [
        ("AA", "B1"),
        ("AE", "NOVER2"),
        ("AA", "B3"),
    ]
    if mode == "batch":
        # (_frames strips the blocks, and with them the last segment's CR)
        assert frames[0].startswith(b"FHS|") and frames[0].endswith(b"\rBTS|3\rFTS|1")
    assert parse(frames[-1]).get("MSA-2") == after.control_id  # order kept after the batch
    raw = read_topic(kafka_bootstrap, bus.topic(topics.RAW), expected=3)
    stored = {codec.decode(r.value() or b"")[1]["control_id"]: r for r in raw}
    assert set(stored) == {"B1", "B3", after.control_id}
    b1 = codec.decode(stored["B1"].value() or b"")[1]
    assert b1["raw"] == _MSG.format(id="B1", version="2.5").encode()  # the message's own bytes
    assert stored["B1"].key() == b"bat|SNUH|B1"
    [dlq] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
    assert record_headers(dlq)["hl7bus.reason"] == b"header"


@pytest.mark.kafka
def test_a_batch_whose_counts_do_not_add_up_is_kept_whole(
    kafka_bootstrap: str, unique_name: str
) -> None:
    batch = _batch("C1", "C2", bts=5)

    async def main() -> Any:
        async with serving(kafka_bootstrap, unique_name, {"feed": "badbat"}) as bus:
            [result] = await send_messages("127.0.0.1", bus.port(), [batch])
            return bus, result

    bus, result = asyncio.run(main())
    ack = parse(result.ack or b"")
    assert (ack.get("MSA-1"), ack.get("MSA-2"), ack.get("ERR-3.1")) == ("AE", "C1", "100")
    assert "BTS-1 says 5 messages, batch has 2" in (ack.get("MSA-3") or "")
    [dlq] = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), expected=1)
    assert record_headers(dlq)["hl7bus.reason"] == b"batch"
    assert codec.decode(dlq.value() or b"")[1]["raw"] == batch
