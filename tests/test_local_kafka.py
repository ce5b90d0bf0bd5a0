"""The local broker launcher (ops/local_kafka/) against a real Kafka."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

# NewTopic is documented under .admin, but its stubs re-export it only from .cimpl.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from hl7bus.ops import local_kafka
from hl7bus.ops.local_kafka import (
    BrokerInfo,
    LocalKafkaConfig,
    LocalKafkaError,
    default_home,
    down,
    ensure_jars,
    kill,
    running_bootstrap,
    server_properties,
    status,
    up,
)


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[LocalKafkaConfig]:
    """A launcher config with its own data dir, the shared jar cache, free ports."""
    config = LocalKafkaConfig(port=0, data_root=tmp_path / "brokers", name="lk")
    yield config
    # A failing assertion must not leave a JVM behind.
    if status(config) is not None:
        kill(config)


def create_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)


def produce_one(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    reports: list[KafkaError | None] = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda e, _m: reports.append(e))
    assert producer.flush(30) == 0
    assert reports == [None]


def consume_first(bootstrap: str, topic: str, group: str) -> Message:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        # assign(), not subscribe(): no group coordinator needed, so no rebalance wait.
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg
        raise AssertionError(f"no record on {topic} within 30 s")
    finally:
        consumer.close()


def assert_answers(info: BrokerInfo) -> None:
    metadata = AdminClient({"bootstrap.servers": info.bootstrap}).list_topics(timeout=10)
    assert [b.port for b in metadata.brokers.values()] == [info.port]


@pytest.mark.kafka
def test_up_roundtrip_down(cfg: LocalKafkaConfig, unique_name: str) -> None:
    info = up(cfg)
    assert not info.already_running
    assert info.bootstrap == f"127.0.0.1:{info.port}"
    assert info.log_file.is_file() and (info.data_dir / "meta.properties").is_file()
    assert running_bootstrap(cfg) == info.bootstrap
    assert_answers(info)

    create_topic(info.bootstrap, unique_name)
    produce_one(info.bootstrap, unique_name, b"k", b"hello")
    msg = consume_first(info.bootstrap, unique_name, unique_name)
    assert (msg.key(), msg.value()) == (b"k", b"hello")

    st = status(cfg)
    assert st is not None and st.answering and st.topics == (unique_name,)
    assert st.broker.pid == info.pid

    again = up(cfg)
    assert again.already_running and again.pid == info.pid and again.notes

    assert down(cfg) is True
    assert status(cfg) is None
    assert running_bootstrap(cfg) is None
    assert not (cfg.instance_dir / "state.json").exists()
    assert (info.data_dir / "meta.properties").is_file(), "down() keeps the data"
    assert down(cfg) is False


@pytest.mark.kafka
def test_restart_after_kill_keeps_topic_and_record(cfg: LocalKafkaConfig, unique_name: str) -> None:
    first = up(cfg)
    create_topic(first.bootstrap, unique_name)
    produce_one(first.bootstrap, unique_name, b"k", b"durable")

    assert kill(cfg) is True
    assert status(cfg) is None
    assert running_bootstrap(cfg) is None
    assert (cfg.instance_dir / "state.json").exists(), "a crash leaves its state behind"

    second = up(cfg)
    assert not second.already_running and second.pid != first.pid
    assert second.port == first.port, "a restart keeps the clients' bootstrap address"
    st = status(cfg)
    assert st is not None and st.topics == (unique_name,)
    msg = consume_first(second.bootstrap, unique_name, unique_name)
    assert msg.value() == b"durable"
    assert down(cfg) is True


@pytest.mark.kafka
def test_taken_port_is_replaced_and_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = LocalKafkaConfig(port=taken, data_root=tmp_path, name="squat")
        try:
            info = up(config)
            assert info.port != taken
            assert any(str(taken) in note and str(info.port) in note for note in info.notes)
            assert_answers(info)
        finally:
            down(config)


@pytest.mark.kafka
def test_session_fixture_broker(kafka_bootstrap: str, unique_name: str) -> None:
    create_topic(kafka_bootstrap, unique_name)
    produce_one(kafka_bootstrap, unique_name, b"k", b"v")
    assert consume_first(kafka_bootstrap, unique_name, unique_name).value() == b"v"


# --------------------------------------------------------------------------- SASL_SSL listener


def test_sasl_ssl_listener_is_rendered_beside_plaintext(tmp_path: Path) -> None:
    plain = server_properties.render("127.0.0.1", 9092, 9093, tmp_path)
    secure = server_properties.render("127.0.0.1", 9092, 9093, tmp_path, (9094, tmp_path / "k"))
    assert not [line for line in plain.splitlines() if "SASL" in line and line[0] != "#"]
    lines = dict(
        line.split("=", 1) for line in secure.splitlines() if "=" in line and line[0] != "#"
    )
    assert lines["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://127.0.0.1:9094"
    )
    assert lines["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094"
    # The controller and the broker's own traffic stay PLAINTEXT on loopback.
    assert lines["inter.broker.listener.name"] == "PLAINTEXT"
    assert lines["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    assert lines["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert lines["listener.name.sasl_ssl.ssl.keystore.location"] == str(tmp_path / "k")


@pytest.mark.kafka
def test_sasl_ssl_listener_keeps_ca_and_user_across_restarts(
    cfg: LocalKafkaConfig, unique_name: str
) -> None:
    cfg = cfg.model_copy(update={"sasl_ssl_port": 0})
    first = up(cfg).sasl_ssl
    assert first is not None
    ca = first.ca_file.read_bytes()
    secure: dict[str, str | int | float | bool] = {
        "bootstrap.servers": first.bootstrap,
        **first.client_settings(),
    }
    AdminClient(secure).list_topics(timeout=10)
    down(cfg)

    again = up(cfg)
    assert again.sasl_ssl == first  # same port, CA file and credentials
    assert first.ca_file.read_bytes() == ca
    running = status(cfg)
    assert running is not None and running.broker.sasl_ssl == first  # read back from state
    metadata = AdminClient(secure).list_topics(timeout=10)
    assert [f"127.0.0.1:{b.port}" for b in metadata.brokers.values()] == [first.bootstrap]
    down(cfg)


# --------------------------------------------------------------------------- prerequisites


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that is the whole PATH, with JAVA_HOME unset."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return path


def link_real_java(bin_dir: Path) -> None:
    real = shutil.which("java", path=os.defpath + ":/usr/lib/jvm/default-java/bin")
    assert real is not None, "these tests need a real java to link to"
    (bin_dir / "java").symlink_to(os.path.realpath(real))


def test_missing_java_says_what_to_install(bin_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match=r"`java` was not found.*openjdk-17"):
        ensure_jars(LocalKafkaConfig(home=tmp_path / "cache"))


def test_old_java_is_refused(bin_dir: Path, tmp_path: Path) -> None:
    fake = bin_dir / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(LocalKafkaError, match=r"Java 11; Kafka .* needs Java 17"):
        ensure_jars(LocalKafkaConfig(home=tmp_path / "cache"))


def test_missing_maven_on_cold_cache_says_what_to_install(bin_dir: Path, tmp_path: Path) -> None:
    link_real_java(bin_dir)
    with pytest.raises(LocalKafkaError, match=r"`mvn` \(Apache Maven\).*apt-get install maven"):
        ensure_jars(LocalKafkaConfig(home=tmp_path / "cold-cache"))


@pytest.mark.kafka
def test_warm_cache_needs_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    shared = LocalKafkaConfig(home=default_home())
    libs = ensure_jars(shared)  # resolves now if this machine never did
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    link_real_java(bin_dir)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert ensure_jars(shared) == libs
    assert (libs / f"kafka_2.13-{local_kafka.kafka_version()}.jar").is_file()
