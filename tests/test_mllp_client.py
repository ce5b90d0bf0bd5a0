"""The MLLP sender against small loopback servers, including python-hl7 in both directions."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import hl7.client
import hl7.mllp
import pytest

from hl7bus.connectors.mllp.client import (
    AckResult,
    send_many,
    send_messages,
    summarize,
)
from hl7bus.connectors.mllp.framer import Frame, Framer, encode_frame
from hl7bus.hl7v2 import build_ack

pytestmark = pytest.mark.timeout(30)


def message(i: int) -> bytes:
    return (
        f"MSH|^~\\&|SND|FAC|RCV|FAC|20240101120000||ADT^A01|MSG{i:05d}|P|2.5\r"
        f"EVN|A01|20240101120000\r"
        f"PID|1||{i}^^^H1^MR||DOE^JOHN\r"
    ).encode()


def control_id(i: int) -> str:
    return f"MSG{i:05d}"


@dataclass
class AckServer:
    """An MLLP server built on our framer; ``reply`` decides what (if anything) to answer.

    ``batch`` > 1 holds ACKs until that many frames are waiting, which deadlocks (and so times
    out) unless the client really pipelines.
    """

    reply: Callable[[bytes], bytes | None]
    batch: int = 1
    close_after: int | None = None
    port: int = 0
    tls: ssl.SSLContext | None = None
    received: list[list[bytes]] = field(default_factory=list)
    max_waiting: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = Framer()
        mine: list[bytes] = []
        self.received.append(mine)
        waiting: list[bytes] = []
        try:
            while data := await reader.read(65536):
                for event in framer.feed(data):
                    assert isinstance(event, Frame), event
                    mine.append(event.payload)
                    if self.close_after is not None and len(mine) > self.close_after:
                        return
                    waiting.append(event.payload)
                    self.max_waiting = max(self.max_waiting, len(waiting))
                    if len(waiting) >= self.batch:
                        for payload in waiting:
                            ack = self.reply(payload)
                            if ack is not None:
                                writer.write(encode_frame(ack))
                        waiting.clear()
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> AckServer:
        self._server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


def ack_aa(payload: bytes) -> bytes:
    return build_ack(payload, "AA")


# -- pipelining and ACK checking ----------------------------------------------------------------


def test_pipelined_window_returns_all_acks_in_order() -> None:
    async def main() -> None:
        async with AckServer(ack_aa, batch=10) as server:
            seen: list[AckResult] = []
            results = await send_messages(
                "127.0.0.1",
                server.port,
                (message(i) for i in range(50)),
                window=10,
                ack_timeout=5,
                on_ack=seen.append,
            )
        assert [r.index for r in results] == list(range(50))
        assert [r.control_id for r in results] == [control_id(i) for i in range(50)]
        assert all(r.accepted and r.code == "AA" and r.error is None for r in results)
        assert all(r.ack is not None and control_id(r.index).encode() in r.ack for r in results)
        assert server.max_waiting == 10
        assert sorted(r.index for r in seen) == list(range(50))
        assert server.received == [[message(i) for i in range(50)]]

    asyncio.run(main())


def test_window_one_waits_for_each_ack() -> None:
    async def main() -> None:
        async with AckServer(ack_aa) as server:
            results = await send_messages(
                "127.0.0.1", server.port, [message(i) for i in range(5)], ack_timeout=5
            )
        assert server.max_waiting == 1
        assert summarize(results).ok

    asyncio.run(main())


def test_wrong_msa2_is_flagged() -> None:
    def wrong(payload: bytes) -> bytes:
        return build_ack(payload.replace(b"|MSG", b"|XXX", 1), "AA")

    async def main() -> None:
        async with AckServer(wrong) as server:
            results = await send_messages(
                "127.0.0.1", server.port, [message(1), message(2)], window=2, ack_timeout=5
            )
        for r in results:
            assert r.code == "AA"
            assert r.error is not None and r.error.startswith("ack mismatch")
            assert not r.accepted
        assert summarize(results).errors == {"ack mismatch": 2}

    asyncio.run(main())


def test_negative_ack_is_a_code_not_an_error() -> None:
    async def main() -> None:
        async with AckServer(lambda p: build_ack(p, "AE")) as server:
            (result,) = await send_messages("127.0.0.1", server.port, [message(7)])
        assert (result.code, result.error, result.accepted) == ("AE", None, False)

    asyncio.run(main())


def test_silent_server_times_out_and_reports_the_rest() -> None:
    async def main() -> None:
        async with AckServer(lambda p: None) as server:
            results = await send_messages(
                "127.0.0.1",
                server.port,
                [message(i) for i in range(5)],
                window=3,
                ack_timeout=0.3,
            )
        assert [r.error for r in results] == [
            "timeout",
            "connection closed",
            "connection closed",
            "not sent",
            "not sent",
        ]
        assert results[0].latency_s >= 0.29
        assert len(server.received[0]) == 3

    asyncio.run(main())


def test_server_closing_mid_stream() -> None:
    async def main() -> None:
        async with AckServer(ack_aa, close_after=2) as server:
            results = await send_messages(
                "127.0.0.1", server.port, [message(i) for i in range(5)], ack_timeout=5
            )
        assert [r.error for r in results] == [
            None,
            None,
            "connection closed",
            "not sent",
            "not sent",
        ]

    asyncio.run(main())


def test_connection_refused_is_reported_per_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there

    async def main() -> None:
        seen: list[AckResult] = []
        results = await send_messages(
            "127.0.0.1", port, [message(i) for i in range(3)], on_ack=seen.append
        )
        assert len(seen) == 3
        assert [r.index for r in results] == [0, 1, 2]
        for r in results:
            assert r.error is not None and r.error.startswith("connection refused")
        assert summarize(results).errors == {"connection refused": 3}

    asyncio.run(main())


def test_unframeable_message_is_skipped_not_fatal() -> None:
    async def main() -> None:
        async with AckServer(ack_aa) as server:
            results = await send_messages(
                "127.0.0.1", server.port, [message(0), b"MSH|\x0b|bad", message(2)]
            )
        assert [r.error is None for r in results] == [True, False, True]
        assert results[1].error is not None and results[1].error.startswith("unframeable")

    asyncio.run(main())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        asyncio.run(send_messages("127.0.0.1", 1, [], window=0))
    with pytest.raises(ValueError):
        asyncio.run(send_many("127.0.0.1", 1, [], connections=0))


def test_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async with AckServer(ack_aa, tls=server_ctx) as server:
            results = await send_messages(
                "127.0.0.1", server.port, [message(i) for i in range(3)], window=3, ssl=client_ctx
            )
            assert all(r.accepted for r in results), results
            # A sender that does not trust the certificate gets a clean error, no traceback.
            untrusted = await send_messages(
                "127.0.0.1", server.port, [message(9)], ssl=ssl.create_default_context()
            )
            assert untrusted[0].error is not None
            assert untrusted[0].error.startswith("connect failed: SSLCertVerificationError")

    asyncio.run(main())


# -- several connections, pacing, summary -------------------------------------------------------


def test_send_many_round_robin() -> None:
    async def main() -> None:
        async with AckServer(ack_aa) as server:
            results = await send_many(
                "127.0.0.1",
                server.port,
                (message(i) for i in range(30)),
                connections=3,
                window=4,
                ack_timeout=5,
            )
        assert [r.index for r in results] == list(range(30))
        assert all(r.accepted for r in results)
        assert len(server.received) == 3
        lanes = sorted(server.received, key=lambda got: got[0])
        for k, got in enumerate(lanes):
            assert got == [message(i) for i in range(k, 30, 3)]

    asyncio.run(main())


def test_rate_paces_overall_sends() -> None:
    async def main() -> None:
        async with AckServer(ack_aa) as server:
            started = time.perf_counter()
            results = await send_many(
                "127.0.0.1",
                server.port,
                [message(i) for i in range(21)],
                connections=2,
                window=5,
                rate=100,
            )
            elapsed = time.perf_counter() - started
        assert summarize(results).accepted == 21
        assert elapsed >= 0.19  # 21 sends at 100/s: 20 intervals of 10 ms

    asyncio.run(main())


def test_summarize() -> None:
    def r(i: int, code: str | None, error: str | None, latency: float) -> AckResult:
        return AckResult(i, f"C{i}", code, latency, error, b"ack" if code else None)

    results = [r(i, "AA", None, (i + 1) / 100) for i in range(100)]
    results += [
        r(100, "AE", None, 2.0),
        r(101, "AA", "ack mismatch: x", 0.5),
        r(102, None, "timeout", 9.0),
        r(103, None, "not sent", 0.0),
    ]
    summary = summarize(results)
    assert summary.total == 104
    assert summary.accepted == 100
    assert summary.by_code == {"AA": 101, "AE": 1}
    assert summary.errors == {"ack mismatch": 1, "not sent": 1, "timeout": 1}
    assert summary.latency_p50_s == 0.5
    assert summary.latency_p90_s == 0.91  # 102 ACKed results (the mismatch too): rank 92
    assert summary.latency_p99_s == 1.0
    assert summary.latency_max_s == 2.0
    assert not summary.ok
    assert summary.to_dict()["errors"]["timeout"] == 1
    empty = summarize([])
    assert empty.ok and empty.latency_p50_s is None


# -- interoperability with python-hl7 -----------------------------------------------------------


def test_python_hl7_mllp_client_to_our_framer() -> None:
    """A third-party sender's frames, read by our framer."""

    def blocking_sender(port: int) -> list[bytes]:
        replies = []
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for i in range(5):
                replies.append(client.send_message(message(i).decode()))
        return replies

    async def main() -> None:
        async with AckServer(ack_aa) as server:
            replies = await asyncio.to_thread(blocking_sender, server.port)
        assert server.received == [[message(i) for i in range(5)]]
        for i, reply in enumerate(replies):
            ack = hl7.parse(reply.strip(b"\x0b\x1c\r").decode())
            assert str(ack.segment("MSA")[1]) == "AA"
            assert str(ack.segment("MSA")[2]) == control_id(i)

    asyncio.run(main())


def test_our_client_to_python_hl7_server() -> None:
    """Our frames read by python-hl7's asyncio MLLP reader, its ACKs read by our client."""

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                msg = await reader.readmessage()
                writer.writemessage(msg.create_ack())
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    async def main() -> None:
        server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            results = await send_messages(
                "127.0.0.1", port, [message(i) for i in range(10)], window=5, ack_timeout=5
            )
        finally:
            server.close()
        assert [r.control_id for r in results] == [control_id(i) for i in range(10)]
        assert all(r.accepted for r in results), results

    asyncio.run(main())
