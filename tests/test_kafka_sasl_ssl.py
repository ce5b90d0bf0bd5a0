"""Every Kafka client of the bus against a real broker whose client listener speaks SASL_SSL
(SCRAM-SHA-512 over TLS, a throwaway CA: the `kafka_sasl_ssl` fixture), configured only through
`kafka.client`: admin (`topics apply`), the MLLP listener's producer, the worker (faust/aiokafka)
and the warehouse sink. A wrong password and a PLAINTEXT client fail with a clear error."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from kafka_helpers import apply_catalog, read_topic
from samples import feed

from hl7bus.connectors import kafka_clients
from hl7bus.connectors.kafka_clients import KafkaConfig, KafkaUnreachable
from hl7bus.connectors.kafka_settings import ClientSettings
from hl7bus.ops.local_kafka import BrokerInfo, SaslSslListener
from hl7bus.ops.processes import Processes, free_port, port_open
from hl7bus.schemas import topics
from hl7bus.schemas.topics import TopicCatalog
from hl7bus.streams import runtime, worker_config
from hl7bus.streams.deid import Policy, Pseudonymizer

pytestmark = pytest.mark.kafka

MESSAGES = 20


def _secure(broker: BrokerInfo) -> SaslSslListener:
    assert broker.sasl_ssl is not None
    return broker.sasl_ssl


def _client(listener: SaslSslListener, **changes: str) -> dict[str, str]:
    return {**listener.client_settings(), **changes}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hl7bus.ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env(listener: SaslSslListener, prefix: str, client: dict[str, str]) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("HL7BUS_")},
        "HL7BUS_KAFKA_BOOTSTRAP": listener.bootstrap,
        "HL7BUS_KAFKA_CLIENT": json.dumps(client),
        "HL7BUS_TOPICS_PREFIX": f"{prefix}.",
        "HL7BUS_DEID_KEY": secrets.token_hex(32),
    }


def _worker_producer_start(
    listener: SaslSslListener, client: dict[str, str], catalog: TopicCatalog, tmp_path: Path
) -> Any:
    """Start the producer of the worker's faust app (its aiokafka stack) as build_app makes it
    from `client`, send one record to hl7.dlq; return its metadata or the exception."""
    app = runtime.build_app(
        worker_config.WorkerConfig(data_dir=tmp_path, metrics_port=None),
        listener.bootstrap,
        catalog,
        Policy.load("kr-pseudonym"),
        Pseudonymizer(secrets.token_bytes(32), "k1"),
        False,
        auth=ClientSettings(**client).broker_auth(),
    )

    async def main() -> Any:
        try:
            # A deadline so a client that hung would fail the test instead of stalling it.
            await asyncio.wait_for(app.producer.start(), 60)
            return await app.producer.send_and_wait(
                catalog.name(topics.DLQ), key=b"k", value=b"v", partition=None,
                timestamp=None, headers=None,
            )  # fmt: skip
        except Exception as exc:
            return exc
        finally:
            await app.producer.stop()

    return asyncio.run(main())


def test_listener_producer_and_worker_client_over_sasl_ssl(
    kafka_sasl_ssl: BrokerInfo, unique_name: str, tmp_path: Path
) -> None:
    listener = _secure(kafka_sasl_ssl)
    catalog = apply_catalog(kafka_sasl_ssl.bootstrap, unique_name)
    dlq = catalog.name(topics.DLQ)
    cfg = KafkaConfig(client=ClientSettings(**listener.client_settings()))

    # The confluent producer the MLLP listener and file ingest use.
    producer = kafka_clients.AsyncProducer(kafka_clients.producer_config(cfg, listener.bootstrap))

    async def send() -> tuple[int, int]:
        return await producer.send(dlq, b"over SASL_SSL", b"k")

    try:
        asyncio.run(send())
    finally:
        assert producer.close() == 0
    # The worker's client stack, given the same settings.
    sent = _worker_producer_start(listener, listener.client_settings(), catalog, tmp_path)
    assert not isinstance(sent, Exception), repr(sent)

    records = read_topic(kafka_sasl_ssl.bootstrap, dlq, 2)
    assert sorted(r.value() or b"" for r in records) == [b"over SASL_SSL", b"v"]


@pytest.mark.slow
def test_every_process_over_sasl_ssl(
    kafka_sasl_ssl: BrokerInfo, unique_name: str, tmp_path: Path
) -> None:
    """`topics apply`, `mllp serve`, `worker` and `sink warehouse`, pointed at the SASL_SSL
    listener only: the broker there speaks nothing else, so every record went through it."""
    listener = _secure(kafka_sasl_ssl)
    mllp_port = free_port()
    warehouse = tmp_path / "warehouse.duckdb"
    env = {
        **_env(listener, unique_name, listener.client_settings()),
        "HL7BUS_MLLP_PORT": str(mllp_port),
        "HL7BUS_MLLP_FEED": "secure",
        "HL7BUS_MLLP_METRICS_PORT": str(free_port()),
        "HL7BUS_WORKER_APP_ID": f"{unique_name}-worker",
        "HL7BUS_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "HL7BUS_WORKER_METRICS_PORT": str(free_port()),
        "HL7BUS_WAREHOUSE_PATH": str(warehouse),
        "HL7BUS_WAREHOUSE_GROUP_ID": f"{unique_name}-warehouse",
    }
    applied = _cli("topics", "apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert f"created  {unique_name}.hl7.raw" in applied.stdout

    messages = feed()[:MESSAGES]
    feed_file = tmp_path / "feed.hl7"
    feed_file.write_bytes(b"".join(m.to_bytes() + b"\n" for m in messages))
    patients = {m.get("PID-3.1") for m in messages if (m.message_type or "").startswith("ADT")}
    observations = sum(
        len(list(m.segments("OBX"))) for m in messages if m.message_type == "ORU^R01"
    )
    assert patients and observations

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Processes(logs)
    research = [f"{unique_name}.research.patient", f"{unique_name}.research.observation"]
    # The test's own checks use the PLAINTEXT listener of the same broker.
    plain = KafkaConfig()
    try:
        procs.start("listener", ["mllp", "serve"], env)
        procs.start("worker", ["worker"], env)
        procs.start("sink", ["sink", "warehouse"], env)
        procs.wait_for("the listener", lambda: port_open(mllp_port), 30)

        sent = _cli("send", "--port", str(mllp_port), "--window", "4", str(feed_file), env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"ACK AA           │ {MESSAGES}" in sent.stdout

        def caught_up() -> bool:
            sizes = kafka_clients.topic_sizes(plain, kafka_sasl_ssl.bootstrap, research)
            lag = kafka_clients.group_lag(
                plain, kafka_sasl_ssl.bootstrap, f"{unique_name}-warehouse", research
            )
            return sizes[research[1]] == observations and lag == 0

        procs.wait_for("research events in the warehouse", caught_up, 120)
        procs.stop("sink")
    finally:
        procs.stop_all()

    conn = duckdb.connect(str(warehouse), read_only=True)
    assert len(conn.execute("SELECT * FROM person").fetchall()) == len(patients)
    assert conn.execute("SELECT count(*) FROM measurement").fetchone() == (observations,)


def test_wrong_password_is_a_clear_error(
    kafka_sasl_ssl: BrokerInfo, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = _secure(kafka_sasl_ssl)
    wrong = _client(listener, **{"sasl.password": "not-the-password"})
    env = _env(listener, unique_name, wrong)
    env["HL7BUS_WAREHOUSE_PATH"] = str(tmp_path / "warehouse.duckdb")
    for command in (["topics", "apply"], ["worker"], ["sink", "warehouse"]):
        result = _cli(*command, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert f"cannot reach Kafka at {listener.bootstrap} over SASL_SSL" in output
        assert "SASL authentication error" in output and "invalid credentials" in output
        assert "not-the-password" not in output
    assert not (tmp_path / "warehouse.duckdb").exists()  # the sink stopped before opening it

    # The worker's own client stack (faust/aiokafka) fails too, and says why.
    catalog = apply_catalog(kafka_sasl_ssl.bootstrap, unique_name)
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        failed = _worker_producer_start(listener, wrong, catalog, tmp_path)
    assert isinstance(failed, Exception)
    assert "SaslAuthenticationFailed" in caplog.text
    assert "not-the-password" not in caplog.text


def test_plaintext_refused_where_tls_is_required(
    kafka_sasl_ssl: BrokerInfo, unique_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = _secure(kafka_sasl_ssl)
    with pytest.raises(KafkaUnreachable) as caught:
        kafka_clients.check_connection(KafkaConfig(), listener.bootstrap, timeout=3)
    message = str(caught.value)
    assert f"no Kafka broker at {listener.bootstrap} answered over PLAINTEXT" in message
    assert "kafka.client.security.protocol" in message

    catalog = apply_catalog(kafka_sasl_ssl.bootstrap, unique_name)
    with caplog.at_level(logging.ERROR, logger="aiokafka"):
        failed = _worker_producer_start(listener, {}, catalog, tmp_path)
    assert isinstance(failed, Exception) and not isinstance(failed, TimeoutError)
    assert f"Unable connect to {listener.bootstrap!r}".replace("'", '"') in caplog.text
