"""The listener's edges (issue 15): the MSH checked at the door, charset leniency, /readyz
whatever the broker does. Pure checks first, then the listener on real sockets and the real
broker."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kafka_helpers import read_topic
from polling import wait_until_async
from prometheus_client import REGISTRY
from samples import first
from test_mllp_service import serving

from hl7bus.connectors.envelope import build_envelope, missing_header_fields
from hl7bus.connectors.mllp.client import send_messages
from hl7bus.connectors.mllp.readiness import KafkaWatch
from hl7bus.hl7v2 import parse
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


def _headers(record: Any) -> dict[str, bytes]:
    return {k: bytes(v or b"") for k, v in record.headers() or []}


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
    stored = {codec.decode(r.value() or b"")[1]["raw"]: _headers(r) for r in dlq}
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
        assert _headers(record)["hl7bus.reason"] == b"charset"


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

            async def until(status: int, what: str) -> None:
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
                await until(200, "ready")
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await until(503, "not ready with the broker frozen")
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                await until(200, "ready after the broker thawed")
                os.kill(broker.pid, signal.SIGKILL)
                await until(503, "not ready with the broker dead")
                for _ in range(5):  # and it keeps answering at once
                    seen.append(await _readyz(port))
            return seen

        seen = asyncio.run(main())
    assert seen[-1][0] == 503
    assert seen[-1][1].startswith("not ready: Kafka did not answer a metadata request")
    assert {status for status, _ in seen} == {200, 503}
