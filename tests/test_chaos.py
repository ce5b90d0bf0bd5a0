"""The chaos suite (issue 15, point 8): the real bus under faults, reconciled by control id.

Each scenario runs `hl7bus mllp serve`, `hl7bus worker` and `hl7bus sink warehouse` as child
processes (tests/chaos_bus.py), sends through the MLLP client, breaks something while messages
flow, and then reconciles (chaos_bus.reconcile): every message that got AA is in hl7.raw, its
events on hl7.events and the research topics, the warehouse holds their facts each once; the
duplicates the fault caused are printed (`pytest -s` shows them). The faults, in the sizes the
chaos run of issue 15 used or smaller where the size changes nothing but the run time:

- the worker killed with SIGKILL three times mid-stream, restarted each time;
- the broker killed with SIGKILL and restarted while a sender sends;
- the warehouse's PostgreSQL stopped mid-stream and started again;
- 2,000 fuzzed frames, a slowloris sender and 100 idle connections beside a normal sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from chaos_bus import Bus, Sent, messages, reconcile, send_until_accepted
from kafka_helpers import read_topic, record_headers
from postgres_server import Server, fresh_database, stoppable_server, url_of
from worker_helpers import http_get

from hl7bus.connectors.envelope import missing_header_fields
from hl7bus.connectors.mllp.framer import encode_frame
from hl7bus.connectors.warehouse.config import WarehouseConfig
from hl7bus.hl7v2 import parse
from hl7bus.ops.local_kafka.broker import down, kill, up
from hl7bus.ops.local_kafka.config import LocalKafkaConfig
from hl7bus.schemas import topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_worker_killed_three_times_mid_stream(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """SIGKILL of the worker three times while a sender sends; restarted each time (its
    session timeout is 6 s, worker_helpers.worker_env). Nothing AA'd is lost, the warehouse
    holds each fact once, and the re-emitted events are counted."""
    payloads = messages(4, "K")
    bus = Bus(kafka_bootstrap, unique_name, tmp_path)
    try:
        bus.start()
        sent = Sent()

        def send() -> None:
            got = send_until_accepted(bus.mllp_port, payloads)
            sent.accepted, sent.sends, sent.answers = got.accepted, got.sends, got.answers

        sender = threading.Thread(target=send)
        sender.start()
        killed = []
        for kill in range(3):
            # Each kill once the worker has emitted events since its (re)start: mid-stream.
            start = bus.size(topics.EVENTS)
            bus.procs.wait_for(
                "the worker to emit events",
                lambda start=start: bus.size(topics.EVENTS) > start + 200,  # type: ignore[misc]
                120,
                interval=0.05,
            )
            name = "worker" if kill == 0 else f"worker-{kill}"
            bus.procs.running.pop(name).kill()  # SIGKILL: no flush, no commit, no goodbye
            killed.append(bus.size(topics.EVENTS))
            bus.start_worker(f"worker-{kill + 1}")
        sender.join()
        assert len(sent.accepted) == len(payloads), sent.answers
        bus.wait_caught_up()
        bus.procs.stop("sink")  # a clean stop frees the DuckDB file
    finally:
        bus.procs.stop_all()
    done = reconcile(bus, sent)
    assert done.raw_resent == 0  # every message got AA at once: no resends
    print(f"\nworker killed after {killed} events: {done.line()}")


def test_broker_killed_and_restarted_while_a_sender_sends(unique_name: str, tmp_path: Path) -> None:
    """A broker of the test's own, SIGKILLed while the sender sends and started again on the
    same data and ports 15 s later. The listener answers what it could not store with AR (or
    not in time); the sender resends those; what got AA survives; the worker and the sink ride
    the outage out."""
    cfg = LocalKafkaConfig(port=0, controller_port=0, data_root=tmp_path / "brokers", name="chaos")
    broker = up(cfg)
    try:
        payloads = messages(2, "B")
        bus = Bus(broker.bootstrap, unique_name, tmp_path)
        try:
            bus.start()
            sent = Sent()

            def send() -> None:
                got = send_until_accepted(bus.mllp_port, payloads, rate=100.0)
                sent.accepted, sent.sends, sent.answers = got.accepted, got.sends, got.answers

            sender = threading.Thread(target=send)
            sender.start()
            bus.procs.wait_for(
                "a third of the messages stored",
                lambda: bus.size(topics.RAW) > len(payloads) // 3,
                60,
                interval=0.1,
            )
            assert kill(cfg)
            time.sleep(15)
            assert sender.is_alive(), "the sender finished before the broker came back"
            assert up(cfg).port == broker.port  # the same bootstrap address
            sender.join()
            assert len(sent.accepted) == len(payloads), sent.answers
            bus.wait_caught_up()
            bus.procs.stop("sink")
        finally:
            bus.procs.stop_all()
        done = reconcile(bus, sent)
    finally:
        if not down(cfg):
            kill(cfg)
    print(f"\nbroker killed for 15 s; answers {dict(sent.answers)}: {done.line()}")


@pytest.mark.postgres
def test_warehouse_database_stopped_mid_stream(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """The warehouse's PostgreSQL (a server of the test's own) stopped with `--mode fast` while
    the sink writes, started again 10 s later: the sink pauses, says why on /readyz, and then
    writes everything, each fact once."""
    with stoppable_server() as server:
        try:
            with fresh_database(server.url, "chaos") as db:
                url = url_of(db)
                _warehouse_outage(
                    server,
                    Bus(
                        kafka_bootstrap,
                        unique_name,
                        tmp_path,
                        warehouse={
                            "HL7BUS_WAREHOUSE_URL": url,
                            "HL7BUS_WAREHOUSE_BATCH_SIZE": "100",
                        },
                    ),
                    url,
                )
        finally:
            if not server.running:  # a failure mid-outage: up again to drop the database
                server.start()


def _warehouse_outage(server: Server, bus: Bus, url: str) -> None:
    payloads = messages(2, "W")
    try:
        bus.start()
        sent = Sent()

        def send() -> None:
            got = send_until_accepted(bus.mllp_port, payloads, rate=150.0)
            sent.accepted, sent.sends, sent.answers = got.accepted, got.sends, got.answers

        sender = threading.Thread(target=send)
        sender.start()
        bus.procs.wait_for(
            "the sink to write rows",
            lambda: bus.sink_metric("hl7bus_warehouse_rows_total") > 0,
            90,
            interval=0.1,
        )
        server.stop()
        bus.procs.wait_for(
            "the sink to report the outage",
            lambda: http_get(bus.sink_metrics, "/readyz")[0] == 503,
            60,
        )
        _, body = http_get(bus.sink_metrics, "/readyz")
        assert body.startswith("not ready: warehouse database unreachable for "), body
        time.sleep(10)
        assert bus.lag(bus.sink_group, bus.research_topics) > 0, "nothing left to write"
        server.start()
        sender.join()
        assert len(sent.accepted) == len(payloads), sent.answers
        bus.wait_caught_up()
        bus.procs.wait_for(
            "the sink to be ready again",
            lambda: http_get(bus.sink_metrics, "/readyz")[0] == 200,
            30,
        )
        bus.procs.stop("sink")
    finally:
        bus.procs.stop_all()
    done = reconcile(bus, sent, WarehouseConfig(url=url))
    print(f"\nwarehouse database stopped for 10 s: {done.line()}")


# -- the door under fuzz ---------------------------------------------------------------------

END = b"\x1c\r"  # the end block of an MLLP frame
FUZZ_FRAMES = 2000
FUZZ_CONNECTIONS = 20
IDLE_CONNECTIONS = 100
MAX_FRAME_BYTES = 16384
# Patient values of the fuzzed frames: like the normal sender's, never in a log line.
FUZZ_PATIENT = (b"CHAOS990011", b"Zeldapatient", b"Quimbyfamily")
_PID = b"PID|1||CHAOS990011^^^X||Quimbyfamily^Zeldapatient\r"


def _fuzzed(rng: random.Random, i: int) -> bytes:
    """One fuzzed item as it goes on the wire: a complete frame the listener must answer,
    after (for a stray start block) an unfinished one it must keep in hl7.dlq."""
    kind = i % 5
    if kind == 0:  # random bytes in a frame
        body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
        body = body.replace(b"\x0b", b"").replace(b"\x1c", b"") or b"x"
    elif kind == 1:  # an MSH of random fields
        fields = (
            "".join(rng.choice(string.printable[:94]) for _ in range(rng.randint(0, 12)))
            for _ in range(rng.randint(0, 14))
        )
        body = ("MSH" + rng.choice("|^#") + "|".join(fields)).encode() + b"\r" + _PID
    elif kind == 2:  # an MSH cut short (no MSH-9, MSH-10, MSH-12)
        body = b"MSH|^~\\&|APP|FAC\r" + _PID
    elif kind == 3:  # bigger than max_frame_bytes
        head = f"MSH|^~\\&|A|F|||20261204||ADT^A01|OVR{i}|P|2.5\r".encode()
        body = head + _PID + b"OBX|1|TX|||" + b"x" * (MAX_FRAME_BYTES + rng.randint(1, 5000))
    else:  # a stray start block: an unfinished frame, then a complete one
        partial = b"MSH|^~\\&|A|F|||2026" + _PID[: rng.randint(0, len(_PID))]
        return b"\x0b" + partial + encode_frame(b"MSH|^~\\&|APP|FAC\r" + _PID)
    return encode_frame(body)


async def _fuzz_connection(port: int, items: list[bytes]) -> list[str]:
    """Send the items, read one ACK per item, then leave a frame unfinished and hang up.
    Returns the ACK codes (MSA-1)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(items))
    await writer.drain()
    acks = b""
    while acks.count(END) < len(items):
        chunk = await asyncio.wait_for(reader.read(65536), 60)
        assert chunk, f"closed after {acks.count(END)} of {len(items)} ACKs"
        acks += chunk
    writer.write(b"\x0bMSH|^~\\&|TRUNC|" + _PID)  # an unfinished frame at the hang-up
    await writer.drain()
    writer.close()
    frames = acks.split(END)
    assert frames[-1] == b"", "more ACKs than frames"
    return [parse(f.lstrip(b"\x0b")).get("MSA-1") or "" for f in frames[:-1]]


async def _slowloris(port: int) -> tuple[bool, int]:
    """A frame trickled a byte every 0.2 s: (closed by the listener, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = b"\x0bMSH|^~\\&|SLOW|FAC|||20261204||ADT^A01|SLOW1|P|2.5\r" + _PID * 20
    sent = 0
    for byte in message:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        sent += 1
        try:
            if await asyncio.wait_for(reader.read(1), 0.2) == b"":
                break
        except TimeoutError:
            continue
        except ConnectionError:
            break
    closed = sent < len(message)
    writer.close()
    return closed, sent


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_fuzzed_frames_slowloris_and_idle_connections_beside_a_sender(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """2,000 fuzzed frames (random bytes, MSH of random fields, MSH cut short, oversize, stray
    start blocks; seeded) over 20 connections, each ending in an unfinished frame; a slowloris
    sender; 100 idle connections; and beside them a normal sender. Every complete frame is
    answered (refused unless its MSH has what the door checks) and kept in hl7.dlq with each
    unfinished one, the slowloris is cut at frame_timeout_s, the idle connections stay,
    the normal sender's messages all get AA and reconcile, the listener's memory stays
    bounded, and no patient value reaches a log line."""
    bus = Bus(
        kafka_bootstrap,
        unique_name,
        tmp_path,
        max_connections="300",
        frame_timeout_s="3",
        max_frame_bytes=str(MAX_FRAME_BYTES),
    )
    rng = random.Random(15)
    fuzz = [_fuzzed(rng, i) for i in range(FUZZ_FRAMES)]
    payloads = messages(2, "N")
    try:
        bus.start()
        warm = send_until_accepted(bus.mllp_port, payloads[:50])
        listener = bus.procs.running["listener"].pid
        rss_before = _rss_kib(listener)
        sent = Sent()

        def send() -> None:
            got = send_until_accepted(bus.mllp_port, payloads[50:], rate=50.0)
            sent.accepted, sent.sends, sent.answers = got.accepted, got.sends, got.answers

        sender = threading.Thread(target=send)
        sender.start()

        async def chaos() -> tuple[list[str], tuple[bool, int], int]:
            port = bus.mllp_port
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
            slow = asyncio.create_task(_slowloris(port))
            per = FUZZ_FRAMES // FUZZ_CONNECTIONS
            codes: list[str] = []
            for start in range(0, FUZZ_FRAMES, per * 4):  # four connections at a time
                batches = [
                    fuzz[s : s + per] for s in range(start, min(start + per * 4, FUZZ_FRAMES), per)
                ]
                for got in await asyncio.gather(*(_fuzz_connection(port, b) for b in batches)):
                    codes.extend(got)
            slowloris = await slow
            # The idle connections are still open: nothing from the listener, no EOF.
            still_open = 0
            for reader, _ in idle:
                try:
                    await asyncio.wait_for(reader.read(1), 0.01)
                except TimeoutError:
                    still_open += 1
            for _, writer in idle:
                writer.close()
            return codes, slowloris, still_open

        codes, (slow_closed, slow_sent), still_open = asyncio.run(chaos())
        rss_after = _rss_kib(listener)
        sender.join()
        sent.accepted.update(warm.accepted)
        assert len(sent.accepted) == len(payloads), sent.answers
        bus.wait_caught_up()
        bus.procs.stop("sink")
    finally:
        bus.procs.stop_all()

    assert len(codes) == FUZZ_FRAMES  # every complete frame answered
    # Refused, but for an MSH of random fields that happens to carry MSH-9, -10 and -12: that
    # one is a message to the door (and stored; the reconciliation covers it).
    for i, code in enumerate(codes):
        if code in ("AA", "CA"):
            body = fuzz[i].rsplit(b"\x0b", 1)[1].removesuffix(END)
            assert i % 5 == 1 and not missing_header_fields(parse(body)), (i, code)
    assert slow_closed, f"the slowloris sent {slow_sent} bytes and was not cut"
    assert still_open == IDLE_CONNECTIONS
    grown_mib = (rss_after - rss_before) / 1024
    assert grown_mib < 64, f"the listener grew by {grown_mib:.0f} MiB"

    dlq = read_topic(kafka_bootstrap, bus.topic(topics.DLQ), bus.size(topics.DLQ))
    headers = [record_headers(r) for r in dlq]
    reasons = Counter(
        h.get("hl7bus.reason", b"").decode()
        for h in headers
        if h.get("hl7bus.stage") == b"receiving"
    )
    # Each refused frame in hl7.dlq by its reason; each unfinished one too: the stray start
    # blocks' (start_block), and those of the hang-ups and the slowloris (truncated).
    refused = sum(code not in ("AA", "CA") for code in codes)
    assert reasons.pop("start_block") == FUZZ_FRAMES // 5
    assert reasons.pop("truncated") == FUZZ_CONNECTIONS + 1
    assert sum(reasons.values()) == refused, reasons
    done = reconcile(bus, sent)

    logs = bus.logs()
    leaked = [v.decode() for v in FUZZ_PATIENT if v.decode() in logs]
    assert not leaked, f"patient values in the logs: {len(leaked)}"
    print(
        f"\n{FUZZ_FRAMES} fuzzed frames answered {dict(Counter(codes))}; kept in hl7.dlq "
        f"{dict(reasons)} and the unfinished ones; slowloris cut after {slow_sent} bytes; "
        f"{still_open} idle connections kept; "
        f"listener RSS {rss_before // 1024} -> {rss_after // 1024} MiB; "
        f"{done.line()}"
    )


@contextlib.contextmanager
def _small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only: mounting needs CAP_SYS_ADMIN); unmounted after."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a full disk needs a small tmpfs, and mounting one failed: {mounted.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def test_warehouse_disk_full_mid_stream(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    """The DuckDB warehouse on a 320 KiB tmpfs: its write-ahead log fills the disk while the
    sink writes. The sink pauses and says why (disk_full); once the disk is grown (remounted
    larger, as an operator frees space) it writes everything, each fact once."""
    with _small_disk(tmp_path / "disk", "320k") as disk:
        warehouse = disk / "warehouse.duckdb"
        bus = Bus(
            kafka_bootstrap,
            unique_name,
            tmp_path,
            warehouse={
                "HL7BUS_WAREHOUSE_PATH": str(warehouse),
                "HL7BUS_WAREHOUSE_BATCH_SIZE": "100",
            },
        )
        payloads = messages(2, "D")
        try:
            bus.start()
            sent = send_until_accepted(bus.mllp_port, payloads, rate=150.0)
            assert len(sent.accepted) == len(payloads), sent.answers
            bus.procs.wait_for(
                "the sink to report the full disk",
                lambda: http_get(bus.sink_metrics, "/readyz")[1].startswith(
                    "not ready: warehouse database disk_full for "
                ),
                120,
            )
            assert bus.lag(bus.sink_group, bus.research_topics) > 0, "nothing left to write"
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            bus.wait_caught_up()
            bus.procs.wait_for(
                "the sink to be ready again",
                lambda: http_get(bus.sink_metrics, "/readyz")[0] == 200,
                30,
            )
            bus.procs.stop("sink")
        finally:
            bus.procs.stop_all()
        done = reconcile(bus, sent, WarehouseConfig(path=warehouse))
    print(f"\nwarehouse disk full: {done.line()}")
